"""What is shown: one line per cell with its headline figures, for terminals and logs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from ..measure.vocabulary import (
    ACCURACY,
    F1,
    MEMORY_BY_PREFERENCE,
    MEMORY_SOURCE,
    PADDING_EFFICIENCY,
    PEAK_MEMORY,
    REAL_TOKENS_PER_S,
    THROUGHPUT,
    label_of,
)
from ..results import CellResult


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def peak_memory(result: CellResult) -> tuple[str, float | None]:
    """The headline memory figure and its name: reserved on a GPU, RSS on a CPU."""
    name = next((n for n in MEMORY_BY_PREFERENCE if result.metrics.get(n) is not None), MEMORY_BY_PREFERENCE[-1])
    return MEMORY_SOURCE[name], result.metrics.get(name)


def summary_rows(results: Iterable[CellResult]) -> list[list[str]]:
    rows = []
    for r in results:
        m = r.metrics
        kind, mem = peak_memory(r)
        rows.append(
            [
                r.id,
                r.status if r.status != "ok" or r.verdict is None else r.verdict.verdict,
                _fmt(m.get(THROUGHPUT), ".1f"),
                _fmt(m.get(REAL_TOKENS_PER_S), ".0f"),
                _fmt(m.get(PADDING_EFFICIENCY), ".1%"),
                f"{human_bytes(mem)} ({kind})" if mem is not None else "-",
                *quality_cells(r),
                _note(r),
            ]
        )
    return rows


def quality_cells(r: CellResult) -> list[str]:
    """Accuracy and F1, or ``chance`` for a random-weight cell: an untrained classifier
    answers the majority label (0.684 / 0.812 on MRPC), which is no result."""
    m = r.metrics
    if r.spec.weights == "random" and m.get(ACCURACY) is not None:
        return ["chance", "chance"]
    return [_fmt(m.get(ACCURACY), ".3f"), _fmt(m.get(F1), ".3f")]


def _note(r: CellResult) -> str:
    text = r.reason or (r.verdict.note if r.verdict is not None else "")
    return text.splitlines()[0][:70] if text else ""


SUMMARY_HEADERS = ["cell", "verdict", *map(label_of, (THROUGHPUT, REAL_TOKENS_PER_S, PADDING_EFFICIENCY, PEAK_MEMORY,
                                                     ACCURACY, F1)), "note"]


def summary_table(results: Iterable[CellResult], tablefmt: str = "simple") -> str:
    return tabulate(summary_rows(results), headers=SUMMARY_HEADERS, tablefmt=tablefmt, disable_numparse=True)
