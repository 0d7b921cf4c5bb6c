"""The step timer: when each optimizer step, and each phase of it, began and ended.

A ``TrainerCallback``, kept out of the hot path: a CUDA event per mark on a GPU (all read after
training, with one synchronize), a ``perf_counter`` reading on a CPU; nothing else per step.
``phase_figures`` turns the phases into figures (``phase_<name>_s`` per timed step, and each
phase's share), which ``compare``, ``ab`` and a regression message show side by side.
"""

from __future__ import annotations

import math
import time
from typing import Any

from transformers import TrainerCallback

from .vocabulary import PHASE_NAMES

# The phases of an optimizer step, in order, and the callback that marks each one's end.
# ``data``: from the previous step's end to this step's first callback (fetching and collating
# its batches, the previous step's logging); ``forward_backward``: forward and backward passes
# (with the copy to the device and gradient clipping); ``optimizer``: ``optimizer.step()``;
# ``other``: the learning-rate schedule, zeroing the gradients, the step's callbacks.
PHASES = PHASE_NAMES
_BOUNDARIES = ("begin", "step", "eval")


class StepTimer(TrainerCallback):
    """Marks the start of training, the phases and end of each optimizer step, and the end of
    each evaluation run during training (whose time is then left out of the next step).

    A mark is a CUDA event on a GPU (all read after training, with one synchronize) and a
    ``perf_counter`` reading on a CPU: four per step (``on_step_begin``,
    ``on_pre_optimizer_step``, ``on_optimizer_step``, ``on_step_end``), whose gaps are the
    step's phases (``PHASES``); they add up to the step's time by construction.

    Besides the marks it takes two synchronized wall-clock readings, at the end of the last
    warmup step and at the end of the last step: the timed window on the host's clock, a
    check on the CUDA events over exactly the same steps.  Both sit on the window's edges, so
    neither synchronization falls inside a timed step."""

    def __init__(self, use_cuda: bool, warmup: int = 0):
        self.use_cuda = use_cuda
        self.warmup = warmup
        # ("begin" | "step_begin" | "pre_optimizer" | "optimizer" | "step" | "eval", event or time)
        self._marks: list[tuple[str, Any]] = []
        self._evals: list[tuple[int, int, dict[str, float]]] = []  # (mark index, global step, metrics)
        self._training = False
        self._wall: dict[int, float] = {}  # global step -> synchronized perf_counter at its end
        self._times: list[float] | None = None  # each mark's time in seconds, once read

    def _mark(self, kind: str) -> None:
        if not self._training:
            return
        if self.use_cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append((kind, event))
        else:
            self._marks.append((kind, time.perf_counter()))

    def on_train_begin(self, args, state, control, **kwargs):
        self._marks, self._evals, self._training, self._wall, self._times = [], [], True, {}, None
        self._mark("begin")
        if self.warmup == 0:
            self._synchronized_wall(0)

    def _synchronized_wall(self, step: int) -> None:
        if self.use_cuda:
            import torch

            torch.cuda.synchronize()
        self._wall[step] = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._mark("step_begin")

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._mark("pre_optimizer")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._mark("optimizer")

    def on_step_end(self, args, state, control, **kwargs):
        self._mark("step")
        if state.global_step == self.warmup or state.global_step == state.max_steps:
            self._synchronized_wall(state.global_step)

    def timed_wall_seconds(self) -> float | None:
        """Host seconds from the end of the last warmup step to the end of the last step,
        synchronized at both ends; None when an evaluation ran in between (its time is on
        the host's clock but in no step) or a reading is missing."""
        steps = [i for i, (kind, _) in enumerate(self._marks) if kind == "step"]
        if len(steps) <= self.warmup or self.warmup not in self._wall or len(steps) not in self._wall:
            return None
        first = steps[self.warmup - 1] if self.warmup else 0
        if any(kind == "eval" for kind, _ in self._marks[first:]):
            return None
        return self._wall[len(steps)] - self._wall[self.warmup]

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._training:  # an evaluation inside trainer.train(), not the final one
            self._mark("eval")
            self._evals.append((len(self._marks) - 1, state.global_step, dict(metrics or {})))

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False

    def _read(self) -> list[float]:
        """Each mark's time in seconds from the first.  Synchronizes once on a GPU."""
        if self._times is None or len(self._times) != len(self._marks):
            if self.use_cuda and self._marks:
                self._marks[-1][1].synchronize()
                first = self._marks[0][1]
                self._times = [first.elapsed_time(event) / 1000.0 for _, event in self._marks]
            else:
                self._times = [t - self._marks[0][1] for _, t in self._marks] if self._marks else []
        return self._times

    def _steps(self) -> list[tuple[int, float, dict[str, float] | None]]:
        """Each optimizer step: its mark's index, its seconds (from the previous step's end, or
        the end of an evaluation, to its own), and its phases (None where a mark is missing:
        a Transformers without that callback)."""
        times, out, boundary, inside = self._read(), [], 0, []
        for i, (kind, _) in enumerate(self._marks):
            if kind in _BOUNDARIES:
                if kind == "step":
                    out.append((i, times[i] - times[boundary], self._phases(boundary, inside, i, times)))
                boundary, inside = i, []
            else:
                inside.append(i)
        return out

    def _phases(self, start: int, inside: list[int], end: int, times: list[float]) -> dict[str, float] | None:
        kinds = [self._marks[i][0] for i in inside]
        if not {"step_begin", "pre_optimizer", "optimizer"} <= set(kinds):
            return None
        begin = inside[kinds.index("step_begin")]  # the first (once per step, or per micro-batch in some versions)
        pre = inside[len(kinds) - 1 - kinds[::-1].index("pre_optimizer")]
        opt = inside[len(kinds) - 1 - kinds[::-1].index("optimizer")]
        edges = [times[start], times[begin], times[pre], times[opt], times[end]]
        return {name: b - a for name, a, b in zip(PHASES, edges, edges[1:])}

    def step_seconds(self) -> list[float]:
        """Duration of each optimizer step, in order; evaluation time is not in any step."""
        return [seconds for _, seconds, _ in self._steps()] if len(self._marks) >= 2 else []

    def phase_seconds(self) -> dict[str, list[float]] | None:
        """Each phase's seconds in every optimizer step (``PHASES``), or None when this
        Transformers does not call every phase's callback."""
        steps = self._steps() if len(self._marks) >= 2 else []
        if not steps or any(phases is None for _, _, phases in steps):
            return None
        return {name: [phases[name] for _, _, phases in steps] for name in PHASES}

    def eval_curve(self) -> list[dict[str, float]]:
        """Each evaluation during training: the training seconds before it (evaluations
        left out), its optimizer step, and its metrics."""
        if not self._evals:
            return []
        steps = self._steps()
        curve = []
        for index, step, metrics in self._evals:
            trained = sum(seconds for mark, seconds, _ in steps if mark < index)
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            curve.append({"train_seconds": trained, "step": step, **numbers})
        return curve


def phase_figures(phases: dict[str, list[float]] | None, warmup: int) -> dict[str, float]:
    """Each phase's mean seconds per timed step (``phase_<name>_s``) and its share of the step."""
    if not phases:
        return {}
    timed = {name: values[warmup:] for name, values in phases.items()}
    total = sum(math.fsum(values) for values in timed.values())
    out: dict[str, float] = {}
    for name, values in timed.items():
        if values:
            out[f"phase_{name}_s"] = math.fsum(values) / len(values)
            out[f"phase_{name}_share"] = math.fsum(values) / total if total > 0 else float("nan")
    return out
