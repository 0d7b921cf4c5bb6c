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

PROTOCOL_FD = 1
ENTRY_ENV = "HARNESS_ZYGOTE_ENTRY"
PRELOAD_ENV = "HARNESS_ZYGOTE_PRELOAD"


def _send(message: dict[str, Any]) -> None:
    os.write(PROTOCOL_FD, (json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any], entry: str) -> None:
    """In the forked child: never returns."""
    code = 1
    try:
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
        _send({"ended": pid, "returncode": os.waitstatus_to_exitcode(status), "max_rss_bytes": usage.ru_maxrss * 1024})


def serve(entry: str, preload: list[str]) -> int:
    for name in preload:  # the imports every child would pay for
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the children import again and report the failure themselves
            traceback.print_exc()
    _send({"ready": os.getpid()})
    buffer = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if readable:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break  # the launcher is gone
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, entry)
                _send({"started": request["id"], "pid": pid})
        _reap()
    _reap()
    return 0


if __name__ == "__main__":
    if ENTRY_ENV not in os.environ:
        raise SystemExit(f"python -m harness.launch.zygote is started by the launcher, with {ENTRY_ENV} set")
    _entry = os.environ.pop(ENTRY_ENV)
    _preload = [name for name in os.environ.pop(PRELOAD_ENV, "").split(",") if name]
    raise SystemExit(serve(_entry, _preload))
