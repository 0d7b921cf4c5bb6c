"""The GPU's own view, through NVML (``nvidia-ml-py``, imported as ``pynvml``).

``NvmlSampler`` polls one device in a thread: memory used, power draw, SM clock,
temperature and throttle reasons.  Energy is the device's total-energy counter (Volta and
newer) read at the start and the end, or else the time integral of the sampled power.
It takes the NVML module as an argument, so a fake stands in for it in tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

# Throttle reasons that mean the GPU was slowed by something other than having no work:
# power capping, thermal limits, and the hardware slowdown signals.  (Idle and the
# application clock setting are not throttling of a running benchmark.)
THROTTLE_REASONS = {
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
}


@dataclass
class NvmlSample:
    t: float
    memory_used_bytes: float | None
    power_w: float | None
    sm_clock_mhz: float | None
    temperature_c: float | None
    throttle_mask: int


@dataclass
class NvmlSummary:
    samples: list[NvmlSample] = field(default_factory=list)
    energy_j: float | None = None
    energy_source: str = "unavailable"  # "counter", "power integral" or "unavailable"
    seconds: float = 0.0

    @property
    def peak_memory_used_bytes(self) -> float | None:
        values = [s.memory_used_bytes for s in self.samples if s.memory_used_bytes is not None]
        return max(values) if values else None

    @property
    def mean_power_w(self) -> float | None:
        values = [s.power_w for s in self.samples if s.power_w is not None]
        return sum(values) / len(values) if values else None

    @property
    def peak_power_w(self) -> float | None:
        values = [s.power_w for s in self.samples if s.power_w is not None]
        return max(values) if values else None

    @property
    def throttle_reasons(self) -> list[str]:
        seen = 0
        for s in self.samples:
            seen |= s.throttle_mask
        return [name for bit, name in THROTTLE_REASONS.items() if seen & bit]

    @property
    def throttled(self) -> bool:
        return bool(self.throttle_reasons)

    def figures(self, samples_trained: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peak_device_mem_used_bytes": self.peak_memory_used_bytes,
            "energy_j": self.energy_j,
            "mean_power_w": self.mean_power_w,
            "peak_power_w": self.peak_power_w,
            "sm_clock_mean_mhz": _mean([s.sm_clock_mhz for s in self.samples]),
            "temperature_max_c": max((s.temperature_c for s in self.samples if s.temperature_c is not None), default=None),
            "throttled": self.throttled,
        }
        if self.energy_j is not None and samples_trained:
            out["energy_per_sample_j"] = self.energy_j / samples_trained
        return out


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def power_integral_j(samples: list[NvmlSample]) -> float | None:
    """Trapezoidal integral of power over time, in joules."""
    points = [(s.t, s.power_w) for s in samples if s.power_w is not None]
    if len(points) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(points, points[1:]))


class NvmlSampler:
    """Samples one device every ``interval_s`` while the ``with`` block runs."""

    def __init__(self, nvml: Any, device_index: int, interval_s: float = 0.1, clock=time.perf_counter):
        self.nvml = nvml
        self.interval_s = interval_s
        self.clock = clock
        self.summary = NvmlSummary()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harness-nvml", daemon=True)
        nvml.nvmlInit()
        self.handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        self._energy_start: float | None = None
        self._t0 = 0.0

    def _try(self, fn, *args) -> Any:
        try:
            return fn(self.handle, *args)
        except Exception:  # a counter this device or driver does not have
            return None

    def read(self) -> NvmlSample:
        nv = self.nvml
        memory = self._try(nv.nvmlDeviceGetMemoryInfo)
        power_mw = self._try(nv.nvmlDeviceGetPowerUsage)
        clock = self._try(nv.nvmlDeviceGetClockInfo, getattr(nv, "NVML_CLOCK_SM", 1))
        temp = self._try(nv.nvmlDeviceGetTemperature, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        reasons = self._try(nv.nvmlDeviceGetCurrentClocksThrottleReasons) or 0
        return NvmlSample(
            t=self.clock(),
            memory_used_bytes=float(memory.used) if memory is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            throttle_mask=int(reasons),
        )

    def _energy_mj(self) -> float | None:
        value = self._try(self.nvml.nvmlDeviceGetTotalEnergyConsumption)
        return float(value) if value is not None else None

    def _run(self) -> None:
        while True:
            self.summary.samples.append(self.read())
            if self._stop.wait(self.interval_s):
                break

    def __enter__(self) -> NvmlSampler:
        self._energy_start = self._energy_mj()
        self._t0 = self.clock()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.summary.samples.append(self.read())
        self.summary.seconds = self.clock() - self._t0
        end = self._energy_mj()
        if self._energy_start is not None and end is not None and end >= self._energy_start:
            self.summary.energy_j = (end - self._energy_start) / 1000.0
            self.summary.energy_source = "counter"
        else:
            self.summary.energy_j = power_integral_j(self.summary.samples)
            self.summary.energy_source = "power integral" if self.summary.energy_j is not None else "unavailable"


def open_sampler(device_index: int, interval_s: float = 0.1) -> NvmlSampler | None:
    """A sampler on the real NVML, or None where there is no NVML (no driver, no GPU)."""
    try:
        import pynvml

        return NvmlSampler(pynvml, device_index, interval_s)
    except Exception:
        return None
