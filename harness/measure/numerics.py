"""Divergence stopped early: every step's loss watched, a NaN, an infinity or a blow-up ends the cell.

``DivergenceGuard`` sees the loss of every training step (``HarnessTrainer.training_step``).
On a CPU it reads each at once (a float the step already holds); on a GPU it never
synchronizes inside the steps: the losses are copied to pinned host memory in chunks of
``CHUNK`` steps, without blocking, and a chunk is read once its copy has landed (an event
query, no wait), so a divergence is caught at most two chunks after its step.  A loss that
is not finite, or more than ``FACTOR`` times the loss the training started at (the mean of
its first ``START_STEPS`` steps), raises ``Diverged`` naming the step and the value; the
runner keeps what was measured before it (the steps' times, the losses read).

The Trainer itself hides a NaN from its logged loss (``logging_nan_inf_filter``), so the
logged loss curve cannot show it; this guard reads what ``training_step`` returned.
"""

from __future__ import annotations

import math
from typing import Any

from .vocabulary import LOSS_LAST, LOSS_MEAN

CHUNK = 4  # GPU: losses read back per this many steps
FACTOR = 10.0  # a loss this many times its start has diverged (2-class cross-entropy starts at ~0.69)
START_STEPS = 3  # the start: the mean loss of the first steps


SMOOTH = 12  # steps: a loss curve is compared as its running mean over this many steps
LAST_STEPS = 12  # the curve's end: the mean loss of its last steps


def step_curve(losses: list[list[float]] | list[tuple[int, float]]) -> dict[int, float]:
    """Each optimizer step's loss (the mean of its micro-batches'), from ``[step, loss]`` pairs."""
    by_step: dict[int, list[float]] = {}
    for step, loss in losses:
        by_step.setdefault(int(step), []).append(float(loss))
    return {step: math.fsum(values) / len(values) for step, values in sorted(by_step.items())}


def smoothed(curve: dict[int, float], window: int = SMOOTH) -> dict[int, float]:
    """The running mean over the last ``window`` steps, at each step from the ``window``-th on
    (every step when the curve is shorter)."""
    steps = sorted(curve)
    window = min(window, len(steps)) or 1
    return {steps[i]: math.fsum(curve[s] for s in steps[i - window + 1:i + 1]) / window
            for i in range(window - 1, len(steps))}


def loss_figures(losses: list[list[float]], warmup: int) -> dict[str, float]:
    """The loss curve summarised over the timed steps (after ``warmup``): its mean
    (``train_loss_mean``) and the mean of its last ``LAST_STEPS`` steps (``train_loss_last``)."""
    curve = step_curve(losses)
    timed = [loss for step, loss in curve.items() if step > warmup] or list(curve.values())
    if not timed or not all(map(math.isfinite, timed)):
        return {}
    last = timed[-LAST_STEPS:]
    return {LOSS_MEAN: math.fsum(timed) / len(timed), LOSS_LAST: math.fsum(last) / len(last)}


class Diverged(RuntimeError):
    """Training diverged: the step, the loss and why."""

    def __init__(self, step: int, value: float, why: str):
        self.step, self.value, self.why = step, value, why
        super().__init__(f"training diverged at step {step}: loss {value:g} ({why}); "
                         f"the cell stopped there and keeps what it measured before")


class DivergenceGuard:
    def __init__(self, use_cuda: bool, *, factor: float = FACTOR, chunk: int = CHUNK):
        self.use_cuda = use_cuda
        self.factor = factor
        self.chunk = chunk
        self.losses: list[list[float]] = []  # [step, loss] of every step read so far, in order
        self._pending: list[tuple[int, Any]] = []  # GPU: (step, loss tensor) not yet copied
        self._in_flight: list[tuple[list[int], Any, Any]] = []  # GPU: (steps, pinned host tensor, event)

    @property
    def start(self) -> float | None:
        first = [loss for _, loss in self.losses[:START_STEPS]]
        return sum(first) / len(first) if len(first) == START_STEPS and all(map(math.isfinite, first)) else None

    def observe(self, step: int, loss: Any) -> None:
        """One micro-batch's loss at optimizer step ``step`` (1-based)."""
        if not self.use_cuda:
            self._check(step, float(loss))
            return
        self._pending.append((step, loss.detach()))
        if len(self._pending) >= self.chunk:
            self._copy()
        self._read(wait=False)

    def finish(self) -> None:
        """After training: read everything still on its way (a synchronize is fine now)."""
        if self._pending:
            self._copy()
        self._read(wait=True)

    def _copy(self) -> None:
        import torch

        steps = [step for step, _ in self._pending]
        values = torch.stack([loss.float().reshape(()) for _, loss in self._pending])
        host = torch.empty(len(steps), dtype=torch.float32, pin_memory=True)
        host.copy_(values, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._in_flight.append((steps, host, event))
        self._pending = []

    def _read(self, *, wait: bool) -> None:
        while self._in_flight and (wait or self._in_flight[0][2].query()):
            steps, host, event = self._in_flight.pop(0)
            event.synchronize()
            for step, value in zip(steps, host.tolist()):
                self._check(step, value)

    def _check(self, step: int, value: float) -> None:
        self.losses.append([step, value])
        if not math.isfinite(value):
            raise Diverged(step, value, "not a finite number")
        start = self.start
        if start is not None and start > 0 and value > self.factor * start:
            raise Diverged(step, value, f"over {self.factor:g}x the {start:.4g} it started at")
