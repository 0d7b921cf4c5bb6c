"""Two result sets side by side: a hardware, library or code change, cell by cell.

    python -m harness compare OLD NEW [--format table|markdown|csv] [--fail-on regression]

Each side is a run folder, a results folder, a folder of cell documents or a
``--benchmark-json`` file (``sides.py``).  Cells are matched by id (their spec); each pair
is judged with the gate's own rules (threshold and noise; quality band), so "slower" here
means what a regression means in the nightly run.  ``compare_text.py`` writes it out.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..judge.gate import env_changes, judge, noise_of
from ..judge.thresholds import relative_limit
from ..judge.verdict import Verdict
from ..measure.vocabulary import PEAK_MEMORY, QUALITY, THROUGHPUT
from ..results import CellResult
from ..spec import CellSpec, recipe_changes
from .sides import Side
from .tables import peak_memory

# ---------------------------------------------------------------- the comparison


def figure(result: CellResult, name: str) -> float | None:
    if name in QUALITY and result.spec.weights == "random":
        return None  # chance level (always the majority label): not a result
    value = peak_memory(result)[1] if name == PEAK_MEMORY else result.metrics.get(name)
    return None if value is None else float(value)


@dataclass
class Row:
    cell_id: str
    old: CellResult
    new: CellResult
    verdict: str  # faster, slower, unchanged, inconclusive, more memory, quality out of band, not comparable
    detail: str = ""
    noise: float | None = None  # the two sides' relative noise of samples/s, combined
    interval: tuple[float, float] | None = None  # of new/old samples/s, from the repeats (both sides >= 5)

    def ratio(self, name: str) -> float | None:
        a, b = figure(self.old, name), figure(self.new, name)
        return b / a if a and b is not None else None


@dataclass
class Comparison:
    old: Side
    new: Side
    rows: list[Row] = field(default_factory=list)

    @property
    def only_old(self) -> list[str]:
        return sorted(set(self.old.results) - set(self.new.results))

    @property
    def only_new(self) -> list[str]:
        return sorted(set(self.new.results) - set(self.old.results))

    @property
    def env_changes(self) -> list[str]:
        return env_changes(self.old.env, self.new.env)

    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict in ("slower", "quality out of band", "more memory")]


def compare(old: Side, new: Side) -> Comparison:
    comparison = Comparison(old, new)
    for cell_id in sorted(set(old.results) & set(new.results)):
        a, b = old.results[cell_id], new.results[cell_id]
        if not (a.ok and b.ok):
            comparison.rows.append(Row(cell_id, a, b, "not comparable", f"status {a.status} / {b.status}"))
            continue
        # The thresholds each result was produced under travel in its spec (the matrix's
        # [defaults] and the cell's own): the new side's, layered over the old side's, as
        # the gate judged them, so compare and the nightly gate cannot disagree.
        verdict = judge(b, a, matrix_thresholds=a.spec.thresholds)
        changes = recipe_changes(a.spec, b.spec)
        notes = [f"recipe differs: {', '.join(changes)}"] if changes else []
        row = Row(cell_id, a, b, word_of(verdict), "")
        word, why = speed_verdict(row, row.verdict, relative_limit(b.spec.thresholds))
        row.verdict = word
        row.detail = "; ".join(notes + ([why] if why else []) + [f.line() for f in verdict.regressions()])
        comparison.rows.append(row)
    return comparison


# The gate's regressions by kind, the worst first, as compare words them.
WORSE_WORDS = {"quality": "quality out of band", "speed": "slower", "memory": "more memory"}


def word_of(verdict: Verdict) -> str:
    """The gate's verdict of the new side against the old, in compare's words."""
    kinds = {f.kind for f in verdict.regressions()}
    worse = [word for kind, word in WORSE_WORDS.items() if kind in kinds]
    if worse:
        return worse[0]
    faster = any(f.verdict == "improvement" and f.kind == "speed" for f in verdict.findings)
    return "faster" if faster else "unchanged"


def repeat_values(result: CellResult, metric: str = THROUGHPUT) -> list[float]:
    return [float(r[metric]) for r in result.samples.get("repeats") or [] if isinstance(r.get(metric), (int, float))]


def speed_verdict(row: Row, word: str, limit: float) -> tuple[str, str]:
    """The samples/s verdict with the noise in view.  With five repeats or more a side, the
    A/B interval decides (``upgrade/ab.py``: faster, slower, unchanged, inconclusive); else
    the gate's word stands, except that ``unchanged`` becomes ``inconclusive`` where the
    two sides' noise is wider than the threshold: it cannot tell a change of that size."""
    a, b = repeat_values(row.old), repeat_values(row.new)
    noises = [noise_of(r, THROUGHPUT) for r in (row.old, row.new)]
    row.noise = math.sqrt(sum(n * n for n in noises)) if any(noises) else None
    if word in ("quality out of band", "more memory"):
        return word, ""
    if len(a) >= 5 and len(b) >= 5:
        from ..upgrade.ab import ratio_interval, verdict_of

        ratio = ratio_interval(a, b)
        row.interval = (ratio.low, ratio.high)
        found = verdict_of(ratio, limit, higher_is_better=True)
        return found, (f"new/old {ratio.estimate:.3f} [{ratio.low:.3f}, {ratio.high:.3f}] "
                       f"({ratio.confidence:.0%} interval over {len(a)}+{len(b)} repeats, threshold {limit:.0%})")
    if word == "unchanged" and row.noise is not None and row.noise > limit:
        return "inconclusive", (f"noise {row.noise:.0%} is wider than the {limit:.0%} threshold: "
                                "a change of that size cannot be told from noise (measure with --repeats 5)")
    return word, ""


# ---------------------------------------------------------------- by axis


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else math.nan


AXES = ("precision", "padding", "batch_size")
AXIS_REFERENCE = {"precision": "fp32", "padding": "max_length", "batch_size": None}


def by_axis(comparison: Comparison) -> list[list[str]]:
    """Geometric-mean NEW/OLD throughput per axis value, and within each side each value's
    speedup over the axis's reference value (bf16 over fp32, dynamic over max_length)."""
    rows = []
    for axis in AXES:
        groups: dict[Any, list[float]] = defaultdict(list)
        for row in comparison.rows:
            ratio = row.ratio(THROUGHPUT)
            if ratio is not None:
                groups[getattr(row.new.spec, axis)].append(ratio)
        for value, ratios in sorted(groups.items(), key=lambda kv: str(kv[0])):
            old_speedup = _speedup_within(comparison.old, axis, value)
            new_speedup = _speedup_within(comparison.new, axis, value)
            rows.append([
                axis, str(value), f"{geomean(ratios):.3f}x", str(len(ratios)),
                _fmt_x(old_speedup), _fmt_x(new_speedup),
            ])
    return rows


def _fmt_x(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def _speedup_within(side: Side, axis: str, value: Any) -> float | None:
    reference = AXIS_REFERENCE[axis]
    if reference is None or value == reference:
        return None
    ratios = []
    for result in side.results.values():
        if not result.ok or getattr(result.spec, axis) != value:
            continue
        twin_id = _with_axis(result.spec, axis, reference)
        twin = side.results.get(twin_id)
        if twin is not None and twin.ok and figure(twin, THROUGHPUT):
            ratios.append(figure(result, THROUGHPUT) / figure(twin, THROUGHPUT))
    return geomean(ratios) if ratios else None


def _with_axis(spec: CellSpec, axis: str, value: Any) -> str:
    from dataclasses import replace

    return replace(spec, **{axis: value}).id
