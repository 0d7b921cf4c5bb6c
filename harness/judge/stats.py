"""Repeats of one cell folded into one result: the median of each figure and its spread.

Pure functions over raw values; nothing here runs a cell.  A cell measured N times (the
``--repeats`` and ``--seeds`` modes, and the confirmation runs) keeps every repeat's
figures and raw step samples in ``samples["repeats"]``; ``metrics`` holds the figures of
the median repeat (by samples/s), so the headline can be derived again from stored raw
data, and for every figure ``noise[name]`` is its relative spread, ``(max - min) / median``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..measure.vocabulary import QUALITY, THROUGHPUT, TRAINING_RATES
from ..results import CellResult

QUALITY_METRICS = QUALITY


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


RAW_SAMPLES = ("step_seconds", "step_samples", "step_real_tokens", "step_padded_tokens", "step_losses")


def loss_determinism(curves: Sequence[Sequence[Sequence[float]]]) -> float | None:
    """The largest relative difference between repeats' loss curves at the same step
    (``(max - min) / |median|`` per step, the largest over the steps every repeat has): 0.0
    where the kernels are deterministic; None with fewer than two curves or a non-finite loss."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, loss in curve:
            by_step.setdefault(int(step), []).append(float(loss))
    shared = [values for values in by_step.values() if len(values) == len(curves)]
    if len(curves) < 2 or not shared or any(not math.isfinite(v) for values in shared for v in values):
        return None
    return max(relative_spread(values) for values in shared)
HEADLINE_METRIC = THROUGHPUT


def headline_index(results: Sequence[CellResult]) -> int:
    """The repeat whose figures stand for the cell: the median by samples/s (the lower
    median for an even count), so every headline figure comes from one real measurement
    and can be derived again from that repeat's raw samples."""
    values = [r.metrics.get(HEADLINE_METRIC) for r in results]
    if len(results) < 2 or any(not isinstance(v, (int, float)) for v in values):
        return 0
    order = sorted(range(len(results)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


def fold(results: Sequence[CellResult]) -> CellResult:
    """One result from several repeats of the same cell (all ``ok``).

    ``metrics`` and the raw ``samples`` are the headline repeat's (``headline_index``);
    ``samples["repeats"]`` keeps every repeat's figures and raw step samples;
    ``samples["noise"]`` the relative spread of each figure over the repeats.
    """
    if not results:
        raise ValueError("no repeats to fold")
    ok = [r for r in results if r.ok]
    if len(ok) != len(results):
        return next(r for r in results if not r.ok)
    head = ok[headline_index(ok)]
    first = ok[0]
    names = [k for k, v in head.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics: dict[str, Any] = dict(head.metrics)
    noise: dict[str, float] = {}
    for name in names:
        values = [r.metrics.get(name) for r in ok]
        values = [v for v in values if isinstance(v, (int, float))]
        if values:
            noise[name] = relative_spread(values)
    single = within_run_noise(head.samples.get("step_seconds", []), head.spec.timing_warmup_steps)
    for name in TRAINING_RATES:
        if name in noise:
            noise[name] = max(noise[name], single if len(ok) == 1 else 0.0)
    seeds = sorted({r.spec.seed for r in ok})
    for name in QUALITY_METRICS:
        values = [r.metrics[name] for r in ok if isinstance(r.metrics.get(name), (int, float))]
        if len(values) >= 2 and len(seeds) >= 2:
            metrics[f"{name}_mean"] = statistics.fmean(values)
            metrics[f"{name}_std"] = statistics.stdev(values)
    if len(ok) >= 2 and len(seeds) == 1:  # the same seed again: how deterministic the loss curve is
        determinism = loss_determinism([r.samples["step_losses"] for r in ok if r.samples.get("step_losses")])
        if determinism is not None and all(r.samples.get("step_losses") for r in ok):
            metrics["loss_determinism"] = determinism
    samples = dict(head.samples)
    samples["repeats"] = [
        {
            "seed": r.spec.seed,
            **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float))},
            "raw": {k: r.samples[k] for k in RAW_SAMPLES if k in r.samples},
            "launch": r.samples.get("launch"),
        }
        for r in ok
    ]
    samples["headline_repeat"] = ok.index(head)
    samples["noise"] = noise
    metrics["repeats"] = len(ok)
    spec = head.spec if len(seeds) == 1 else replace(head.spec, seed=min(seeds))
    return replace(first, spec=spec, metrics=metrics, samples=samples, finished_at=ok[-1].finished_at,
                   provenance=head.provenance, env=head.env)
