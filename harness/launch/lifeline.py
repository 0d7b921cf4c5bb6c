"""Nothing of a run outlives the process that launched it, nor its own timeout.

The launcher (the pytest process, or whatever calls ``launch_cell``) may die without a
word: a CI runner's SIGKILL, the OOM killer.  Its children then have nobody to wait for
them or to enforce their timeout, so each holds its own lifeline:

* **The zygote** asks the kernel for SIGTERM when the launcher dies (``prctl(2)``'s
  ``PR_SET_PDEATHSIG``); its handler kills every live child's process group with SIGKILL
  and exits.  It checks its parent is still the launcher right after asking (the launcher
  may have died first), and again whenever its loop wakes.
* **A forked child** asks for SIGKILL when the zygote dies, right after the fork.
* **torchrun** is started through this module (``python -m harness.launch.lifeline
  torch.distributed.run ...``): SIGTERM when the launcher dies, which torchrun turns into
  ending its ranks.
* **Every worker** (each rank too) asks for SIGKILL when whoever started it dies, and runs
  a watchdog thread (``watch_launcher``): once the launcher (pid and start time, from its
  environment) is gone, or the execution's deadline (its timeout, the launcher's kill
  grace and a margin) has passed, it kills its own process group (its dataloader
  workers with it).  The deadline is on ``CLOCK_MONOTONIC``, which all processes of a
  machine share.

``prctl`` is Linux's; elsewhere the watchdog alone holds the line.  The kernel's signal
follows the *thread* that started a process: the launcher starts its zygote and children
from its main thread (a thread that ended would take the zygote with it).
"""

from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys
import threading
import time

from ..store.runs import process_alive, process_started

LAUNCHER_PID_ENV = "HARNESS_LAUNCHER_PID"
LAUNCHER_STARTED_ENV = "HARNESS_LAUNCHER_STARTED"  # the launcher's start time (psutil's create_time)
DEADLINE_ENV = "HARNESS_CHILD_DEADLINE"  # time.monotonic() past which the execution ends itself
DEADLINE_MARGIN_S = 5.0  # past the launcher's own SIGKILL: it acts first whenever it is alive
WATCH_EVERY_S = 0.5
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool | None:
    """Ask the kernel for ``sig`` when this process's parent dies.  True once asked; False
    when the parent died meanwhile (this process was reparented: the signal will never
    come); None where the kernel cannot be asked (not Linux).  A parent that died before
    this call is the caller's to check (``os.getppid()`` against the pid it expects)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return os.getppid() == parent


def launcher_env(deadline_s: float | None) -> dict[str, str]:
    """What a child needs to watch this process (its launcher): added to its environment."""
    env = {LAUNCHER_PID_ENV: str(os.getpid()), LAUNCHER_STARTED_ENV: repr(process_started() or 0.0)}
    if deadline_s is not None:
        env[DEADLINE_ENV] = repr(time.monotonic() + deadline_s)
    return env


def launcher_from_env(env: dict[str, str] | os._Environ) -> tuple[int, float | None] | None:
    try:
        pid = int(env[LAUNCHER_PID_ENV])
    except (KeyError, ValueError):
        return None
    try:
        started = float(env.get(LAUNCHER_STARTED_ENV) or 0.0) or None
    except ValueError:
        started = None
    return pid, started


def end_own_group(why: str) -> None:
    """SIGKILL to this process's group when it leads one (a launched child always does),
    else to this process alone: never to a group it merely belongs to."""
    try:
        sys.stderr.write(f"harness: {why}: ending this execution's process group\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(launcher: tuple[int, float | None] | None, deadline: float | None, every_s: float) -> None:
    while True:
        if launcher is not None and not process_alive(*launcher):
            end_own_group(f"the launcher (pid {launcher[0]}) is gone")
        if deadline is not None and time.monotonic() > deadline:
            end_own_group("past its timeout and the launcher's kill grace")
        time.sleep(every_s)


def watch_launcher(env: dict[str, str] | os._Environ | None = None, every_s: float = WATCH_EVERY_S) -> threading.Thread | None:
    """In a launched worker: die with whoever started it, and start the watchdog thread
    over the launcher and the deadline.  None when nothing launched it (no launcher in
    ``env``): a worker started by hand is left alone."""
    env = os.environ if env is None else env
    launcher = launcher_from_env(env)
    try:
        deadline = float(env[DEADLINE_ENV])
    except (KeyError, ValueError):
        deadline = None
    if launcher is None and deadline is None:
        return None
    if die_with_parent(signal.SIGKILL) is False:
        end_own_group("whoever started it is gone")
    thread = threading.Thread(target=_watch, args=(launcher, deadline, every_s), name="harness-lifeline", daemon=True)
    thread.start()
    return thread


def main(argv: list[str]) -> None:
    """``python -m harness.launch.lifeline MODULE ARGS...``: run ``MODULE`` as ``python -m``
    would, after asking for SIGTERM when the launcher (this process's parent) dies."""
    if not argv:
        raise SystemExit("usage: python -m harness.launch.lifeline MODULE [ARGS...]")
    launcher = launcher_from_env(os.environ)
    if die_with_parent(signal.SIGTERM) is False or (launcher is not None and os.getppid() != launcher[0]):
        raise SystemExit(f"harness: the launcher is gone before {argv[0]} started")
    module = argv[0]
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
