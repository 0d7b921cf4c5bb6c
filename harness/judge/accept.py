"""Accepted changes: ``python -m harness accept CELL --from RUN_ID -m "why"``.

A maintainer who agrees that a cell's level moved (a faster library, a deliberate recipe
change, new hardware settings) marks the first run of the new level.  The cell's history
window then starts at that run, so it never mixes the two levels (Conbench's
distribution change).  Kept in ``<results-dir>/accepted.json``, a list of entries::

    {"cell": "...", "from_run": "20261125T020000Z-nightly-gpu", "why": "...", "at": "...", "by": "..."}
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

from ..results import ResultsError, utc_now, write_json_atomic
from ..store.runs import run_folders, runs_root

FILE = "accepted.json"


def read_accepted(results_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(results_dir) / FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable list of accepted changes ({exc}); fix or delete it") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"cell", "from_run"} <= set(e) for e in entries):
        raise ResultsError(f"{path}: expected a list of {{cell, from_run, why}} objects")
    return entries


def accepted_from(results_dir: str | Path, cell_id: str, *, before: str | None = None) -> str | None:
    """The run the cell's current segment starts at (the latest accepted change at or
    before ``before``), or None."""
    runs = [
        e["from_run"] for e in read_accepted(results_dir)
        if e["cell"] == cell_id and (before is None or e["from_run"] <= before)
    ]
    return max(runs) if runs else None


def accept(results_dir: str | Path, cell_id: str, from_run: str, why: str) -> dict[str, Any]:
    """Record an accepted change; the run must exist and hold the cell."""
    results_dir = Path(results_dir)
    if not why.strip():
        raise ResultsError("say why the change is accepted (-m \"...\"): the reason is what a reader of the history needs")
    runs = runs_root(results_dir)
    run = runs / from_run
    if not run.is_dir():
        known = [p.name for p in run_folders(results_dir)][-5:]
        raise ResultsError(f"no run {from_run!r} under {runs}; the newest are {known}")
    if not (run / f"{cell_id}.json").is_file():
        cells = sorted(p.stem for p in run.glob("*.json") if p.name != "run.json")
        raise ResultsError(f"run {from_run} has no cell {cell_id!r}; it has {cells}")
    try:
        by = getpass.getuser()
    except (KeyError, OSError):
        by = "unknown"
    entry = {"cell": cell_id, "from_run": from_run, "why": why.strip(), "at": utc_now(), "by": by}
    entries = [e for e in read_accepted(results_dir) if not (e["cell"] == cell_id and e["from_run"] == from_run)]
    write_json_atomic(results_dir / FILE, [*entries, entry])
    return entry
