"""The GPU's own view, through NVML (``nvidia-ml-py``, imported as ``pynvml``).

``NvmlSampler`` polls one device in a thread: memory used, power draw, SM clock,
temperature and clocks-event (throttle) reasons.  Energy is recorded three ways, because on
a short run they disagree and the disagreement is the point: the device's total-energy
counter (Volta and newer) read at the start and the end, the time integral of the sampled
power, and the mean sampled power times the sampled seconds.  ``nvmlDeviceGetPowerUsage``
is a one-second average on Hopper and newer, so the sampled power lags the load: the
counter is preferred where the device has one.

A call that fails is never read as a measurement: a throttle read that fails leaves that
sample's state unknown (not "not throttled"), and the first error of each NVML function
is kept in the figures (``nvml_errors``).

The device is found by its UUID where the caller knows it (``cuda_device_uuid``): NVML's
indices follow the PCI bus, CUDA's ordinals follow CUDA_VISIBLE_DEVICES and
CUDA_DEVICE_ORDER, and the two disagree whenever those reorder the devices.

It takes the NVML module as an argument, so a fake stands in for it in tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .devices import handle_by_uuid, nvml_error_text, text
from .timing import Sampler

# Throttle reasons that mean the GPU was slowed by something other than having no work:
# power capping, thermal limits, and the hardware slowdown signals.  (Idle and the
# application clock setting are not throttling of a running benchmark.)  The bits are the
# same for NVML's newer "clocks event reasons" and its older "clocks throttle reasons".
THROTTLE_REASONS = {
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
}
# The newer name first (NVML 12.2 and later; the older one is deprecated), then the older.
CLOCKS_EVENT_FUNCTIONS = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")


class NvmlCalls:
    """NVML calls on one device handle that keep what failed instead of swallowing it.

    NVML answers "not supported" for what a device or driver lacks (no energy counter
    before Volta, no power reading on some boards) and errors for real faults (GPU lost, no
    permission).  Either way the caller gets None, never a number that reads as measured,
    and ``errors`` keeps the first error of each function, in the order met."""

    def __init__(self, nvml: Any, handle: Any):
        self.nvml = nvml
        self.handle = handle
        self.errors: dict[str, str] = {}

    def call(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, fn)(self.handle, *args)
        except Exception as exc:  # AttributeError too: a module without that function
            self.errors.setdefault(fn, nvml_error_text(fn, exc))
            return None

    def throttle_mask(self) -> int | None:
        """The current clocks-event reasons, else the throttle reasons (same bits); None when
        neither can be read, which is unknown and not "not throttled".

        The older function is tried only when the newer one is missing, from the module or
        from the driver (``NVMLError_FunctionNotFound``): a "not supported" from the newer
        one is the device's answer, and is what the error list says."""
        for i, fn in enumerate(CLOCKS_EVENT_FUNCTIONS):
            if not hasattr(self.nvml, fn):
                continue
            try:
                return int(getattr(self.nvml, fn)(self.handle))
            except Exception as exc:
                if type(exc).__name__ == "NVMLError_FunctionNotFound" and i + 1 < len(CLOCKS_EVENT_FUNCTIONS):
                    continue  # a driver older than the module: the older name answers
                self.errors.setdefault(fn, nvml_error_text(fn, exc))
                return None
        fn = CLOCKS_EVENT_FUNCTIONS[-1]
        self.errors.setdefault(fn, f"{fn}: the NVML module has neither {' nor '.join(CLOCKS_EVENT_FUNCTIONS)}")
        return None

    def error_list(self) -> list[str]:
        return list(self.errors.values())


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


@dataclass
class NvmlSample:
    t: float
    memory_used_bytes: float | None
    power_w: float | None
    sm_clock_mhz: float | None
    temperature_c: float | None
    throttle_mask: int | None  # None: the read failed, so this sample's state is unknown


@dataclass
class NvmlSummary:
    samples: list[NvmlSample] = field(default_factory=list)
    energy_j: float | None = None  # the preferred of the three below: the counter, else the integral
    energy_source: str = "unavailable"  # "counter", "power integral" or "unavailable"
    energy_counter_j: float | None = None  # the device's total-energy counter, end minus start
    energy_integral_j: float | None = None  # trapezoid integral of the sampled power
    energy_mean_power_j: float | None = None  # mean sampled power x sampled_seconds
    seconds: float = 0.0
    nvml_errors: list[str] = field(default_factory=list)  # the first error of each NVML function
    device_uuid: str | None = None

    def readings(self, name: str) -> list[float]:
        """One field's readings over the samples, the failed reads left out."""
        return [value for value in (getattr(s, name) for s in self.samples) if value is not None]

    @property
    def peak_memory_used_bytes(self) -> float | None:
        return max(self.readings("memory_used_bytes"), default=None)

    @property
    def mean_power_w(self) -> float | None:
        values = self.readings("power_w")
        return sum(values) / len(values) if values else None

    @property
    def peak_power_w(self) -> float | None:
        return max(self.readings("power_w"), default=None)

    @property
    def sampled_seconds(self) -> float | None:
        """From the first to the last sample with a power reading: what the integral covers."""
        times = [s.t for s in self.samples if s.power_w is not None]
        return times[-1] - times[0] if len(times) >= 2 else None

    @property
    def throttle_reasons(self) -> list[str]:
        seen = 0
        for s in self.samples:
            seen |= s.throttle_mask or 0
        return throttle_names(seen)

    @property
    def throttled(self) -> bool | None:
        """True when any sample saw throttling; None when none did but some could not be
        read (unknown, see ``throttle_unknown``); False only when every sample said no."""
        if self.throttle_reasons:
            return True
        if not self.samples or any(s.throttle_mask is None for s in self.samples):
            return None
        return False

    @property
    def throttle_unknown(self) -> str | None:
        """Why the throttle state is (partly) unknown, with NVML's errors; None when every sample read it."""
        unread = sum(s.throttle_mask is None for s in self.samples)
        if not unread:
            return None
        why = "; ".join(e for e in self.nvml_errors if e.startswith(CLOCKS_EVENT_FUNCTIONS)) or "no NVML error recorded"
        return f"throttle reasons unreadable in {unread} of {len(self.samples)} samples: {why}"

    def figures(self, samples_trained: int | None = None) -> dict[str, Any]:
        energy_per_sample = self.energy_j / samples_trained if self.energy_j is not None and samples_trained else None
        return {
            "peak_device_mem_used_bytes": self.peak_memory_used_bytes,
            "energy_j": self.energy_j,
            "energy_source": self.energy_source,
            "energy_counter_j": self.energy_counter_j,
            "energy_integral_j": self.energy_integral_j,
            "energy_mean_power_j": self.energy_mean_power_j,
            "sampled_seconds": self.sampled_seconds,
            "energy_per_sample_j": energy_per_sample,
            "mean_power_w": self.mean_power_w,
            "peak_power_w": self.peak_power_w,
            "sm_clock_mean_mhz": _mean(self.readings("sm_clock_mhz")),
            "temperature_max_c": max(self.readings("temperature_c"), default=None),
            "throttled": self.throttled,
            "throttle_reasons": self.throttle_reasons,
            "throttle_unknown": self.throttle_unknown,
            "nvml_errors": list(self.nvml_errors),
            "nvml_device_uuid": self.device_uuid,
        }


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
    """Samples one device every ``interval_s`` while the ``with`` block runs.

    The device is the one with ``uuid`` when it is given (see ``cuda_device_uuid``), else
    NVML's device ``device_index``; a UUID NVML cannot find falls back to the index, and
    the error says so."""

    def __init__(
        self, nvml: Any, device_index: int, interval_s: float = 0.1, clock=time.perf_counter, uuid: str | None = None
    ):
        self.nvml = nvml
        self.interval_s = interval_s
        self.clock = clock
        self.summary = NvmlSummary()
        self._poll = Sampler(self.read, interval_s, name="harness-nvml")
        self.summary.samples = self._poll.samples  # one list: the poll's readings are the summary's samples
        nvml.nvmlInit()
        lookup_error = None
        handle = None
        if uuid:
            try:
                handle = handle_by_uuid(nvml, uuid)
            except LookupError as exc:
                lookup_error = f"nvmlDeviceGetHandleByUUID: {exc}; sampling NVML device {device_index} instead"
        self.handle = handle if handle is not None else nvml.nvmlDeviceGetHandleByIndex(device_index)
        self.calls = NvmlCalls(nvml, self.handle)
        if lookup_error:
            self.calls.errors["nvmlDeviceGetHandleByUUID"] = lookup_error
        device_uuid = self.calls.call("nvmlDeviceGetUUID")
        self.summary.device_uuid = text(device_uuid) if device_uuid is not None else None
        self._energy_start: float | None = None
        self._t0 = 0.0

    def read(self) -> NvmlSample:
        nv, call = self.nvml, self.calls.call
        memory = call("nvmlDeviceGetMemoryInfo")
        power_mw = call("nvmlDeviceGetPowerUsage")
        clock = call("nvmlDeviceGetClockInfo", getattr(nv, "NVML_CLOCK_SM", 1))
        temp = call("nvmlDeviceGetTemperature", getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        return NvmlSample(
            t=self.clock(),
            memory_used_bytes=float(memory.used) if memory is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            throttle_mask=self.calls.throttle_mask(),
        )

    def _energy_mj(self) -> float | None:
        value = self.calls.call("nvmlDeviceGetTotalEnergyConsumption")
        return float(value) if value is not None else None

    def __enter__(self) -> NvmlSampler:
        self._energy_start = self._energy_mj()
        self._t0 = self.clock()
        self._poll.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._poll.__exit__(*exc)  # stops the poll, and takes one last reading
        summary = self.summary
        summary.seconds = self.clock() - self._t0
        end = self._energy_mj()
        if self._energy_start is not None and end is not None:
            if end >= self._energy_start:
                summary.energy_counter_j = (end - self._energy_start) / 1000.0
            else:  # a counter that went back (a driver reload): no figure, and say why
                self.calls.errors.setdefault(
                    "nvmlDeviceGetTotalEnergyConsumption",
                    f"nvmlDeviceGetTotalEnergyConsumption: went back from {self._energy_start:g} mJ to {end:g} mJ",
                )
        summary.energy_integral_j = power_integral_j(summary.samples)
        mean_power, span = summary.mean_power_w, summary.sampled_seconds
        summary.energy_mean_power_j = mean_power * span if mean_power is not None and span is not None else None
        if summary.energy_counter_j is not None:
            summary.energy_j, summary.energy_source = summary.energy_counter_j, "counter"
        elif summary.energy_integral_j is not None:
            summary.energy_j, summary.energy_source = summary.energy_integral_j, "power integral"
        else:
            summary.energy_j, summary.energy_source = None, "unavailable"
        summary.nvml_errors = self.calls.error_list()


def open_sampler(device_index: int, interval_s: float = 0.1, uuid: str | None = None) -> NvmlSampler | None:
    """A sampler on the real NVML, or None where there is no NVML (no driver, no GPU).

    ``uuid`` (``cuda_device_uuid(i)``) names the device CUDA trains on; ``device_index`` is
    NVML's index, used only without a UUID or when NVML does not know it."""
    try:
        import pynvml

        return NvmlSampler(pynvml, device_index, interval_s, uuid=uuid)
    except Exception:
        return None
