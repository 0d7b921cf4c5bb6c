"""What is measured during a cell, and the pure arithmetic that turns samples into figures.

Three instruments, each kept out of the hot path:

* ``CountingCollator`` wraps the training collator and records, per batch, the samples,
  the real (attended) tokens and the padded tokens.  It runs on the CPU tensors the
  collator builds, before anything reaches the device, so it never synchronizes.
* ``StepTimer`` is a ``TrainerCallback`` that marks the end of every optimizer step: a
  CUDA event on a GPU (read, with one synchronize, after training), ``perf_counter`` on
  a CPU.  Nothing else happens per step.
* ``Sampler`` is a thread that polls a reading (process RSS; ``nvml.py`` samples the GPU) at a
  fixed interval and keeps the peak.

``summarize_training`` derives every throughput figure from the raw samples, with the
first ``warmup`` optimizer steps left out.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

# ---------------------------------------------------------------- instruments


@dataclass(frozen=True)
class BatchCount:
    samples: int
    real_tokens: int
    padded_tokens: int
    sum_sq_lengths: int = 0  # sum over sequences of (real length)^2, for the attention FLOPs


class CountingCollator:
    """Wraps a collator; records (samples, real tokens, padded tokens) per batch, in order."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.collator = collator
        self.batches: list[BatchCount] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        input_ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        padded = int(input_ids.numel())
        if mask is not None:
            lengths = mask.sum(dim=1)
            real, sum_sq = int(lengths.sum()), int((lengths * lengths).sum())
        else:
            real, sum_sq = padded, int(input_ids.shape[0]) * int(input_ids.shape[1]) ** 2
        self.batches.append(BatchCount(int(input_ids.shape[0]), real, padded, sum_sq))
        return batch


class StepTimer(TrainerCallback):
    """Marks the start of training, the end of each optimizer step, and the end of each
    evaluation run during training (whose time is then left out of the next step).

    Besides the per-step marks it takes two synchronized wall-clock readings, at the end of
    the last warmup step and at the end of the last step: the timed window on the host's
    clock, a check on the CUDA events over exactly the same steps.  Both sit on the window's
    edges, so neither synchronization falls inside a timed step."""

    def __init__(self, use_cuda: bool, warmup: int = 0):
        self.use_cuda = use_cuda
        self.warmup = warmup
        self._marks: list[tuple[str, Any]] = []  # ("begin" | "step" | "eval", event or time)
        self._evals: list[tuple[int, int, dict[str, float]]] = []  # (mark index, global step, metrics)
        self._training = False
        self._wall: dict[int, float] = {}  # global step -> synchronized perf_counter at its end

    def _mark(self, kind: str) -> None:
        if self.use_cuda:
            import torch

            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append((kind, event))
        else:
            self._marks.append((kind, time.perf_counter()))

    def on_train_begin(self, args, state, control, **kwargs):
        self._marks, self._evals, self._training, self._wall = [], [], True, {}
        self._mark("begin")
        if self.warmup == 0:
            self._synchronized_wall(0)

    def _synchronized_wall(self, step: int) -> None:
        if self.use_cuda:
            import torch

            torch.cuda.synchronize()
        self._wall[step] = time.perf_counter()

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

    def _gaps(self) -> list[float]:
        """Seconds from each mark to the next.  Synchronizes once on a GPU."""
        if self.use_cuda:
            self._marks[-1][1].synchronize()
            return [a.elapsed_time(b) / 1000.0 for (_, a), (_, b) in zip(self._marks, self._marks[1:])]
        return [b - a for (_, a), (_, b) in zip(self._marks, self._marks[1:])]

    def step_seconds(self) -> list[float]:
        """Duration of each optimizer step, in order; evaluation time is not in any step."""
        if len(self._marks) < 2:
            return []
        return [gap for gap, (kind, _) in zip(self._gaps(), self._marks[1:]) if kind == "step"]

    def eval_curve(self) -> list[dict[str, float]]:
        """Each evaluation during training: the training seconds before it (evaluations
        left out), its optimizer step, and its metrics."""
        if not self._evals:
            return []
        gaps = self._gaps()
        curve = []
        for index, step, metrics in self._evals:
            trained = sum(gap for gap, (kind, _) in zip(gaps[:index], self._marks[1 : index + 1]) if kind == "step")
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            curve.append({"train_seconds": trained, "step": step, **numbers})
        return curve


class ProgressCallback(TrainerCallback):
    """Tells the parent process the phase and the last finished optimizer step: one memory
    write per step into the launcher's board (``launch/progress.py``), no I/O, no sync."""

    def __init__(self, board: Any):
        self.board = board

    def on_train_begin(self, args, state, control, **kwargs):
        self.board.phase("training")

    def on_step_end(self, args, state, control, **kwargs):
        self.board.step(state.global_step)

    def on_evaluate(self, args, state, control, **kwargs):
        self.board.phase("training")  # an evaluation during training is over: training again


class Sampler:
    """Polls ``read()`` every ``interval_s`` in a daemon thread and once more at the end;
    keeps every reading that is not None (process RSS here; ``nvml.NvmlSampler`` reads the GPU
    through one)."""

    def __init__(self, read: Callable[[], Any], interval_s: float = 0.1, name: str = "harness-sampler"):
        self.read = read
        self.interval_s = interval_s
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while True:
            value = self.read()
            if value is not None:
                self.samples.append(value)
            if self._stop.wait(self.interval_s):
                break

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        value = self.read()  # one last reading, so a short region still has one
        if value is not None:
            self.samples.append(value)

    @property
    def peak(self) -> float | None:
        return max(self.samples) if self.samples else None


def process_rss_bytes() -> float | None:
    """Resident set size of this process (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return float(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------- arithmetic


class MeasurementError(RuntimeError):
    """The samples cannot give a figure (too few steps, mismatched counts)."""


def group_batches(batches: Sequence[BatchCount], steps: int, accumulation: int) -> list[BatchCount]:
    """Sum consecutive batches into optimizer steps; extra batches (prefetched) are dropped."""
    needed = steps * accumulation
    if len(batches) < needed:
        raise MeasurementError(
            f"{steps} optimizer steps of {accumulation} batch(es) need {needed} counted batches, "
            f"but the collator counted {len(batches)} (dataloader workers collate out of this process?)"
        )
    grouped = []
    for i in range(steps):
        chunk = batches[i * accumulation : (i + 1) * accumulation]
        grouped.append(
            BatchCount(
                sum(b.samples for b in chunk),
                sum(b.real_tokens for b in chunk),
                sum(b.padded_tokens for b in chunk),
                sum(b.sum_sq_lengths for b in chunk),
            )
        )
    return grouped


def summarize_training(
    step_seconds: Sequence[float],
    batches: Sequence[BatchCount],
    *,
    warmup: int,
    accumulation: int = 1,
) -> dict[str, float | int]:
    """Throughput figures over the steps after the first ``warmup``.

    ``step_seconds[i]`` is the duration of optimizer step ``i``; ``batches`` are the
    collated batches in the order the steps consumed them.
    """
    steps = len(step_seconds)
    if steps <= warmup:
        raise MeasurementError(f"{steps} optimizer steps ran, but {warmup} are warmup: no step is left to time")
    per_step = group_batches(batches, steps, accumulation)
    timed_seconds = list(step_seconds[warmup:])
    timed = per_step[warmup:]
    seconds = math.fsum(timed_seconds)
    if seconds <= 0:
        raise MeasurementError(f"the timed steps took {seconds} s; the clock is broken")
    samples = sum(b.samples for b in timed)
    real = sum(b.real_tokens for b in timed)
    padded = sum(b.padded_tokens for b in timed)
    all_real = sum(b.real_tokens for b in per_step)
    all_padded = sum(b.padded_tokens for b in per_step)
    return {
        "train_steps": steps,
        "timing_warmup_steps": warmup,
        "timed_steps": len(timed_seconds),
        "timed_seconds": seconds,
        "timed_samples": samples,
        "timed_real_tokens": real,
        "timed_sum_sq_lengths": sum(b.sum_sq_lengths for b in timed),
        "train_samples_per_s": samples / seconds,
        "train_steps_per_s": len(timed_seconds) / seconds,
        "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": padded / seconds,
        "padding_efficiency": real / padded if padded else float("nan"),
        "train_real_tokens": all_real,
        "train_padded_tokens": all_padded,
        "step_time_median_s": statistics.median(timed_seconds),
        "step_time_mean_s": statistics.fmean(timed_seconds),
        "step_time_stdev_s": statistics.stdev(timed_seconds) if len(timed_seconds) > 1 else 0.0,
    }
