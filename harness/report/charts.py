"""What each cell's chart draws: its figures over the runs in order, the band and threshold
of the gate's window (``band.py``), change points and accepted changes; and the readings of
one result that the verdict table (``html.py``) shares with the charts."""

from __future__ import annotations

import math
from typing import Any

from ..judge.verdict import Finding
from ..judge.window import Window
from ..measure.vocabulary import ACCURACY, F1, PEAK_MEMORY, THROUGHPUT, label_of
from ..results import CellResult
from .band import GateSettings, band_of
from .tables import peak_memory

VERDICT_COLOURS = {"regression": "#c62828", "error": "#8e0000", "improvement": "#00897b", "pass": "#2e7d32",
                   "suspect": "#ef6c00", "disturbed": "#6a1b9a", "new": "#1565c0", "skipped": "#757575"}
AXES = ("checkpoint", "padding", "batch_size", "precision", "hardware_key")
# The series each chart draws, and the label of each (its panel's title).
SERIES = {"speed": label_of(THROUGHPUT), "memory": f"{label_of(PEAK_MEMORY)} MiB", "accuracy": label_of(ACCURACY),
          "f1": label_of(F1)}


def speed_finding(result: CellResult) -> Finding | None:
    return next((f for f in result.verdict.findings if f.metric == THROUGHPUT), None) if result.verdict is not None else None


def finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def quality_value(result: CellResult, metric: str) -> float | None:
    if result.spec.weights == "random":
        return None  # chance level: no result
    return finite(result.metrics.get(metric))


def axis_value(result: CellResult, axis: str) -> str:
    if axis == "hardware_key":
        return str(result.env.get("hardware_key") or "")
    if axis == "checkpoint":
        return result.spec.checkpoint_name
    return str(getattr(result.spec, axis))


def chart_data(runs: list[tuple[dict[str, Any], list[CellResult]]], changes: list[Any],
               accepted: list[dict[str, Any]], windows: dict[str, tuple[Window | None, GateSettings]]) -> dict[str, Any]:
    """Everything the charts draw, compactly: runs once, then per cell the run indices and
    values, the band and threshold line of its gate window (``windows``: each cell's window
    and its matrix's settings), change points and accepted runs."""
    run_index = {m["run_id"]: i for i, (m, _) in enumerate(runs)}
    run_rows = []
    for manifest, results in runs:
        env = manifest.get("env") or (results[0].env if results else {})
        libs = env.get("libraries") or {}
        run_rows.append([manifest["run_id"], str(manifest.get("finished_at") or manifest.get("started_at") or ""),
                         str(env.get("harness_commit") or "")[:12], str(libs.get("torch") or ""),
                         str(libs.get("transformers") or "")])
    cells: dict[str, dict[str, Any]] = {}
    for _, results in runs:
        for r in results:
            cell = cells.setdefault(r.id, {"x": [], "speed": [], "memory": [], "accuracy": [], "f1": [], "verdict": [],
                                           **{a: axis_value(r, a) for a in AXES}})
            cell["x"].append(run_index[r.run_id])
            cell["speed"].append(finite(r.metrics.get(THROUGHPUT)))
            memory = peak_memory(r)[1]  # reserved on a GPU, RSS on a CPU
            cell["memory"].append(round(memory / 2**20, 1) if memory is not None else None)
            cell["accuracy"].append(quality_value(r, ACCURACY))
            cell["f1"].append(quality_value(r, F1))
            cell["verdict"].append(r.verdict_word)
            finding = speed_finding(r)
            cell["threshold"] = (finding.threshold if finding else None) or cell.get("threshold")
    for cell_id, cell in cells.items():
        window, settings = windows.get(cell_id) or (None, GateSettings())
        cell.update(band_of(window, settings, _threshold_fraction(cell.get("threshold"))))
        cell["band_from"] = run_index.get(cell.pop("band_start"))
        cell["changes"] = [[run_index.get(c.first_run), c.metric, round(c.change, 4)] for c in changes
                           if c.cell == cell_id and c.first_run in run_index]
        cell["accepted"] = [[run_index.get(e["from_run"]), e.get("why", "")] for e in accepted
                            if e.get("cell") == cell_id and e.get("from_run") in run_index]
        for key in ("memory", "accuracy", "f1"):
            if all(v is None for v in cell[key]):
                cell[key] = None
    return {"runs": run_rows, "labels": SERIES, "colours": VERDICT_COLOURS, "cells": cells}


def _threshold_fraction(text: str | None) -> float | None:
    """The signed relative limit of a threshold expression (-0.15 for ``...:-15%``)."""
    from ..judge.thresholds import Threshold, ThresholdError

    try:
        threshold = Threshold.parse(text) if text else None
    except ThresholdError:
        return None
    return threshold.bad_direction * threshold.limit if threshold is not None and threshold.relative else None
