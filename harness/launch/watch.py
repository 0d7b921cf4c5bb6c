"""The machine around a cell: who else used it while the cell ran.

The parent watches while its child trains.  On a CPU it samples the machine's busy time
(``/proc/stat`` through psutil) and subtracts the CPU time of the child's process tree and
of the parent itself: what is left is other processes' load, in cores.  Steal time (a
hypervisor giving the cores to another guest) is recorded beside it.  On a GPU it reads
NVML (which never initializes CUDA): other processes on the device, SM and memory clocks,
throttle reasons, temperature and power limit at the start and the end.

A cell run beside a foreign load past the limit is *disturbed*: its speed is not judged.
Each process NVML lists on the device is ours (in the child's or its zygote's tree),
foreign (a process this pid namespace sees that is not ours: that disturbs), or
unattributable (not visible from here: in a container NVML reports host pids).
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
# So 0.1 on 2 cores.  A machine with more cores has more background (daemons, the driver's
# threads, monitoring) and more room for it, so the default scales with the cores: 0.05 a
# core, never under 0.1 (0.8 on a 16-core GPU machine).  ``--max-foreign-load`` overrides it.
FOREIGN_CORES_PER_CORE = 0.05
MIN_MAX_FOREIGN_CORES = 0.1
# A watch shorter than this says nothing about a load (one burst of a system daemon over a
# fraction of a second reads as a whole core): it is recorded, not turned into `disturbed`.
MIN_WATCH_S = 3.0


def default_max_foreign_cores(cores: int) -> float:
    """The foreign CPU load, in cores, past which a cell is disturbed when no limit is given."""
    return max(MIN_MAX_FOREIGN_CORES, FOREIGN_CORES_PER_CORE * cores)


def _busy_seconds(times: Any) -> float:
    return float(times.user + times.nice + times.system + getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0))


def visible_gpu_handle(nvml: Any) -> Any:
    """NVML handle of the first device CUDA will use: the first entry of CUDA_VISIBLE_DEVICES.

    An entry is a UUID (``GPU-...``, bare, a unique prefix, ``MIG-...`` or the older
    ``MIG-GPU-<uuid>/<gi>/<ci>``), found by UUID whatever NVML's order; or an index, taken
    as NVML's, which is CUDA's only under CUDA_DEVICE_ORDER=PCI_BUS_ID (the watch never
    initializes CUDA, so it cannot ask CUDA; set UUIDs where the order matters)."""
    from ..measure.devices import handle_by_uuid

    first = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    if first.lstrip("-").isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(first))
    return handle_by_uuid(nvml, first)


def gpu_state(nvml: Any, handle: Any) -> dict[str, Any]:
    """Clocks, throttle reasons, temperature and power limit now; None where NVML cannot say,
    and then ``nvml_errors`` says why (a throttle state NVML could not read is None, not [])."""
    from ..measure.nvml import NvmlCalls, throttle_names

    calls = NvmlCalls(nvml, handle)
    mask = calls.throttle_mask()
    limit = calls.call("nvmlDeviceGetEnforcedPowerLimit")
    return {
        "sm_clock_mhz": calls.call("nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_SM", 1)),
        "mem_clock_mhz": calls.call("nvmlDeviceGetClockInfo", getattr(nvml, "NVML_CLOCK_MEM", 2)),
        "temperature_c": calls.call("nvmlDeviceGetTemperature", getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
        "power_limit_w": limit / 1000.0 if limit else None,
        "throttle_reasons": throttle_names(mask) if mask is not None else None,
        "nvml_errors": calls.error_list(),
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
    max_foreign_cores: float | None = None  # None: default_max_foreign_cores(this machine's cores)
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
    _foreign_seen: set[int] = field(default_factory=set)  # on the GPU, visible here, not ours
    _unattributed_seen: set[int] = field(default_factory=set)  # on the GPU, not visible from here
    _ours_seen: set[int] = field(default_factory=set)
    _error: str | None = None

    def __post_init__(self) -> None:
        self.cores = psutil.cpu_count() or 1
        if self.max_foreign_cores is None:
            self.max_foreign_cores = default_max_foreign_cores(self.cores)
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
        """This process, the child and its descendants, and the starters' trees (the zygote
        and what it forked): the same tree ``_ours`` counts CPU time for."""
        pids = {os.getpid(), self.pid}
        for root in [self._child, *self._starters]:
            if root is None:
                continue
            pids.add(root.pid)
            try:
                pids |= {p.pid for p in root.children(recursive=True)}
            except psutil.Error:
                continue
        return pids

    def _sample_gpu(self) -> None:
        """Sort the device's processes now, while their pids still name them: ours, foreign
        (visible in this pid namespace, not ours) or unattributable (not visible here)."""
        if self._gpu_handle is None:
            return
        seen = gpu_pids(self.nvml, self._gpu_handle)
        ours = self._our_pids()
        self._ours_seen |= seen & ours
        for pid in seen - ours:
            (self._foreign_seen if psutil.pid_exists(pid) else self._unattributed_seen).add(pid)

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
            foreign = sorted(self._foreign_seen - self._ours_seen)
            unattributed = sorted(self._unattributed_seen - self._ours_seen - self._foreign_seen)
            out["gpu"] = {
                "start": self._gpu_start,
                "end": gpu_state(self.nvml, self._gpu_handle) if self._gpu_handle is not None else None,
                "our_processes": sorted(self._ours_seen),
                "foreign_processes": foreign,
                "unattributed_processes": unattributed,
                "unattributed_note": unattributed_note(unattributed, bool(self._ours_seen)),
                "error": self._error,
            }
        out["disturbed"] = disturbance(out)
        return out


def unattributed_disturbs(gpu: dict[str, Any]) -> bool:
    """More than one process we cannot see, and none of ours seen: NVML is reporting another
    namespace's pids (a container), at most one of them can be this cell, so another
    process shared the GPU."""
    return not gpu.get("our_processes") and len(gpu.get("unattributed_processes") or []) > 1


def unattributed_note(unattributed: list[int], ours_seen: bool) -> str | None:
    """What the pids NVML listed but this pid namespace cannot see were taken to be."""
    if not unattributed:
        return None
    pids = f"pids {unattributed} not visible in this pid namespace"
    if ours_seen:  # NVML reports pids as this namespace sees them: these ended before they were looked up
        return (f"{pids}, though our own pids were seen on the device: most likely processes that ended before they "
                "were looked up; recorded, not judged")
    if len(unattributed) == 1:
        return f"{pids} (a container: NVML reports host pids); at most one is presumed ours, so it is taken to be this cell"
    return f"{pids} (a container: NVML reports host pids); at most one is presumed ours, so the others shared the GPU"


def disturbance(summary: dict[str, Any]) -> str | None:
    """Why a cell's speed cannot be trusted, or None."""
    reasons = []
    load, limit = summary.get("foreign_cpu_cores_mean") or 0.0, summary.get("max_foreign_cores")
    if limit is not None and load > limit and (summary.get("seconds") or 0.0) >= MIN_WATCH_S:
        reasons.append(f"other processes used {load:.2f} CPU cores on average while it ran (limit {limit:g})")
    gpu = summary.get("gpu") or {}
    if gpu.get("foreign_processes"):
        reasons.append(f"other processes on the GPU: pids {gpu['foreign_processes']}")
    if unattributed_disturbs(gpu):
        unseen = gpu["unattributed_processes"]
        reasons.append(f"{len(unseen)} processes on the GPU not visible from here (pids {unseen}) and none of ours seen: "
                       "at most one is this cell")
    return "; ".join(reasons) or None
