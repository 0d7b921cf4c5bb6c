"""A profile of a few steps, in an execution of its own: never inside a timed one.

``pytest benchmarks/ --profile`` (and, by itself, a confirmed speed regression) runs the cell
once more with ``HARNESS_PROFILE_STEPS=N``: the child trains its warmup steps and then ``N``
steps under ``torch.profiler``, and keeps a per-operator table next to the result
(``samples["profile"]``): each operator's self time on the CPU and on the device, its calls,
and the input shapes of its costliest call where the profiler recorded them.

Every profiled step runs inside a ``harness::step`` range, from the end of the step before to
its own end (its batch's fetch included), so the time between operators (Python, the
Trainer's own work) is that range's self time: the table's total self CPU time is the
profiled steps' time on the host's clock (checked within 10% in tests/test_why_slower.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

from transformers import TrainerCallback

STEPS_VARIABLE = "HARNESS_PROFILE_STEPS"
DEFAULT_STEPS = 5
KEPT = 60  # operators kept in the table, by self time
STEP_RANGE = "harness::step"


def requested_steps() -> int:
    """The steps this execution profiles (``HARNESS_PROFILE_STEPS``); 0 when it is a measured one."""
    value = os.environ.get(STEPS_VARIABLE, "")
    return int(value) if value.isdigit() else 0


class ProfileCallback(TrainerCallback):
    """Profiles the ``steps`` steps after ``warmup``."""

    def __init__(self, use_cuda: bool, warmup: int, steps: int):
        self.use_cuda, self.warmup, self.steps = use_cuda, warmup, steps
        self._profiler: Any = None
        self._range: Any = None
        self._started = 0.0
        self.table: dict[str, Any] | None = None

    def _sync(self) -> None:
        if self.use_cuda:
            import torch

            torch.cuda.synchronize()

    def _open_range(self) -> None:
        import torch

        self._range = torch.autograd.profiler.record_function(STEP_RANGE)
        self._range.__enter__()

    def _start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.use_cuda else [])
        self._sync()
        self._profiler = profile(activities=activities, record_shapes=True)
        self._profiler.__enter__()
        self._started = time.perf_counter()
        self._open_range()

    def on_train_begin(self, args, state, control, **kwargs):
        if self.warmup == 0:
            self._start()

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == self.warmup and self._profiler is None:
            self._start()
        elif self._profiler is not None and self.table is None:
            self._range.__exit__(None, None, None)
            if step < self.warmup + self.steps:
                self._open_range()
                return
            self._sync()
            seconds = time.perf_counter() - self._started
            self._profiler.__exit__(None, None, None)
            self.table = operator_table(self._profiler, steps=self.steps, seconds=seconds, device=self.use_cuda)
            control.should_training_stop = True


def operator_table(profiler: Any, *, steps: int, seconds: float, device: bool) -> dict[str, Any]:
    """The profile as a table: ``{"steps", "seconds", "device", "ops": [{name, self_cpu_us,
    self_device_us, calls, shapes}], "total_self_cpu_us", "total_self_device_us"}``."""
    by_shape = profiler.key_averages(group_by_input_shape=True)
    ops: dict[str, dict[str, Any]] = {}
    for event in by_shape:
        row = ops.setdefault(event.key, {"name": event.key, "self_cpu_us": 0.0, "self_device_us": 0.0, "calls": 0,
                                         "shapes": None, "_costliest": -1.0})
        cpu_us, device_us = float(event.self_cpu_time_total), float(getattr(event, "self_device_time_total", 0.0))
        row["self_cpu_us"] += cpu_us
        row["self_device_us"] += device_us
        row["calls"] += int(event.count)
        if cpu_us + device_us > row["_costliest"] and event.input_shapes:
            row["shapes"], row["_costliest"] = str(event.input_shapes)[:200], cpu_us + device_us
    rows = sorted(ops.values(), key=lambda r: r["self_device_us" if device else "self_cpu_us"], reverse=True)
    for row in rows:
        del row["_costliest"]
    return {
        "steps": steps, "seconds": seconds, "device": "cuda" if device else "cpu",
        "total_self_cpu_us": sum(r["self_cpu_us"] for r in rows),
        "total_self_device_us": sum(r["self_device_us"] for r in rows),
        "ops": rows[:KEPT],
    }
