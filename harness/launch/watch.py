"""The machine around a cell: who else used it while the cell ran.

The parent watches while its child trains.  On a CPU it samples the machine's busy time
(``/proc/stat`` through psutil) and subtracts the CPU time of the child's process tree and
of the parent itself: what is left is other processes' load, in cores.  Steal time (a
hypervisor giving the cores to another guest) is recorded beside it.  On a GPU it reads
NVML (which never initializes CUDA): other processes on the device, SM and memory clocks,
throttle reasons, temperature and power limit at the start and the end.

A cell run beside a foreign load past the limit is *disturbed*: its speed is not judged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

# Other processes' mean load during a cell, in cores, past which its speed is not judged.
# Measured on 2 cores: a quiet cell sees 0.01 to 0.03; another pytest started beside a
# 35-s cell (about 8 CPU-seconds: 0.19 to 0.24 cores on average) cost it 30% of its speed.
DEFAULT_MAX_FOREIGN_CORES = 0.1
# A watch shorter than this says nothing about a load (one burst of a system daemon over a
# fraction of a second reads as a whole core): it is recorded, not turned into `disturbed`.
MIN_WATCH_S = 3.0


def _busy_seconds(times: Any) -> float:
    return float(times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0))


def visible_gpu_handle(nvml: Any) -> Any:
    """NVML handle of the first device CUDA will use (CUDA_VISIBLE_DEVICES, index or UUID)."""
    first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByUUID(first)
    return nvml.nvmlDeviceGetHandleByIndex(int(first or 0))


def gpu_state(nvml: Any, handle: Any) -> dict[str, Any]:
    """Clocks, throttle reasons, temperature and power limit now; None where NVML cannot say."""
    from ..nvml import THROTTLE_REASONS

    def get(fn: str, *args: Any) -> Any:
        try:
            return getattr(nvml, fn)(handle, *args)
        except Exception:  # not supported on this device or driver
            return None

    mask = get("nvmlDeviceGetCurrentClocksThrottleReasons") or 0
    limit = get("nvmlDeviceGetEnforcedPowerLimit")
    return {
        "sm_clock_mhz": get("nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_SM", 1)),
        "mem_clock_mhz": get("nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_MEM", 2)),
        "temperature_c": get("nvmlDeviceGetTemperature", getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
        "power_limit_w": limit / 1000.0 if limit else None,
        "throttle_reasons": [name for bit, name in THROTTLE_REASONS.items() if mask & bit],
    }


def gpu_pids(nvml: Any, handle: Any) -> set[int]:
    pids: set[int] = set()
    for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            pids |= {int(p.pid) for p in getattr(nvml, fn)(handle)}
        except Exception:
            continue
    return pids


@dataclass
class Watch:
    """Started with the child; ``sample()`` now and then; ``summary()`` at the end."""

    pid: int
    use_cuda: bool = False
    starters: tuple[int, ...] = ()  # the zygote that forked the child: its tree is ours too
    max_foreign_cores: float = DEFAULT_MAX_FOREIGN_CORES
    nvml: Any = None  # the pynvml module (a fake in tests); opened lazily on a GPU
    _child: Any = None
    _t0: float = 0.0
    _busy0: float = 0.0
    _steal0: float = 0.0
    _ours0: float = 0.0
    _last: tuple[float, float, float] | None = None  # (time, foreign busy, steal) so far
    _foreign_peak_cores: float = 0.0
    _gpu_handle: Any = None
    _gpu_start: dict[str, Any] | None = None
    _gpu_pids_seen: set[int] = field(default_factory=set)
    _ours_seen: set[int] = field(default_factory=set)
    _error: str | None = None

    def __post_init__(self) -> None:
        self.cores = psutil.cpu_count() or 1
        try:
            self._child = psutil.Process(self.pid)
        except psutil.Error:
            self._child = None
        self._starters = []
        for pid in self.starters:
            try:
                self._starters.append(psutil.Process(pid))
            except psutil.Error:
                continue
        self._t0 = time.monotonic()
        times = psutil.cpu_times()
        self._busy0, self._steal0 = _busy_seconds(times), float(getattr(times, "steal", 0.0))
        self._ours0 = self._ours()
        self._last = (self._t0, 0.0, 0.0)
        if self.use_cuda:
            self._open_gpu()

    def _open_gpu(self) -> None:
        try:
            if self.nvml is None:
                import pynvml

                self.nvml = pynvml
            self.nvml.nvmlInit()
            self._gpu_handle = visible_gpu_handle(self.nvml)
            self._gpu_start = gpu_state(self.nvml, self._gpu_handle)
            self._sample_gpu()
        except Exception as exc:  # no NVML: the GPU side of the watch stays empty, and says why
            self._error = f"NVML unavailable ({type(exc).__name__}: {exc})"
            self._gpu_handle = None

    def _ours(self) -> float:
        """CPU seconds of this process, of the processes it reaped, and of the trees under the
        child and its starter (the zygote that forked it), live or reaped.

        A live process counts its own time; once a process is reaped its time moves into
        its reaper's ``children_*`` times (ours for a spawned child, the zygote's for a
        forked one), so the sum stays whole and a finished child is never taken for a
        foreign load.  Other processes, our own unrelated children included, are foreign."""
        try:
            t = psutil.Process().cpu_times()
            mine = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return 0.0
        seen: set[int] = set()
        for root in [self._child, *self._starters]:
            if root is None:
                continue
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in tree:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                try:
                    t = proc.cpu_times()
                    mine += t.user + t.system + t.children_user + t.children_system
                except psutil.Error:
                    continue
        return mine

    def _our_pids(self) -> set[int]:
        pids = {os.getpid(), self.pid}
        if self._child is not None:
            try:
                pids |= {p.pid for p in self._child.children(recursive=True)}
            except psutil.Error:
                pass
        return pids

    def _sample_gpu(self) -> None:
        if self._gpu_handle is None:
            return
        seen = gpu_pids(self.nvml, self._gpu_handle)
        ours = self._our_pids()
        self._ours_seen |= seen & ours
        self._gpu_pids_seen |= seen - ours

    def sample(self) -> None:
        """Called by the launcher's wait loop, about once a second."""
        now = time.monotonic()
        times = psutil.cpu_times()
        busy = _busy_seconds(times) - self._busy0
        ours = self._ours() - self._ours0
        foreign = max(0.0, busy - ours)
        steal = float(getattr(times, "steal", 0.0)) - self._steal0
        if self._last is not None and now - self._last[0] > 0.5:
            interval = (foreign - self._last[1]) / (now - self._last[0])
            self._foreign_peak_cores = max(self._foreign_peak_cores, interval)
        self._last = (now, foreign, steal)
        if self.use_cuda:
            self._sample_gpu()

    def summary(self) -> dict[str, Any]:
        self.sample()
        now, foreign, steal = self._last or (time.monotonic(), 0.0, 0.0)
        seconds = max(now - self._t0, 1e-9)
        out: dict[str, Any] = {
            "seconds": seconds,
            "cores": self.cores,
            "foreign_cpu_cores_mean": foreign / seconds,
            "foreign_cpu_cores_peak": self._foreign_peak_cores,
            "steal_cores_mean": steal / seconds,
            "max_foreign_cores": self.max_foreign_cores,
        }
        if self.use_cuda:
            foreign_gpu = sorted(self._gpu_pids_seen)
            if not self._ours_seen and len(foreign_gpu) == 1:
                foreign_gpu = []  # another pid namespace (a container): the one process is ours
            out["gpu"] = {
                "start": self._gpu_start,
                "end": gpu_state(self.nvml, self._gpu_handle) if self._gpu_handle is not None else None,
                "foreign_processes": foreign_gpu,
                "error": self._error,
            }
        out["disturbed"] = disturbance(out)
        return out


def disturbance(summary: dict[str, Any]) -> str | None:
    """Why a cell's speed cannot be trusted, or None."""
    reasons = []
    load, limit = summary.get("foreign_cpu_cores_mean") or 0.0, summary.get("max_foreign_cores")
    if limit is not None and load > limit and (summary.get("seconds") or 0.0) >= MIN_WATCH_S:
        reasons.append(f"other processes used {load:.2f} CPU cores on average while it ran (limit {limit:g})")
    gpu = summary.get("gpu") or {}
    if gpu.get("foreign_processes"):
        reasons.append(f"other processes on the GPU: pids {gpu['foreign_processes']}")
    return "; ".join(reasons) or None
