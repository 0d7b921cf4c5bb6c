"""What is kept, read one way: a results folder or a database behind one interface.

    open_store("results")                      # runs/<run-id>/*.json, as the harness writes them
    open_store("sqlite:///history.db")         # embedded, no setup
    open_store("postgresql://user@host/db")    # shared by every runner (psycopg 3)

The gate's history window, ``changes``, ``report`` and ``compare`` read through ``Store``;
a run writes its folder (the artifact of record) and, with ``--store URL``, the database
as well (``sql.py``).  ``ingest`` loads folders into a database; ``shards`` splits a
night's matrix over machines.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..results import CellResult, ResultsError

STORE_ENV = "HARNESS_STORE"


class StoreError(ResultsError):
    """The store cannot be reached, or holds what this harness cannot read.  Says which."""


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
        return list(getattr(self, "_unreadable", []))

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


def open_store(location: str | os.PathLike[str] | None = None) -> Store:
    """A results folder or a database URL (default: ``$HARNESS_STORE``)."""
    location = location if location is not None else os.environ.get(STORE_ENV)
    if not location:
        raise StoreError(f"no store given: pass a results folder or a database URL, or set {STORE_ENV}")
    if is_url(location):
        from .sql import SqlStore

        return SqlStore(str(location))
    from .files import FolderStore

    return FolderStore(Path(location))


__all__ = ["STORE_ENV", "Store", "StoreError", "is_url", "open_store"]
