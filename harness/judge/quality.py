"""Quality against its band, and the time a full fine-tune takes to reach it.

Quality is held against a band.  Its centre is the published reference of the same split
and metric where one exists (``references.py``), else the cell's own multi-seed baseline
mean, else its single-seed baseline; its width is ``QUALITY_BAND_STD`` standard deviations
of the measured seed spread (the baseline's, else this run's, else the published MRPC
spread, said so).  Only a fall
below the band fails: a better score than the reference is not a regression.

Time to quality (``quality_time_figures``): the training seconds, and samples, until accuracy
and F1 (those gated) have both first reached their band, at the evaluations during training;
gated like speed against history or the baseline (``time_to_quality_s:+50%``,
``samples_to_quality:+50%``: evaluations come once an epoch, so a regression is an epoch more).
"""

from __future__ import annotations

import math
from typing import Any

from ..measure.vocabulary import SAMPLES_TO_QUALITY, TIME_TO_QUALITY
from ..results import CellResult
from .references import PUBLISHED_SEED_STD_POINTS, PUBLISHED_SEED_STD_SOURCE, gating_reference, references_for
from .stats import QUALITY_METRICS
from .verdict import Finding

QUALITY_BAND_STD = 2.0


def _points(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(f"{name}_mean", metrics.get(name))
    return None if value is None else 100.0 * float(value)


def _seed_std(metrics: dict[str, Any], name: str) -> float | None:
    std = metrics.get(f"{name}_std")
    return None if std is None else 100.0 * float(std)


def quality_findings(current: CellResult, baseline: CellResult | None) -> list[Finding]:
    if not current.spec.full_finetune:
        return []
    spec = current.spec
    findings = []
    for name in QUALITY_METRICS:
        short = name.removeprefix("eval_")
        value = _points(current.metrics, name)
        if value is None:
            continue
        ref = gating_reference(spec.checkpoint, spec.task, short, split="dev")
        std, std_source = None, ""
        if baseline is not None and _seed_std(baseline.metrics, name) is not None:
            std, std_source = _seed_std(baseline.metrics, name), f"baseline's {baseline.metrics.get('repeats')} seeds"
        elif _seed_std(current.metrics, name) is not None:
            std, std_source = _seed_std(current.metrics, name), f"this run's {current.metrics.get('repeats')} seeds"
        if ref is not None:
            centre, centre_source = ref.value, f"{ref.model} {ref.split} {short} {ref.value} ({ref.source})"
        elif baseline is not None and _seed_std(baseline.metrics, name) is not None:
            centre, centre_source = _points(baseline.metrics, name), f"own {baseline.metrics.get('repeats')}-seed baseline mean"
        elif baseline is not None and _points(baseline.metrics, name) is not None:  # one seed: its spread is published
            centre = _points(baseline.metrics, name)
            centre_source = f"own single-seed baseline (seed {baseline.spec.seed})"
        else:
            others = [
                f"{r.split} {r.metric} {r.value} ({r.source})"
                for r in references_for(spec.checkpoint, spec.task)
                if r.metric == short
            ]
            why = "no dev-split reference and no baseline (run --seeds N --update-baselines)"
            if others:
                why += "; published for another split, not gated: " + ", ".join(others)
            findings.append(Finding(name, "quality", "unchecked", value, note=f"{name} {value:.2f}: {why}", basis="none"))
            continue
        if std is None:
            std, std_source = PUBLISHED_SEED_STD_POINTS, f"published spread: {PUBLISHED_SEED_STD_SOURCE}"
        lower = centre - QUALITY_BAND_STD * std
        distance = value - centre
        sigmas = distance / std if std > 0 else math.inf
        verdict = "regression" if value < lower else "pass"
        reached = time_to_quality(current.samples.get("eval_curve") or [], name, lower)
        note = (
            f"{name} {value:.2f} is {distance:+.2f} points ({sigmas:+.1f} std) from {centre_source}; "
            f"band >= {lower:.2f} ({QUALITY_BAND_STD:g} x std {std:.2f}, {std_source})"
        )
        if reached is not None:
            note += f"; reached the band after {reached:.1f} s of training"
        findings.append(Finding(name, "quality", verdict, value, centre, distance, f">= {lower:.2f}", std, note,
                                basis="band"))
    return findings


def first_reached(curve: list[dict[str, Any]], lower: dict[str, float]) -> dict[str, Any] | None:
    """The first evaluation of ``curve`` at which every metric of ``lower`` had reached its
    lower edge (in points), or None."""
    for point in curve:
        if all(isinstance(point.get(name), (int, float)) and 100.0 * point[name] >= target
               for name, target in lower.items()):
            return point
    return None


def time_to_quality(curve: list[dict[str, Any]], metric: str, lower_points: float) -> float | None:
    """Training seconds (evaluations left out) until ``metric`` first reached ``lower_points``."""
    point = first_reached(curve, {metric: lower_points})
    return None if point is None else float(point["train_seconds"])


def quality_time_figures(current: CellResult, quality: list[Finding]) -> dict[str, float]:
    """``time_to_quality_s`` and ``samples_to_quality`` of a full fine-tune: the training seconds
    and samples until the first evaluation during training where every gated quality figure
    (``quality``: their band findings) had reached its band; nothing where none is gated or the
    curve never reaches it."""
    curve = current.samples.get("eval_curve") or []
    lower = {f.metric: f.baseline - QUALITY_BAND_STD * f.noise for f in quality
             if f.basis == "band" and f.baseline is not None and f.noise is not None}
    point = first_reached(curve, lower) if current.spec.full_finetune and lower else None
    if point is None:
        return {}
    step_samples = current.samples.get("step_samples") or []
    return {TIME_TO_QUALITY: float(point["train_seconds"]),
            SAMPLES_TO_QUALITY: float(sum(step_samples[: int(point["step"])]))}
