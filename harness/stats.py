"""Repeats of one cell folded into one result: the median of each figure and its spread.

Pure functions over raw values; nothing here runs a cell.  A cell measured N times (the
``--repeats`` and ``--seeds`` modes, and the confirmation runs) keeps every repeat's
figures in ``samples["repeats"]``; ``metrics`` holds the medians, and for every figure
``noise[name]`` is its relative spread, ``(max - min) / median``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .results import CellResult

# Figures that describe the run rather than measure it: not medians, not gated.
_DESCRIPTIVE = {"train_steps", "timing_warmup_steps", "timed_steps", "timed_samples", "train_samples", "eval_samples"}
QUALITY_METRICS = ("eval_accuracy", "eval_f1")


def relative_spread(values: Sequence[float]) -> float:
    """(max - min) / |median|; 0.0 for a single value."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return (max(values) - min(values)) / abs(mid) if mid else math.inf


def within_run_noise(step_seconds: Sequence[float], warmup: int) -> float:
    """Relative standard error of the mean step time: a floor for a single repeat's noise.

    Run-to-run noise is usually larger than this; it is what a single repeat can tell.
    """
    timed = list(step_seconds[warmup:])
    if len(timed) < 2:
        return 0.0
    return 2 * statistics.stdev(timed) / math.sqrt(len(timed)) / statistics.fmean(timed)


def fold(results: Sequence[CellResult]) -> CellResult:
    """One result from several repeats of the same cell (all ``ok``)."""
    if not results:
        raise ValueError("no repeats to fold")
    ok = [r for r in results if r.ok]
    if len(ok) != len(results):
        return next(r for r in results if not r.ok)
    first = ok[0]
    names = [k for k, v in first.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics: dict[str, Any] = dict(first.metrics)
    noise: dict[str, float] = {}
    for name in names:
        values = [r.metrics.get(name) for r in ok]
        values = [v for v in values if isinstance(v, (int, float))]
        if not values:
            continue
        if name not in _DESCRIPTIVE:
            metrics[name] = statistics.median(values)
        noise[name] = relative_spread(values)
    single = within_run_noise(first.samples.get("step_seconds", []), first.spec.timing_warmup_steps)
    for name in ("train_samples_per_s", "train_steps_per_s", "real_tokens_per_s", "padded_tokens_per_s"):
        if name in noise:
            noise[name] = max(noise[name], single if len(ok) == 1 else 0.0)
    seeds = sorted({r.spec.seed for r in ok})
    for name in QUALITY_METRICS:
        values = [r.metrics[name] for r in ok if isinstance(r.metrics.get(name), (int, float))]
        if len(values) >= 2 and len(seeds) >= 2:
            metrics[f"{name}_mean"] = statistics.fmean(values)
            metrics[f"{name}_std"] = statistics.stdev(values)
    samples = dict(first.samples)
    samples["repeats"] = [
        {"seed": r.spec.seed, **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float))}} for r in ok
    ]
    samples["noise"] = noise
    metrics["repeats"] = len(ok)
    spec = first.spec if len(seeds) == 1 else replace(first.spec, seed=min(seeds))
    return replace(first, spec=spec, metrics=metrics, samples=samples, finished_at=ok[-1].finished_at)
