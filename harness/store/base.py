"""The store's interface: what a results folder and a database both answer (``Store``), and
its error.  ``harness.store`` re-exports these with ``open_store``; the stores import them
from here, so no store module imports its own package."""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from ..results import CellResult, ResultsError

STORE_ENV = "HARNESS_STORE"


class StoreError(ResultsError):
    """The store cannot be reached, or holds what this harness cannot read.  Says which.

    ``lasting``: trying again cannot help (a file that is not a database, a schema this
    harness cannot read, a URL it cannot use), so a run gives up on the store at once."""

    def __init__(self, message: str, *, lasting: bool = False):
        super().__init__(message)
        self.lasting = lasting


class Store(ABC):
    """Stored runs: their manifests and their cell documents, oldest run first."""

    #: where the store is, safe to print (a database URL without its password)
    location: str

    @abstractmethod
    def manifests(self, run_ids: Iterable[str] | None = None, *, night: str | None = None) -> list[dict[str, Any]]:
        """Run manifests (``run.json``), sorted by run id; all, the given ids, or one night's."""

    @abstractmethod
    def results(self, cell_id: str | None = None, *, run_ids: Iterable[str] | None = None) -> list[CellResult]:
        """Cell documents sorted by (run id, cell id); one cell's, or the given runs'.
        An unreadable document is left out and named in ``unreadable``: a corrupt old night
        must not stop tonight's gate."""

    @property
    def unreadable(self) -> list[str]:
        """What was skipped as unreadable so far (each once): ``"<where>: <why>"``."""
        return list(dict.fromkeys(getattr(self, "_unreadable", [])))

    def skipped_line(self) -> str | None:
        """One line for a reader's output when documents were skipped, else None."""
        return skipped_line(self.unreadable)

    def runs(self) -> list[tuple[dict[str, Any], list[CellResult]]]:
        """Every run with its cells, oldest first.  Cells whose run has no manifest (a store
        that missed it, a folder without run.json) come under a stand-in of state unknown."""
        by_run: dict[str, list[CellResult]] = {}
        for result in self.results():
            by_run.setdefault(result.run_id, []).append(result)
        manifests = {m["run_id"]: m for m in self.manifests()}
        for run_id in by_run.keys() - manifests.keys():
            manifests[run_id] = {"run_id": run_id, "state": "unknown", "matrix": None}
        return [(manifests[run_id], by_run.get(run_id, [])) for run_id in sorted(manifests)]

    def close(self) -> None:  # noqa: B027 - nothing to release for a folder
        pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_url(location: str | os.PathLike[str]) -> bool:
    return "://" in str(location)


def skipped_line(unreadable: list[str]) -> str | None:
    """``skipped 3 unreadable documents: results/runs/R/c.json: not valid JSON (...)``: how
    many a reader left out and the first of them, or None when it left out none."""
    if not unreadable:
        return None
    noun = "document" if len(unreadable) == 1 else "documents"
    return f"skipped {len(unreadable)} unreadable {noun}: {unreadable[0]}"


def seconds_from_env(name: str, default: float, unit: str = "seconds") -> float:
    """A positive number (of ``unit``) from the environment variable ``name``, else
    ``default``; anything else is a StoreError naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise StoreError(f"{name}={text!r} is not a positive number of {unit}", lasting=True)
    return value
