"""What is measured during a cell, and the pure arithmetic that turns samples into figures.

Three instruments, each kept out of the hot path:

* ``CountingCollator`` wraps the training collator and records, per batch, the samples,
  the real (attended) tokens and the padded tokens.  It runs on the CPU tensors the
  collator builds, before anything reaches the device, so it never synchronizes.
* ``StepTimer`` (``steps.py``) is a ``TrainerCallback`` that marks the phases and the end of
  every optimizer step: a CUDA event on a GPU (read, with one synchronize, after training),
  ``perf_counter`` on a CPU.  Nothing else happens per step.
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
