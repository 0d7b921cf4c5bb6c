"""Where a cell's level changed: ``python -m harness changes [RESULTS_DIR] [--format table|json]``.

For every cell, hardware key and gated figure, the series of its results over all stored
runs (oldest first) goes to ruptures' PELT with a least-squares cost on the series
relative to its median.  The penalty is BIC's, ``2 log(n) sigma^2`` times ``PENALTY_FACTOR``,
with ``sigma`` the noise of one night estimated robustly from the night-to-night
differences (their median absolute deviation), so a noisier cell needs a larger step.
Each candidate change is then checked on the medians of the segments on either side
(robust to a single bad night inside them): a step smaller than ``MIN_STEP`` or than
``MIN_SIGMAS`` nights' noise is dropped and its segments merge, so a one-night outlier is
never a change.  Every change names the first run of the new level, its date and harness
commit, the size of the step, and what differs in the environment between the last run
before and the first after.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..results import CellResult, ResultsError
from ..store import Store, is_url, open_store
from ..store.base import skipped_line
from .causes import change_cause_lines
from .gate import env_changes

METRICS = ("train_samples_per_s", "real_tokens_per_s", "peak_rss_bytes", "peak_mem_reserved_bytes",
           "peak_device_mem_used_bytes", "eval_accuracy", "eval_f1")
MIN_SIZE = 3  # nights on each side of a change
PENALTY_FACTOR = 2.0
MIN_STEP = 0.01  # relative: a change of level under 1% is not reported
MIN_SIGMAS = 3.0  # nor one smaller than this many nights' noise
NOISE_FLOOR = 0.002  # relative: a perfectly flat series still has measurement resolution


@dataclass
class Change:
    cell: str
    metric: str
    hardware_key: str
    first_run: str
    date: str
    harness_commit: str | None
    last_run_before: str
    change: float  # relative step of the median level, after / before - 1
    before: float
    after: float
    noise: float  # one night's relative noise (sigma)
    env_changes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_history(store: Store | str | Path) -> Store:
    """A results folder (which must hold ``runs/``) or a database URL, opened for reading."""
    if isinstance(store, Store):
        return store
    if not is_url(store) and not (Path(store) / "runs").is_dir():
        raise ResultsError(f"{store}: no runs/ folder with stored results")
    return open_store(store)


def load_series(store: Store | str | Path) -> dict[tuple[str, str], list[CellResult]]:
    """Every ``ok`` result by (cell, hardware key), oldest run first, from a results folder
    or a database.  Disturbed cells are left out (their speed is not the code's);
    unreadable documents are skipped, and named in the store's ``unreadable``; a store
    whose every document is unreadable is an error that names the first."""
    store = open_history(store)
    results = store.results()
    if not results and store.unreadable:
        raise ResultsError(f"{store.location}: no readable stored result; {store.skipped_line()}")
    return series_of(results)


def series_of(results: Sequence[CellResult]) -> dict[tuple[str, str], list[CellResult]]:
    """``load_series`` of results already loaded, in run order."""
    out: dict[tuple[str, str], list[CellResult]] = {}
    for r in results:
        if not r.ok or r.verdict_word == "disturbed" or r.metrics.get("disturbed"):
            continue
        out.setdefault((r.id, r.env.get("hardware_key", "")), []).append(r)
    return out


def night_noise(values: Sequence[float]) -> float:
    """One night's noise from night-to-night differences: MAD / 0.6745 / sqrt(2)."""
    diffs = [b - a for a, b in zip(values, values[1:])]
    if len(diffs) < 2:
        return NOISE_FLOOR
    centre = statistics.median(diffs)
    mad = statistics.median(abs(d - centre) for d in diffs)
    return max(mad / 0.6745 / math.sqrt(2), NOISE_FLOOR)


def change_points(values: Sequence[float]) -> tuple[list[int], float]:
    """Indices where a new level starts, and the relative noise used.  ``values`` > 0."""
    import numpy as np
    import ruptures

    n = len(values)
    if n < 2 * MIN_SIZE:
        return [], NOISE_FLOOR
    scale = statistics.median(values)
    if not scale:
        return [], NOISE_FLOOR
    signal = np.asarray(values, dtype=float) / scale
    sigma = night_noise(list(signal))
    penalty = PENALTY_FACTOR * 2 * math.log(n) * sigma**2
    ends = ruptures.Pelt(model="l2", min_size=MIN_SIZE, jump=1).fit(signal.reshape(-1, 1)).predict(pen=penalty)
    starts = [e for e in ends if e < n]
    # Keep only changes whose neighbouring segments' medians differ enough; drop the
    # weakest failing one at a time, so its segments merge before the next is checked.
    while starts:
        bounds = [0, *starts, n]
        steps = []
        for i, start in enumerate(starts):
            before = statistics.median(signal[bounds[i]:start])
            after = statistics.median(signal[start:bounds[i + 2]])
            steps.append(abs(after - before) / before if before else 0.0)
        weakest = min(range(len(starts)), key=lambda i: steps[i])
        if steps[weakest] >= max(MIN_STEP, MIN_SIGMAS * sigma):
            break
        starts.pop(weakest)
    return starts, sigma


def find_changes(results_dir: Store | str | Path | Sequence[CellResult], metrics: Sequence[str] = METRICS) -> list[Change]:
    """Change points in every cell's history: from a store, or from results already loaded."""
    found: list[Change] = []
    series = series_of(results_dir) if isinstance(results_dir, (list, tuple)) else load_series(results_dir)
    for (cell, key), results in sorted(series.items()):
        for metric in metrics:
            points = [(r, float(r.metrics[metric])) for r in results
                      if isinstance(r.metrics.get(metric), (int, float)) and not isinstance(r.metrics.get(metric), bool)
                      and r.metrics[metric] > 0]
            if len(points) < 2 * MIN_SIZE:
                continue
            values = [v for _, v in points]
            starts, sigma = change_points(values)
            bounds = [0, *starts, len(values)]
            for i, start in enumerate(starts):
                before = statistics.median(values[bounds[i]:start])
                after = statistics.median(values[start:bounds[i + 2]])
                first, last = points[start][0], points[start - 1][0]
                found.append(Change(
                    cell=cell, metric=metric, hardware_key=key, first_run=first.run_id,
                    date=first.finished_at or first.started_at, harness_commit=first.env.get("harness_commit"),
                    last_run_before=last.run_id, change=after / before - 1, before=before, after=after,
                    noise=sigma, env_changes=env_changes(last.env, first.env),
                ))
    return found


def render(changes: list[Change], fmt: str = "table", *, skipped: Sequence[str] = ()) -> str:
    """The changes as a table (with a last line naming the documents left out as
    unreadable, if any) or as JSON (which leaves them to the caller: ``skipped_line``)."""
    if fmt == "json":
        return json.dumps([c.to_dict() for c in changes], indent=2) + "\n"
    tail = f"{skipped_line(list(skipped))}\n" if skipped else ""
    if not changes:
        where = "the readable history" if skipped else "any cell's history"
        return f"no change of level in {where}\n" + tail
    from tabulate import tabulate

    rows = [[c.cell, c.metric, c.hardware_key, c.first_run, f"{c.change:+.1%}", f"{c.noise:.1%}",
             "; ".join(c.env_changes) or "-"] for c in changes]
    headers = ["cell", "metric", "hardware", "first run of the new level", "change", "night noise", "what changed"]
    causes = "".join(f"{line}\n" for line in change_cause_lines(changes))
    return tabulate(rows, headers=headers) + "\n" + causes + tail
