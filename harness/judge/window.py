"""History as the baseline: a cell's last good runs, and the interval a new night must fall in.

For one cell, metric and hardware key the window is the last ``size`` good runs under the
same recipe: ``ok`` results whose verdict was not a regression, an error, a suspect night
or disturbed, taken after the cell's last accepted change (``accept.py``).  A new value is
judged against the window's *prediction interval*: the range a further draw from the same
level falls in with the given confidence, ``mean +/- t(1 - a/2, n-1) * s * sqrt(1 + 1/n)``
(Student-t, as Bencher's t-test threshold does).  Judging a level rather than one stored
figure lets the relative threshold be small without crying wolf: a night is a regression
only when it is past the threshold *and* outside the interval.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..results import CellResult
from ..spec import recipe_changes
from ..store import Store, open_store

DEFAULT_WINDOW = 20
MIN_POINTS = 5
DEFAULT_CONFIDENCE = 0.99
LEFT_OUT = ("regression", "error", "disturbed", "suspect")


@dataclass(frozen=True)
class Interval:
    """A prediction interval from ``n`` values."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def relative_half_width(self) -> float:
        return (self.high - self.mean) / abs(self.mean) if self.mean else math.inf


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def prediction_interval(
    values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE, *, min_std: float = 0.0, draws: int = 1
) -> Interval:
    """Two-sided Student-t prediction interval for the mean of ``draws`` more draws (one by
    default); needs two values or more.  ``min_std`` floors the spread (a history of
    identical copies has none to show)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a prediction interval needs at least 2 values, got {n}")
    mean = statistics.fmean(values)
    std = max(statistics.stdev(values), min_std)
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * std * math.sqrt(1 / draws + 1 / n)
    return Interval(n, mean, std, mean - half, mean + half, confidence)


@dataclass
class Window:
    """The good runs of one cell on one hardware key, oldest first."""

    cell_id: str
    hardware_key: str
    runs: list[CellResult] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # why runs were left out, and how many
    accepted_from: str | None = None  # the run the current segment starts at

    def values(self, metric: str) -> list[float]:
        out = []
        for r in self.runs:
            v = r.metrics.get(metric)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out

    def interval(self, metric: str, confidence: float = DEFAULT_CONFIDENCE, draws: int = 1) -> Interval | None:
        """The prediction interval of the window's values.  Its spread is at least what the
        runs measured of themselves: the median of their recorded relative noise (the spread
        of their repeats, or for one repeat twice the standard error of its mean step time,
        see ``stats.py``), taken as one night's standard deviation, so a history of
        near-identical nights (a run cloned, a quiet week) is never narrower than one night
        can measure."""
        values = self.values(metric)
        if len(values) < 2:
            return None
        own = [float((r.samples.get("noise") or {}).get(metric) or 0.0) for r in self.runs]
        floor = statistics.median(own) * abs(statistics.fmean(values)) if own else 0.0
        return prediction_interval(values, confidence, min_std=floor, draws=draws)

    def describe(self) -> str:
        first, last = (self.runs[0].run_id, self.runs[-1].run_id) if self.runs else ("-", "-")
        text = f"history of {len(self.runs)} good runs ({first} .. {last})"
        if self.accepted_from:
            text += f", since the change accepted at {self.accepted_from}"
        return text


def cell_documents(store: Store | str | Path, cell_id: str) -> list[CellResult]:
    """Every stored result of ``cell_id`` in a store (a results folder or a database URL),
    oldest run first.  Unreadable documents are skipped: a corrupt old night must not stop
    tonight's gate."""
    if not isinstance(store, Store):
        store = open_store(store)
    return store.results(cell_id)


def build_window(
    history: Iterable[CellResult],
    current: CellResult,
    *,
    size: int = DEFAULT_WINDOW,
    accepted_from: str | None = None,
) -> Window:
    """The last ``size`` good runs of ``current``'s cell before it, same hardware key and
    recipe, from ``accepted_from`` on."""
    window = Window(current.id, current.env.get("hardware_key", ""), accepted_from=accepted_from)
    good: list[CellResult] = []

    def leave(why: str) -> None:
        window.left_out[why] = window.left_out.get(why, 0) + 1

    for r in history:
        if r.run_id == current.run_id:
            continue
        if accepted_from is not None and r.run_id < accepted_from:
            leave("before the accepted change")
            continue
        if r.env.get("hardware_key") != window.hardware_key:
            continue  # another machine class: not this cell's history here
        if not r.ok:
            leave(r.status)
            continue
        verdict = r.verdict_word
        if verdict in LEFT_OUT:
            leave(verdict)
            continue
        if recipe_changes(r.spec, current.spec):
            leave("another recipe")
            continue
        good.append(r)
    window.runs = good[-size:] if size > 0 else good
    return window


def previous_night(history: Sequence[CellResult], current: CellResult) -> CellResult | None:
    """The last stored result of this cell on this hardware key before ``current``."""
    key = current.env.get("hardware_key")
    earlier = [r for r in history if r.run_id < current.run_id and r.env.get("hardware_key") == key]
    return earlier[-1] if earlier else None


def load_pinned(path: Path) -> bool:
    """Whether a stored baseline file is pinned (``"pinned": true``): it then wins over history."""
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("pinned"))
    except (OSError, ValueError, AttributeError):
        return False
