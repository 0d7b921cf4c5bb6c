"""What is shown: one line per cell with its headline figures, for terminals and logs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

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
    m = result.metrics
    if m.get("peak_mem_reserved_bytes") is not None:
        return "reserved", m["peak_mem_reserved_bytes"]
    return "rss", m.get("peak_rss_bytes")


def summary_rows(results: Iterable[CellResult]) -> list[list[str]]:
    rows = []
    for r in results:
        m = r.metrics
        kind, mem = peak_memory(r)
        rows.append(
            [
                r.id,
                r.status if r.status != "ok" or r.verdict is None else r.verdict.verdict,
                _fmt(m.get("train_samples_per_s"), ".1f"),
                _fmt(m.get("real_tokens_per_s"), ".0f"),
                _fmt(m.get("padding_efficiency"), ".1%"),
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
    if r.spec.weights == "random" and m.get("eval_accuracy") is not None:
        return ["chance", "chance"]
    return [_fmt(m.get("eval_accuracy"), ".3f"), _fmt(m.get("eval_f1"), ".3f")]


def _note(r: CellResult) -> str:
    text = r.reason or (r.verdict.note if r.verdict is not None else "")
    return text.splitlines()[0][:70] if text else ""


SUMMARY_HEADERS = ["cell", "verdict", "samples/s", "real tok/s", "pad eff", "peak mem", "acc", "f1", "note"]


def summary_table(results: Iterable[CellResult], tablefmt: str = "simple") -> str:
    return tabulate(summary_rows(results), headers=SUMMARY_HEADERS, tablefmt=tablefmt, disable_numparse=True)
