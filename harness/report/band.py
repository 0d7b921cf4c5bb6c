"""The band and threshold each chart draws, from the gate's own window.

A cell's band is the prediction interval of the window the gate held its newest result
against: ``judge/window.build_window`` over the cell's history (same hardware key and
recipe, good runs only, from its last accepted change on), sized by the ``[gate] window``
of the matrix the runs used, at that matrix's ``confidence``, and drawn only where the
gate would judge by it (``MIN_POINTS`` runs or more).  Its threshold line stands at the
window's mean moved by the cell's relative threshold, as the gate measures a change.

The matrix's settings come from ``--matrix NAME_OR_PATH`` where given, else from
``benchmarks/<name>.toml`` for the matrix each run's manifest names, else the gate's
defaults; the page says which, and whether the file still is the one the runs used
(the ``matrix_sha256`` of their environment).
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..judge.window import DEFAULT_CONFIDENCE, DEFAULT_WINDOW, MIN_POINTS, Window, build_window
from ..matrix import load_matrix
from ..measure.vocabulary import THROUGHPUT
from ..project import matrix_path
from ..results import CellResult, ResultsError
from ..spec import SpecError


@dataclass(frozen=True)
class GateSettings:
    """A matrix's ``[gate]`` settings and where they came from."""

    window: int = DEFAULT_WINDOW
    confidence: float = DEFAULT_CONFIDENCE
    source: str = "the gate's defaults"
    note: str = ""

    def describe(self) -> str:
        text = f"window {self.window} runs, confidence {self.confidence:.0%} ({self.source})"
        return text + (f"; {self.note}" if self.note else "")


def matrix_file(given: str | Path, folder: Path | None = None) -> Path:
    """A matrix file, or NAME for ``folder/NAME.toml`` (default: as pytest's ``--matrix NAME``,
    the project's ``benchmarks/NAME.toml``, else the shipped one)."""
    path = Path(given)
    if path.suffix == ".toml" or path.exists():
        return path
    return folder / f"{given}.toml" if folder is not None else matrix_path(str(given), must_exist=False)


def file_sha256(path: Path) -> str:
    """A matrix file's hash as the run keeps it in its environment (``matrix_sha256``)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def settings_of(path: Path, used: str | None = None) -> GateSettings:
    """The ``[gate]`` settings of a matrix file; ``used``: the hash of the file the runs used."""
    matrix = load_matrix(path)
    now = file_sha256(path)
    note = f"the file has changed since the runs ({used} then, {now} now)" if used and used != now else ""
    return GateSettings(matrix.window, matrix.confidence, str(path), note)


def gate_settings(runs: list[tuple[dict[str, Any], list[CellResult]]], matrix: str | Path | None = None,
                  folder: Path | None = None) -> dict[str | None, GateSettings]:
    """The settings of every matrix the runs name (their manifests' ``matrix``): the file
    ``matrix`` names for all of them where given (an unreadable one is an error), else
    each name's ``folder/NAME.toml`` where it is readable, else the gate's defaults."""
    used: dict[str | None, str | None] = {}
    for manifest, results in runs:  # oldest first: the newest run's hash wins
        hashes = [r.env.get("matrix_sha256") for r in results] + [(manifest.get("env") or {}).get("matrix_sha256")]
        used[manifest.get("matrix")] = next((h for h in hashes if h), None) or used.get(manifest.get("matrix"))
    if matrix is not None:
        path = matrix_file(matrix, folder)
        try:
            return {name: settings_of(path, sha) for name, sha in used.items()}
        except SpecError as exc:
            raise ResultsError(f"--matrix {matrix}: {exc}") from None
    out = {}
    for name, sha in used.items():
        path = matrix_file(name, folder) if name else None
        if path is None or not path.is_file():
            out[name] = GateSettings(note=f"no {path}" if path else "the runs name no matrix")
            continue
        try:
            out[name] = settings_of(path, sha)
        except SpecError as exc:
            out[name] = GateSettings(note=f"{path} was refused: {exc}")
    return out


def cell_window(history: list[CellResult], settings: GateSettings, accepted: list[dict[str, Any]]) -> Window | None:
    """The window the gate held the cell's newest good result against (``build_window``
    with the matrix's size, from the cell's last accepted change at or before it); None
    for a cell with no ``ok`` result."""
    current = next((r for r in reversed(history) if r.ok), None)
    if current is None:
        return None
    start = max((e["from_run"] for e in accepted if e.get("cell") == current.id
                 and str(e.get("from_run")) <= current.run_id), default=None)
    return build_window(history, current, size=settings.window, accepted_from=start)


def band_of(window: Window | None, settings: GateSettings, threshold: float | None) -> dict[str, Any]:
    """What a chart draws of the window: the band (where the gate judges by history), the
    run it starts at, how many runs it holds, its caption, and the threshold line."""
    values = window.values(THROUGHPUT) if window is not None else []
    out: dict[str, Any] = {"band": None, "band_start": None, "band_runs": len(values), "band_label": "",
                           "window": settings.window, "confidence": settings.confidence}
    if not values:
        return out
    centre = statistics.fmean(values)
    if len(values) >= MIN_POINTS:
        interval = window.interval(THROUGHPUT, settings.confidence)
        out.update(band=[interval.low, interval.high], band_start=window.runs[0].run_id,
                   band_label=f"{settings.confidence:.0%} band of the last {len(values)} good runs")
        centre = interval.mean
    if threshold is not None:
        out["threshold_line"] = centre * (1 + threshold)
    return out
