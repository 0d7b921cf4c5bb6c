"""A comparison written out: the table (at most 120 columns), markdown for a PR comment, or
CSV with units in its column names."""

from __future__ import annotations

import csv
import io

from tabulate import tabulate

from ..judge.gate import noise_of
from ..judge.ops import profile_line
from ..judge.phases import side_by_side
from ..judge.thresholds import relative_limit
from ..measure.vocabulary import ACCURACY, F1, PEAK_MEMORY, REAL_TOKENS_PER_S, THROUGHPUT, label_of
from .compare import Comparison, Row, by_axis, figure

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
            pct(ratio - 1) if ratio is not None else None, pct(-relative_limit(row.new.spec.thresholds)),
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
    phases = [(row.new.id, side_by_side(row.old.metrics, row.new.metrics)) for row in comparison.rows]
    phases = [(cell, text) for cell, text in phases if text]
    if phases:
        out.append(f"{'**' if md else ''}Where the step time went{'**' if md else ''} (ms per step, old -> new):")
        out += [f"- {cell}: {text}" for cell, text in phases]
        out.append("")
    operators = [(row.new.id, profile_line(row.old.samples.get("profile"), row.new.samples.get("profile"), "old"))
                 for row in comparison.rows if row.old.samples.get("profile") and row.new.samples.get("profile")]
    if operators:
        out.append(f"{'**' if md else ''}Profiles{'**' if md else ''} (new against old):")
        out += [f"- {cell}: {text}" for cell, text in operators]
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
