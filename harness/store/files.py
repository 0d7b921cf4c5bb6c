"""The results folder as a store: ``runs/<run-id>/run.json`` and ``runs/<run-id>/<cell-id>.json``.

This is what every run writes (``results.RunWriter``) and what CI uploads; reading it
needs nothing but the files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..results import CellResult, ResultsError, read_result
from .base import Store
from .runs import read_manifest, runs_root


class FolderStore(Store):
    def __init__(self, results_dir: Path):
        self.results_dir = Path(results_dir)
        # A results folder holds runs/; a folder of run folders is read the same way.
        self.runs_dir = runs_root(self.results_dir)
        self.location = str(self.results_dir)
        self._unreadable: list[str] = []

    def _run_dirs(self, run_ids: Iterable[str] | None) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        if run_ids is not None:
            return sorted(p for p in (self.runs_dir / r for r in set(run_ids)) if p.is_dir())
        return sorted(p for p in self.runs_dir.iterdir() if p.is_dir())

    def manifests(self, run_ids: Iterable[str] | None = None, *, night: str | None = None) -> list[dict[str, Any]]:
        out = []
        for run_dir in self._run_dirs(run_ids):
            path = run_dir / "run.json"
            if not path.is_file():
                continue
            try:
                manifest = read_manifest(path)  # a `running` run whose owner is gone reads as `killed`
            except ResultsError as exc:
                self._unreadable.append(str(exc))
                continue
            if night is None or manifest.get("night") == night:
                out.append(manifest)
        return out

    def results(self, cell_id: str | None = None, *, run_ids: Iterable[str] | None = None) -> list[CellResult]:
        out = []
        for run_dir in self._run_dirs(run_ids):
            paths = [run_dir / f"{cell_id}.json"] if cell_id else sorted(run_dir.glob("*.json"))
            for path in paths:
                if path.name == "run.json" or not path.is_file():
                    continue
                try:
                    out.append(read_result(path))
                except ResultsError as exc:
                    self._unreadable.append(str(exc))
        return out
