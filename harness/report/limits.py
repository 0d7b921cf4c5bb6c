"""The relative change a cell's threshold allows, for the verdicts that need one number:
``compare``'s noise check and A/B interval, and ``ab``'s interval (``upgrade/ab.py``)."""

from __future__ import annotations

from ..judge.thresholds import DEFAULT_THRESHOLDS, resolve_thresholds
from ..measure.vocabulary import THROUGHPUT
from ..spec import CellSpec

FALLBACK_LIMIT = 0.05  # where the figure's threshold is absolute, or there is none


def relative_limit(spec: CellSpec, metric: str = THROUGHPUT) -> float:
    """The cell's relative threshold for ``metric`` (0.05 for 5%): its own thresholds over
    the defaults; a figure without one takes samples/s's."""
    thresholds = resolve_thresholds(DEFAULT_THRESHOLDS, spec.thresholds)
    threshold = thresholds.get(metric) or thresholds.get(THROUGHPUT)
    return threshold.limit if threshold is not None and threshold.relative else FALLBACK_LIMIT
