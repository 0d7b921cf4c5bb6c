"""Regression thresholds as short expressions, parsed and checked up front.

::

    train_samples_per_s:-5%        a fall of more than 5% is a regression
    peak_mem_reserved_bytes:+5%    a rise of more than 5% is a regression
    peak_mem_reserved_bytes:+512MiB   absolute forms: units of the metric, or bytes with KiB/MiB/GiB
    train_samples_per_s:-2.5       a fall of more than 2.5 samples/s

The sign says which way is bad, and must agree with the metric: throughput falls,
memory and time rise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..measure.vocabulary import (
    ALLOCATED,
    DEVICE_USED,
    GATED,
    RESERVED,
    RSS,
    SAMPLES_TO_QUALITY,
    THROUGHPUT,
    TIME_TO_QUALITY,
)

# metric -> the direction that is bad (-1: a fall, +1: a rise), from the vocabulary
GATED_METRICS = GATED

# Every measured execution runs in a fresh process, so process RSS (sampled during
# training) is the cell's own and is gated like the GPU allocator's peaks.
DEFAULT_THRESHOLDS: tuple[str, ...] = (
    f"{THROUGHPUT}:-5%",
    f"{RSS}:+10%",
    f"{ALLOCATED}:+5%",
    f"{RESERVED}:+5%",
    f"{DEVICE_USED}:+5%",
    # full fine-tunes: an epoch more to reach the quality target (evaluations are per epoch)
    f"{TIME_TO_QUALITY}:+50%",
    f"{SAMPLES_TO_QUALITY}:+50%",
)

_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_PATTERN = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*:\s*([+-])\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(%|B|KiB|MiB|GiB)?\s*$")

FORMAT_HELP = (
    "write METRIC:-N% (a fall of more than N% is a regression), METRIC:+N% (a rise), or an absolute "
    "METRIC:-X / METRIC:+X (units of the metric; KiB, MiB, GiB for bytes)"
)


class ThresholdError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    metric: str
    bad_direction: int  # -1: a fall is bad; +1: a rise is bad
    limit: float  # a fraction when relative, else in the metric's units
    relative: bool
    text: str

    @classmethod
    def parse(cls, text: str) -> Threshold:
        if not isinstance(text, str):
            raise ThresholdError(f"threshold {text!r} is not a string; {FORMAT_HELP}")
        match = _PATTERN.match(text)
        if not match:
            raise ThresholdError(f"threshold {text!r} is malformed; {FORMAT_HELP}")
        metric, sign, number, unit = match.groups()
        unit = unit or ""
        if metric not in GATED_METRICS:
            raise ThresholdError(f"threshold {text!r}: `{metric}` is not a gated metric; allowed: {sorted(GATED_METRICS)}")
        direction = -1 if sign == "-" else +1
        if direction != GATED_METRICS[metric]:
            good = "rise" if direction == +1 else "fall"
            want = "+" if GATED_METRICS[metric] > 0 else "-"
            raise ThresholdError(
                f"threshold {text!r}: a {good} of `{metric}` is an improvement, not a regression; "
                f"write {metric}:{want}{number}{unit}"
            )
        if unit not in ("", "%") and not metric.endswith("_bytes"):
            raise ThresholdError(f"threshold {text!r}: byte units apply to *_bytes metrics only")
        value = float(number)
        relative = unit == "%"
        limit = value / 100 if relative else value * _UNITS[unit]
        return cls(metric, direction, limit, relative, text.strip())

    def describe(self) -> str:
        return self.text


def resolve_thresholds(*layers: Iterable[str]) -> dict[str, Threshold]:
    """Later layers override earlier ones metric by metric (defaults, matrix, cell)."""
    out: dict[str, Threshold] = {}
    for layer in layers:
        for text in layer:
            threshold = Threshold.parse(text)
            out[threshold.metric] = threshold
    return out


FALLBACK_LIMIT = 0.05  # where the figure's threshold is absolute, or there is none


def relative_limit(thresholds: Iterable[str], metric: str = THROUGHPUT) -> float:
    """The relative change a cell's thresholds (``CellSpec.thresholds``) allow for ``metric``,
    over the defaults (0.05 for 5%), for the verdicts that need one number: compare's noise
    check and A/B interval, and ab's interval; a figure without one takes samples/s's."""
    resolved = resolve_thresholds(DEFAULT_THRESHOLDS, thresholds)
    threshold = resolved.get(metric) or resolved.get(THROUGHPUT)
    return threshold.limit if threshold is not None and threshold.relative else FALLBACK_LIMIT
