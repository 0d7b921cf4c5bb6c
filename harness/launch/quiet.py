"""Waiting for the machine to quieten before a disturbed cell runs again.

A cell measured beside another load (``watch.py``: other processes' CPU load past the
limit, or another process on its GPU) is ``disturbed``: its speed says nothing about the
code.  Rather than leave it unjudged, the run waits until the machine has been quiet for a
whole window, and measures the cell again: a few tries, within a wait budget for the
whole run, so that a night on a machine that never quietens still ends.
"""

from __future__ import annotations

import time

import psutil

from .watch import _busy_seconds as busy_seconds
from .watch import default_max_foreign_cores, gpu_pids, visible_gpu_handle

QUIET_WINDOW_S = 5.0  # the machine must stay under the limit for this long
ZYGOTE = "harness.launch.zygote"


def _own_seconds() -> float:
    """CPU seconds of the run's own idle processes: this one and its warm zygotes.  (Other
    children of this process, a test's load among them, are foreign.)"""
    total = 0.0
    me = psutil.Process()
    procs = [me]
    try:
        procs += [p for p in me.children(recursive=True) if ZYGOTE in " ".join(p.cmdline())]
    except psutil.Error:
        pass
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _gpu_foreign(use_cuda: bool) -> list[int]:
    if not use_cuda:
        return []
    try:
        import pynvml

        pynvml.nvmlInit()
        return sorted(gpu_pids(pynvml, visible_gpu_handle(pynvml)))  # no cell runs now: any process is foreign
    except Exception:  # no NVML: the GPU side cannot be watched, and does not hold the wait
        return []


def foreign_load(window_s: float, use_cuda: bool = False) -> tuple[float, list[int]]:
    """Other processes' mean CPU load over ``window_s`` (in cores), and the processes on the GPU."""
    busy0, own0, t0 = busy_seconds(psutil.cpu_times()), _own_seconds(), time.monotonic()
    time.sleep(window_s)
    busy, own, seconds = busy_seconds(psutil.cpu_times()) - busy0, _own_seconds() - own0, time.monotonic() - t0
    return max(0.0, busy - own) / max(seconds, 1e-9), _gpu_foreign(use_cuda)


def wait_for_quiet(limit: float | None, budget_s: float, *, use_cuda: bool = False,
                   window_s: float = QUIET_WINDOW_S) -> tuple[bool, float, str | None]:
    """Watch the machine in windows of ``window_s`` until one passes with other processes
    under ``limit`` cores (default: the watch's) and none on the GPU, or the budget is
    spent.  Returns (quiet, seconds waited, what still disturbed it)."""
    limit = default_max_foreign_cores(psutil.cpu_count() or 1) if limit is None else limit
    t0 = time.monotonic()
    while True:
        load, on_gpu = foreign_load(window_s, use_cuda)
        waited = time.monotonic() - t0
        why = []
        if load > limit:
            why.append(f"other processes used {load:.2f} CPU cores (limit {limit:g})")
        if on_gpu:
            why.append(f"other processes on the GPU: pids {on_gpu}")
        if not why:
            return True, waited, None
        if waited + window_s > budget_s:
            return False, waited, "; ".join(why)
