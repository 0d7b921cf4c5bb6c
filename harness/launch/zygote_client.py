"""The launcher's side of the zygote (``zygote.py``): start it, ask it to fork, hear back.

One warm zygote per interpreter and environment, at most two at a time (an A/B run
alternates two interpreters).  A zygote that cannot start or dies raises ``ZygoteError``:
the launcher then starts a new interpreter instead, so a broken zygote costs speed, never
the cell.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from . import boot
from .lifeline import DEADLINE_ENV
from .zygote import ENTRY_ENV, PRELOAD_ENV


def use_zygote() -> bool:
    """Single-process cells fork from a warm zygote (``zygote.py``) unless
    ``HARNESS_LAUNCH=spawn`` asks for a new interpreter per execution."""
    return os.environ.get("HARNESS_LAUNCH", "zygote") != "spawn"


# Variables that change from test to test or call to call and that nothing reads at import
# time: they do not call for a new zygote (the child gets the request's environment anyway).
_VOLATILE_ENV = ("PYTEST_CURRENT_TEST", "HARNESS_TEST_FAULT_ONCE", "GLUE_DIR", "PYTHONUNBUFFERED", DEADLINE_ENV)


class ZygoteError(RuntimeError):
    pass


class Zygote:
    """The launcher's side of ``python -m harness.launch.zygote``: its children run
    ``entry.main(argv)``; it imports the ``preload`` modules once."""

    def __init__(self, env: dict[str, str], python: str | None = None, *, entry: str, preload: Sequence[str] = ()):
        self.key = zygote_key(env, python, entry=entry, preload=preload)
        self.proc = subprocess.Popen(
            boot.command(python or sys.executable, "harness.launch.zygote"), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env={**env, ENTRY_ENV: entry, PRELOAD_ENV: ",".join(preload)},
        )
        self._lock = threading.Lock()
        self._next = 0
        self._started: dict[int, int] = {}
        self._ended: dict[int, tuple[int, int | None]] = {}
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(120) or self.proc.poll() is not None:
            self.close()
            raise ZygoteError("the zygote did not start (its imports failed or took over 120 s)")

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                if "ready" in message:
                    self._ready.set()
                elif "started" in message:
                    self._started[message["started"]] = message["pid"]
                elif "ended" in message:
                    self._ended[message["ended"]] = (message["returncode"], message.get("max_rss_bytes"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        with self._lock:
            self._next += 1
            request_id = self._next
        request = {"id": request_id, "argv": argv, "env": env, "log": str(log)}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ZygoteError(f"the zygote is gone ({exc})") from None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self._lock:
                if request_id in self._started:
                    return self._started.pop(request_id)
            if not self.alive():
                raise ZygoteError(f"the zygote exited ({self.proc.returncode}) before it forked the child")
            time.sleep(0.01)
        raise ZygoteError("the zygote did not fork the child within 60 s")

    def poll(self, pid: int) -> tuple[int | None, int | None]:
        with self._lock:
            if pid in self._ended:
                return self._ended.pop(pid)
        if not self.alive():  # the zygote died: its children are orphans we cannot wait for
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return None, None
            except psutil.Error:
                pass
            return -1, None  # gone, or a zombie nobody will report: its exit status is lost
        return None, None

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def zygote_key(env: dict[str, str], python: str | None = None, *, entry: str, preload: Sequence[str] = ()) -> str:
    return json.dumps([python or sys.executable, entry, list(preload),
                       sorted((k, v) for k, v in env.items() if k not in _VOLATILE_ENV)])


_ZYGOTES: dict[str, Zygote] = {}
MAX_ZYGOTES = 2  # an A/B run alternates two interpreters; both stay warm (an idle zygote uses no CPU)


def zygote_for(env: dict[str, str], python: str | None = None, *, entry: str, preload: Sequence[str] = ()) -> Zygote:
    """The warm zygote for this interpreter, environment, entry module and preloads; at most
    two (the least recently used retires first)."""
    key = zygote_key(env, python, entry=entry, preload=preload)
    found = _ZYGOTES.pop(key, None)
    if found is not None and not found.alive():
        found.close()
        found = None
    if found is None:
        while len(_ZYGOTES) >= MAX_ZYGOTES:
            _ZYGOTES.pop(next(iter(_ZYGOTES))).close()
        found = Zygote(env, python, entry=entry, preload=preload)
    _ZYGOTES[key] = found  # most recently used last
    return found


@atexit.register
def _close_zygote() -> None:
    while _ZYGOTES:
        _ZYGOTES.pop(next(iter(_ZYGOTES))).close()
