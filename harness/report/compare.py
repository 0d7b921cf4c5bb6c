"""Two result sets side by side: a hardware, library or code change, cell by cell.

    python -m harness compare OLD NEW [--format table|markdown|csv] [--fail-on regression]

Each side is a run folder (``results/runs/<run-id>``), a results folder (the newest
result of every cell across its runs), a folder of cell documents (a baselines folder,
``results/baselines/<hardware-key>``), or a pytest-benchmark ``--benchmark-json`` file
the harness wrote.  Cells are matched by id (their spec); each pair is judged with the
gate's own rules (threshold and noise; quality band), so "slower" here means what a
regression means in the nightly run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..judge.gate import env_changes, judge, noise_of
from ..judge.verdict import Verdict
from ..measure.vocabulary import ACCURACY, F1, PEAK_MEMORY, QUALITY, REAL_TOKENS_PER_S, THROUGHPUT, label_of
from ..results import CellResult, ResultsError, read_result, read_run
from ..spec import CellSpec, recipe_changes
from ..store import Store
from .limits import relative_limit
from .tables import peak_memory


@dataclass
class Side:
    label: str
    results: dict[str, CellResult]
    env: dict[str, Any]
    partial: bool = False


def load_side(path: str | Path) -> Side:
    """A run folder, a results folder or a pytest-benchmark JSON file, as cells by id."""
    path = Path(path)
    if path.is_file():
        return _from_benchmark_json(path)
    if (path / "run.json").is_file():
        manifest = json.loads((path / "run.json").read_text(encoding="utf-8"))
        results = {r.id: r for r in read_run(path)}
        return Side(path.name, results, manifest.get("env") or _first_env(results), manifest.get("state") == "partial")
    runs_dir = path / "runs" if (path / "runs").is_dir() else path
    run_dirs = sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file()) if runs_dir.is_dir() else []
    if not run_dirs and path.is_dir() and any(path.glob("*.json")):
        results = {r.id: r for r in read_run(path)}  # a folder of cell documents: baselines/<hardware-key>/
        return Side(path.name, results, _first_env(results))
    if not run_dirs:
        raise ResultsError(
            f"{path}: not a run folder (no run.json), a results folder (no runs/), a folder of cell results "
            f"(baselines/<hardware-key>/) or a benchmark JSON file"
        )
    results: dict[str, CellResult] = {}
    for run_dir in run_dirs:  # run ids start with a UTC time stamp: later runs win
        for result in read_run(run_dir):
            results[result.id] = result
    return Side(path.name, results, _first_env(results))


def load_run_from_store(store: Store, run_id: str) -> Side:
    """One run of a store (a database or a results folder) by its id; ``latest`` is the newest."""
    manifests = store.manifests()
    if run_id == "latest" and manifests:
        run_id = manifests[-1]["run_id"]
    manifest = next((m for m in manifests if m["run_id"] == run_id), None)
    results = {r.id: r for r in store.results(run_ids=[run_id])}
    if manifest is None and not results:
        known = [m["run_id"] for m in manifests[-5:]]
        raise ResultsError(f"{store.location}: no run {run_id!r}; the newest are {known}")
    manifest = manifest or {"run_id": run_id, "state": "unknown"}  # cells whose manifest the store missed
    return Side(run_id, results, manifest.get("env") or _first_env(results), manifest.get("state") == "partial")


def _first_env(results: dict[str, CellResult]) -> dict[str, Any]:
    return next(iter(results.values())).env if results else {}


def _from_benchmark_json(path: Path) -> Side:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        benchmarks = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"{path}: not a pytest-benchmark JSON file ({exc})") from None
    results: dict[str, CellResult] = {}
    for bench in benchmarks:
        info = bench.get("extra_info") or {}
        if "cell_id" not in info:
            continue  # a benchmark that is not a harness cell (the overhead check, say)
        stored = Path(info.get("result_file", ""))
        if stored.is_file():
            result = read_result(stored)
        else:
            spec = CellSpec.from_dict(info["spec"])
            metrics = {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            result = CellResult(spec=spec, status=info.get("status", "ok"), run_id=path.stem,
                                env=info.get("env") or {"hardware_key": info.get("hardware_key")}, metrics=metrics,
                                samples={"noise": info.get("noise") or {}})
        results[result.id] = result
    if not results:
        raise ResultsError(f"{path}: holds no harness cell (no extra_info.cell_id)")
    return Side(path.stem, results, _first_env(results))


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
    only_old: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)

    @property
    def env_changes(self) -> list[str]:
        return env_changes(self.old.env, self.new.env)

    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict in ("slower", "quality out of band", "more memory")]


def compare(old: Side, new: Side) -> Comparison:
    comparison = Comparison(old, new)
    comparison.only_old = sorted(set(old.results) - set(new.results))
    comparison.only_new = sorted(set(new.results) - set(old.results))
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
        word, why = speed_verdict(row, row.verdict, relative_limit(b.spec))
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


# ---------------------------------------------------------------- output


MARKS = {"slower": "+", "more memory": "+", "quality out of band": "+", "faster": "-", "inconclusive": "?",
         "not comparable": "x", "unchanged": " "}
LEGEND = "+ worse (slower, more memory, quality out of band)  - faster  ? cannot tell (noise > threshold)  x not comparable"
WIDTH = 120


def _with_noise(value: float | None, noise: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}" if value < 100 else f"{value:.1f}" if value < 10_000 else f"{value:.0f}"
    return text + (f"±{noise:.0%}" if noise else "")


def _quality(row: Row) -> str:
    old, new = figure(row.old, F1), figure(row.new, F1)
    if new is None:
        return "-"
    return f"{new:.3f}" + (f"({new - old:+.3f})" if old is not None else "")


def table_rows(comparison: Comparison, *, only_changed: bool = False, sort: str = "name") -> list[list[str]]:
    """One row per cell in the style of asv and pytest-benchmark: a marker, old and new
    samples/s with their noise, the ratio, the memory ratio, F1 (and its change), the
    verdict, and the cell last."""
    chosen = [r for r in comparison.rows if not only_changed or r.verdict != "unchanged"]
    if sort == "ratio":
        chosen.sort(key=lambda r: (r.ratio(THROUGHPUT) is None, r.ratio(THROUGHPUT) or 0.0, r.cell_id))
    rows = []
    for row in chosen:
        ratio, memory = row.ratio(THROUGHPUT), row.ratio(PEAK_MEMORY)
        rows.append([
            MARKS.get(row.verdict, " "),
            _with_noise(figure(row.old, THROUGHPUT), noise_of(row.old, THROUGHPUT)),
            _with_noise(figure(row.new, THROUGHPUT), noise_of(row.new, THROUGHPUT)),
            "-" if ratio is None else f"{ratio:.3f}",
            "-" if memory is None else f"{memory:.2f}",
            _quality(row),
            row.verdict,
            row.cell_id,
        ])
    return rows


HEADERS = ["", f"{label_of(THROUGHPUT)} old", "new", "ratio", "mem ratio", label_of(F1), "verdict", "cell"]


def _fit(rows: list[list[str]], tablefmt: str, width: int) -> str:
    """The table, its last column (the cell id) shortened from the left until it fits."""
    text = tabulate(rows, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True)
    longest = max((len(line) for line in text.splitlines()), default=0)
    if longest <= width or not rows:
        return text
    keep = max(12, max(len(r[-1]) for r in rows) - (longest - width))
    cut = [[*r[:-1], r[-1] if len(r[-1]) <= keep else "…" + r[-1][-(keep - 1):]] for r in rows]
    return tabulate(cut, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True)


CSV_COLUMNS = [
    "cell", f"{THROUGHPUT}_old", f"{THROUGHPUT}_new", f"{THROUGHPUT}_ratio", f"{THROUGHPUT}_change_pct",
    "threshold_pct", "noise_old_pct", "noise_new_pct", "noise_combined_pct", "interval_low_ratio",
    "interval_high_ratio", f"{REAL_TOKENS_PER_S}_old", f"{REAL_TOKENS_PER_S}_new", f"{PEAK_MEMORY}_old_MiB",
    f"{PEAK_MEMORY}_new_MiB", f"{ACCURACY}_old", f"{ACCURACY}_new", f"{F1}_old", f"{F1}_new", "verdict",
]


def _csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    pct = lambda v: None if v is None else round(100 * v, 3)  # noqa: E731
    mib = lambda v: None if v is None else round(v / 2**20, 1)  # noqa: E731
    for row in comparison.rows:
        ratio = row.ratio(THROUGHPUT)
        writer.writerow([
            row.cell_id, figure(row.old, THROUGHPUT), figure(row.new, THROUGHPUT), ratio,
            pct(ratio - 1) if ratio is not None else None, pct(-relative_limit(row.new.spec)),
            pct(noise_of(row.old, THROUGHPUT)), pct(noise_of(row.new, THROUGHPUT)), pct(row.noise),
            *(row.interval or (None, None)),
            figure(row.old, REAL_TOKENS_PER_S), figure(row.new, REAL_TOKENS_PER_S),
            mib(figure(row.old, PEAK_MEMORY)), mib(figure(row.new, PEAK_MEMORY)),
            figure(row.old, ACCURACY), figure(row.new, ACCURACY),
            figure(row.old, F1), figure(row.new, F1), row.verdict,
        ])
    for cell_id in comparison.only_old:
        writer.writerow([cell_id, *[""] * (len(CSV_COLUMNS) - 2), "only in old"])
    for cell_id in comparison.only_new:
        writer.writerow([cell_id, *[""] * (len(CSV_COLUMNS) - 2), "only in new"])
    return buffer.getvalue()


def render(comparison: Comparison, fmt: str = "table", *, only_changed: bool = False, sort: str = "name",
           width: int | None = WIDTH) -> str:
    """``table`` (at most ``width`` columns; None: as wide as the ids), ``markdown`` or ``csv``."""
    if fmt == "csv":
        return _csv(comparison)

    tablefmt = "github" if fmt == "markdown" else "simple"
    md = fmt == "markdown"
    out = []
    title = f"Comparison: {comparison.old.label} (old) -> {comparison.new.label} (new)"
    out.append(f"### {title}" if md else title)
    out.append("")
    changes = comparison.env_changes
    kind = _kind_of_change(changes)
    out.append(f"{'**' if md else ''}What changed ({kind}):{'**' if md else ''}")
    out += [f"- {c}" for c in changes] or ["- nothing in hardware, driver or library versions"]
    for side in (comparison.old, comparison.new):
        if side.partial:
            out.append(f"- note: {side.label} is a partial run (interrupted); some cells are missing")
    out.append("")
    rows = table_rows(comparison, only_changed=only_changed, sort=sort)
    if md or width is None:
        out.append(tabulate(rows, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True))
    else:
        out.append(_fit(rows, tablefmt, width))
    out.append(LEGEND + (f"; {len(comparison.rows) - len(rows)} unchanged cells not shown" if only_changed else ""))
    out.append("")
    summary = by_axis(comparison)
    if summary:
        out.append(f"{'**' if md else ''}By axis{'**' if md else ''} (geometric mean of new/old samples/s; "
                   "speedup over fp32 / max_length within each side):")
        out.append("")
        out.append(tabulate(summary, headers=["axis", "value", "new/old", "cells", "speedup old", "speedup new"],
                            tablefmt=tablefmt, disable_numparse=True))
        out.append("")
    if comparison.only_old or comparison.only_new:
        out.append(f"{'**' if md else ''}Cells on one side only:{'**' if md else ''}")
        out += [f"- {c} (only in old)" for c in comparison.only_old]
        out += [f"- {c} (only in new)" for c in comparison.only_new]
        out.append("")
    regressions = comparison.regressions()
    out.append(f"{len(comparison.rows)} cells compared: {len(regressions)} slower or out of band, "
               f"{sum(r.verdict == 'faster' for r in comparison.rows)} faster, "
               f"{sum(r.verdict == 'unchanged' for r in comparison.rows)} unchanged within noise, "
               f"{sum(r.verdict == 'inconclusive' for r in comparison.rows)} inconclusive (cannot tell).")
    notes = [f"- {row.cell_id}: {row.detail}" for row in regressions]
    notes += [f"- {row.cell_id}: inconclusive: {row.detail}" for row in comparison.rows if row.verdict == "inconclusive"]
    if width and not md:
        import textwrap

        notes = [textwrap.fill(n, width=width, subsequent_indent="    ", break_long_words=False) for n in notes]
    out += notes
    return "\n".join(out) + "\n"


def _kind_of_change(changes: list[str]) -> str:
    hardware = ("gpu_name", "gpu_count", "cpu_model", "cpu_count")
    heads = {c.split(" ", 1)[0] for c in changes}
    if not changes:
        return "same environment: a code or noise comparison"
    if heads & set(hardware):
        return "a hardware comparison"
    if heads <= {"harness"}:
        return "a harness code comparison"
    return "a library, driver or setting comparison"
