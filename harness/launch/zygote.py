"""A warm interpreter that forks one fresh child per measured execution.

Starting ``python -m harness.worker`` costs about 5 s of imports (torch, transformers'
Trainer) before a cell does anything: on a CPU suite of short cells that is a tenth of the
night.  The zygote pays it once: it is started by the launcher with the children's
environment, imports what the launcher names (``harness.runner``: torch and the Trainer)
and waits.  For each request it forks; the child makes its own session (so the launcher
can kill its whole process group), takes the request's environment, sends its output to
the request's log file, runs the entry module's ``main`` (``harness.worker.main``) and
exits.  The zygote never runs a cell, creates no thread and never initializes CUDA, so
every child starts from the same clean state: what a fresh interpreter would have after
the same imports.

The launcher names what it runs in its environment: ``HARNESS_ZYGOTE_ENTRY``, the module
whose ``main(argv)`` each child runs, and ``HARNESS_ZYGOTE_PRELOAD``, the modules imported
once before ``ready`` (comma-separated).  The zygote takes both out of its environment
before it imports anything, and imports nothing of the harness above it.

Protocol, one JSON object per line: requests on the zygote's stdin
``{"id": N, "argv": [...], "env": {...}, "log": PATH}``; on its stdout ``{"ready": pid}``
once, then ``{"started": N, "pid": P}`` and, when the zygote has reaped the child,
``{"ended": P, "returncode": C, "max_rss_bytes": B}`` (``returncode`` negative for a signal).
It exits when its stdin closes.

It dies with the launcher (``lifeline.py``): the kernel sends it SIGTERM when the launcher
dies, and it checks its parent whenever its loop wakes; either way it kills the process
group of every child still running with SIGKILL, then exits.  Each child asks for SIGKILL
when the zygote dies, right after the fork.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
import traceback
from typing import Any

from .lifeline import LAUNCHER_PID_ENV, die_with_parent

PROTOCOL_FD = 1
ENTRY_ENV = "HARNESS_ZYGOTE_ENTRY"
PRELOAD_ENV = "HARNESS_ZYGOTE_PRELOAD"


_ZYGOTE_PID = os.getpid()
_LIVE: set[int] = set()  # children forked and not yet reaped


def _send(message: dict[str, Any]) -> None:
    os.write(PROTOCOL_FD, (json.dumps(message) + "\n").encode())


def _abandon(signum: int | None = None, frame: Any = None) -> None:
    """The launcher is gone: nothing it started may outlive it.  SIGKILL to every live
    child's process group (each child leads its own), then exit."""
    if os.getpid() != _ZYGOTE_PID:  # a child between its fork and its own signal handlers
        os._exit(1)
    for pid in list(_LIVE):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    os._exit(0)


def _child(request: dict[str, Any], entry: str) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
        if die_with_parent(signal.SIGKILL) is False or os.getppid() != _ZYGOTE_PID:  # the zygote died first
            os._exit(1)
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        sys.stdout.reconfigure(line_buffering=True)
        sys.stderr.reconfigure(line_buffering=True)
        code = importlib.import_module(entry).main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child reports everything, then exits
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _LIVE.discard(pid)
        _send({"ended": pid, "returncode": os.waitstatus_to_exitcode(status), "max_rss_bytes": usage.ru_maxrss * 1024})


def serve(entry: str, preload: list[str], launcher: int | None = None) -> int:
    """Fork a child per request until stdin closes.  ``launcher``: the pid this zygote dies
    with (default: its parent now)."""
    global _ZYGOTE_PID
    _ZYGOTE_PID = os.getpid()
    launcher = launcher or os.getppid()
    signal.signal(signal.SIGTERM, _abandon)
    if die_with_parent(signal.SIGTERM) is False or os.getppid() != launcher:
        _abandon()
    for name in preload:  # the imports every child would pay for
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the children import again and report the failure themselves
            traceback.print_exc()
    _send({"ready": os.getpid()})
    buffer = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if os.getppid() != launcher:
            _abandon()
        if readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break  # the launcher is gone, or closed this zygote
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, entry)
                _LIVE.add(pid)
                _send({"started": request["id"], "pid": pid})
        _reap()
    _reap()
    if _LIVE:  # still running with nobody left to wait for them
        _abandon()
    return 0


if __name__ == "__main__":
    if ENTRY_ENV not in os.environ:
        raise SystemExit(f"python -m harness.launch.zygote is started by the launcher, with {ENTRY_ENV} set")
    _entry = os.environ.pop(ENTRY_ENV)
    _preload = [name for name in os.environ.pop(PRELOAD_ENV, "").split(",") if name]
    _launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    raise SystemExit(serve(_entry, _preload, int(_launcher) if _launcher.isdigit() else None))
