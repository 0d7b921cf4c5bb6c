"""The ``--store`` database beside a run's folder: every cell and manifest written to both.

The run folder is the record; the database is a mirror that every runner of a night shares
(``store/sql.py``).  A database that fails loses nothing: what it lacks is named once in the
progress lines and in the summary, caught up at the end of the run from the run folder,
or later by ``python -m harness ingest``.  History is read from the database when there is
one (every runner's nights), else from the results folder, and a database that cannot be
read falls back to the folder, saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..results import CellResult
from . import Store, StoreError, open_store


class StoreMirror:
    def __init__(self, url: str | None, results_dir: Path, history_dir: Path, say: Callable[[str], None]):
        self.url = url
        self.results_dir = results_dir
        self.history_dir = history_dir  # whose runs form the history (a folder)
        self.say = say
        self.behind: dict[str, str] = {}  # what the store lacks (a cell id, or "run"), and why
        self.history_note: str | None = None  # why history was read from the folder, not the store
        self._sql: Store | None = None
        self._history: Store | None = None

    @property
    def location(self) -> str:
        if self._sql is not None:
            return self._sql.location
        from .sql import normalize_url

        try:
            return normalize_url(self.url or "").render_as_string(hide_password=True)
        except StoreError:
            return str(self.url)

    def database(self) -> Store:
        """The database, opened (and its schema made) on first use; a StoreError when it
        cannot be reached, tried again at the next call."""
        if self._sql is None:
            from .sql import SqlStore

            self._sql = SqlStore(self.url)
        return self._sql

    def keep(self, what: str, write: Callable[[Store], None], kept_in: Path | None) -> None:
        """Write to the database (nothing without one); ``what`` names it in ``behind``."""
        if not self.url:
            return
        try:
            write(self.database())
        except StoreError as exc:
            if not self.behind:
                self.say(f"STORE BEHIND: {exc}; every cell is still kept in {kept_in or 'the run folder'}")
            self.behind[what] = str(exc)
        else:
            self.behind.pop(what, None)

    def catch_up(self, run_id: str, kept_in: Path) -> None:
        """At the end of the run: what the store lacks, again from the run folder."""
        if not self.url or not self.behind:
            return
        from .ingest import ingest

        before = dict(self.behind)
        self.behind.clear()
        self.keep("run", lambda store: ingest(self.results_dir, store, [run_id]), kept_in)
        if self.behind:
            self.behind = {**before, **self.behind}

    def state(self) -> dict:
        """What the run's manifest keeps of the store."""
        state: dict = {"location": self.location, "behind": sorted(self.behind)}
        if self.behind:
            state["error"] = next(iter(self.behind.values()))
        return state

    def behind_line(self, kept_in: Path | None) -> str | None:
        if not self.behind:
            return None
        cells = sorted(k for k in self.behind if k != "run")
        what = f"{len(cells)} cells" + (" and the run manifest" if "run" in self.behind else "")
        return (f"STORE BEHIND: {what} not written to {self.location} ({next(iter(self.behind.values()))}). "
                f"They are in {kept_in or '-'}; catch up with: python -m harness ingest {self.results_dir} --store URL")

    def history(self) -> Store:
        """Where history is read: the database when there is one, else the folder."""
        if self._history is None:
            folder = open_store(self.history_dir)
            self._history = folder
            if self.url:
                try:
                    self._history = self.database()
                except StoreError as exc:
                    self._fell_back(folder.location, exc)
        return self._history

    def cell_history(self, cell_id: str) -> list[CellResult]:
        """Every stored document of the cell, oldest first; a store that fails while read
        gives way to the folder for the rest of the run.  A corrupt document raises
        ResultsError naming it."""
        try:
            return self.history().results(cell_id)
        except StoreError as exc:
            self._fell_back(self.history_dir, exc)
            self._history = open_store(self.history_dir)
            return self._history.results(cell_id)

    def _fell_back(self, folder: object, exc: Exception) -> None:
        self.history_note = f"history read from {folder}: the store failed ({exc})"
        self.say(self.history_note)

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()
