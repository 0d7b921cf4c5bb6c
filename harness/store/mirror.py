"""The ``--store`` database beside a run's folder: every cell and manifest written to both.

The run folder is the record; the database is a mirror that every runner of a night shares
(``store/sql.py``).  A database that fails loses nothing: what it lacks is named once in the
progress lines and in the summary, caught up at the end of the run from the run folder,
or later by ``python -m harness ingest``.  History is read from the database when there is
one (every runner's nights), else from the results folder, and a database that cannot be
read falls back to the folder, saying so.

A store that keeps failing is given up: after ``HARNESS_STORE_MAX_FAILURES`` failed calls
(default 3) or ``HARNESS_STORE_MAX_FAILING_S`` seconds lost to failed calls (default 30),
or at once for a failure that trying again cannot mend (not a database, a schema this
harness cannot read), the run stops trying it, says so once, and keeps writing its folder.
A cell costs at most one failed attempt: after a failure the manifest waits for the next
cell's write.  Whatever the store still lacks at the end is ``behind``: the run fails with
one line saying how much and the ``ingest`` command that catches it up.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from ..results import CellResult
from . import STORE_ENV, Store, StoreError, open_store
from .base import seconds_from_env, skipped_line

MAX_FAILURES_ENV = "HARNESS_STORE_MAX_FAILURES"
DEFAULT_MAX_FAILURES = 3
MAX_FAILING_ENV = "HARNESS_STORE_MAX_FAILING_S"
DEFAULT_MAX_FAILING_S = 30.0


class StoreMirror:
    def __init__(self, url: str | None, results_dir: Path, history_dir: Path, say: Callable[[str], None]):
        self.url = url
        self.results_dir = results_dir
        self.history_dir = history_dir  # whose runs form the history (a folder)
        self.say = say
        self.behind: dict[str, str] = {}  # what the store lacks (a cell id, or "run"), and why
        self.cells: set[str] = set()  # every cell the run asked to keep
        self.failures = 0  # failed calls to the store during this run
        self.failing_s = 0.0  # seconds they cost
        self.given_up: str | None = None  # why the run stopped trying the store
        self.max_failures = int(_budget(MAX_FAILURES_ENV, DEFAULT_MAX_FAILURES, "failed calls", say))
        self.max_failing_s = _budget(MAX_FAILING_ENV, DEFAULT_MAX_FAILING_S, "seconds", say)
        self._fallback_note: str | None = None  # why history was read from the folder, not the store
        self._skipped: list[str] = []  # unreadable documents the history reads left out
        self._manifest_waits = False  # after a failure, the manifest waits for the next cell's attempt
        self._sql: Store | None = None
        self._history: Store | None = None

    @property
    def location(self) -> str:
        if self._sql is not None:
            return self._sql.location
        from .sql_connect import normalize_url

        try:
            return normalize_url(self.url or "").render_as_string(hide_password=True)
        except StoreError:
            return str(self.url)

    def database(self) -> Store:
        """The database, opened (and its schema made) on first use; a StoreError when it
        cannot be reached, tried again at the next call."""
        if self._sql is None:
            from .sql import SqlStore

            self._sql = SqlStore(self.url, watchdog=True)
        return self._sql

    # ------------------------------------------------------------ writing

    def keep(self, what: str, write: Callable[[Store], None], kept_in: Path | None) -> None:
        """Write to the database (nothing without one); ``what`` names it in ``behind``."""
        if not self.url:
            return
        if what != "run":
            self.cells.add(what)
        if self.given_up or (what == "run" and self._manifest_waits):
            self.behind.setdefault(what, self.given_up or next(iter(self.behind.values()), "not tried"))
            return
        started = time.monotonic()
        try:
            write(self.database())
        except Exception as exc:  # noqa: BLE001 - the store is a mirror: its failure must not end the run
            error = _named(exc, self.location)
            giving_up = self._failed(error, exc, started)
            if not self.behind and not giving_up:
                self.say(f"STORE BEHIND: {error}; every cell is still kept in {kept_in or 'the run folder'}")
            self.behind[what] = error
            self._manifest_waits = True
            if giving_up:
                self._give_up(error, kept_in)
        else:
            self.behind.pop(what, None)
            self._manifest_waits = False

    def _failed(self, error: str, exc: BaseException, started: float) -> bool:
        """Count a failed call against the budget; True when the run should give up now."""
        self.failures += 1
        self.failing_s += time.monotonic() - started
        return (getattr(exc, "lasting", False) or self.failures >= self.max_failures
                or self.failing_s >= self.max_failing_s)

    def _give_up(self, error: str, kept_in: Path | None) -> None:
        if self.given_up:
            return
        self.given_up = error
        self.say(f"STORE GIVEN UP after {self.failures} failed call(s) in {self.failing_s:.1f} s "
                 f"(budget: {self.max_failures} calls or {self.max_failing_s:g} s; {MAX_FAILURES_ENV}, "
                 f"{MAX_FAILING_ENV}): {error}. The rest of the run writes only {kept_in or 'its run folder'}, "
                 "and the run will fail")

    def catch_up(self, run_id: str, kept_in: Path) -> None:
        """At the end of the run: what the store lacks, again from the run folder (unless
        the run gave the store up)."""
        if not self.url or not self.behind or self.given_up:
            return
        from .ingest import ingest

        before = dict(self.behind)
        self.behind.clear()
        self._manifest_waits = False
        self.keep("run", lambda store: ingest(self.results_dir, store, [run_id]), kept_in)
        if self.behind:
            self.behind = {**before, **self.behind}

    def state(self) -> dict:
        """What the run's manifest keeps of the store."""
        state: dict = {"location": self.location, "behind": sorted(self.behind)}
        if self.behind:
            state["error"] = next(iter(self.behind.values()))
        if self.failures:
            state["failures"] = self.failures
        if self.given_up:
            state["given_up"] = self.given_up
        return state

    def behind_line(self, kept_in: Path | None) -> str | None:
        """``STORE BEHIND, the run fails: 2 of 3 cells and the run manifest not written to URL
        (why). They are in DIR; catch up with: python -m harness ingest RESULTS --store URL --run ID``."""
        if not self.behind:
            return None
        cells = sorted(k for k in self.behind if k != "run")
        what = f"{len(cells)} of {len(self.cells)} cells" + (" and the run manifest" if "run" in self.behind else "")
        command = f"python -m harness ingest {shlex.quote(str(self.results_dir))} --store {self.url_for_command()}"
        if kept_in is not None:
            command += f" --run {shlex.quote(Path(kept_in).name)}"
        why = self.given_up or next(iter(self.behind.values()))
        why = why.removeprefix(f"{self.location}: ")  # named just before
        return (f"STORE BEHIND, the run fails: {what} not written to {self.location} ({why}). "
                f"They are in {kept_in or '-'}; catch up with: {command}")

    def url_for_command(self) -> str:
        """The store's URL as the user gave it, quoted for a shell; one with a password is
        named by ``"$HARNESS_STORE"`` when that is where it came from, else shown masked."""
        from sqlalchemy.engine import make_url

        url = str(self.url)
        try:
            parsed = make_url(url)
        except Exception:  # noqa: BLE001 - a URL the store refused is shown as given
            return shlex.quote(url)
        if parsed.password is None:
            return shlex.quote(url)
        if os.environ.get(STORE_ENV) == url:
            return f'"${STORE_ENV}"'
        return shlex.quote(parsed.render_as_string(hide_password=True))

    # ------------------------------------------------------------ reading history

    def history(self) -> Store:
        """Where history is read: the database when there is one, else the folder."""
        if self._history is None:
            folder = open_store(self.history_dir)
            self._history = folder
            if self.url and not self.given_up:
                started = time.monotonic()
                try:
                    self._history = self.database()
                except Exception as exc:  # noqa: BLE001 - the folder answers instead
                    error = _named(exc, self.location)
                    if self._failed(error, exc, started):
                        self._give_up(error, None)
                    self._fell_back(folder.location, error)
        return self._history

    def cell_history(self, cell_id: str) -> list[CellResult]:
        """Every stored document of the cell, oldest first; a store that fails while read
        gives way to the folder for the rest of the run.  Unreadable documents are left
        out, said once, and counted in ``history_note``."""
        store = self.history()
        started = time.monotonic()
        try:
            found = store.results(cell_id)
        except Exception as exc:  # noqa: BLE001 - the folder answers instead
            error = _named(exc, self.location)
            if self._failed(error, exc, started):
                self._give_up(error, None)
            self._fell_back(self.history_dir, error)
            store = self._history = open_store(self.history_dir)
            found = store.results(cell_id)
        new = [u for u in store.unreadable if u not in self._skipped]
        if new:
            if not self._skipped:
                self.say(f"history: {skipped_line(new)}; the gate reads the rest")
            self._skipped += new
        return found

    @property
    def history_note(self) -> str | None:
        """Where the history came from when it was not the store, and what it left out."""
        notes = [self._fallback_note, f"history: {skipped_line(self._skipped)}" if self._skipped else None]
        return "; ".join(n for n in notes if n) or None

    def _fell_back(self, folder: object, error: str) -> None:
        self._fallback_note = f"history read from {folder}: the store failed ({error})"
        self.say(self._fallback_note)

    def close(self) -> None:
        if self._sql is not None:
            self._sql.close()


def _named(exc: BaseException, location: str) -> str:
    """A store's failure in one line: a StoreError says it all; anything else is named."""
    if isinstance(exc, StoreError):
        return str(exc)
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{location}: {type(exc).__name__}: {text}" if text else f"{location}: {type(exc).__name__}"


def _budget(name: str, default: float, unit: str, say: Callable[[str], None]) -> float:
    try:
        return seconds_from_env(name, default, unit)
    except StoreError as exc:
        say(f"{exc}; the store's budget uses {default:g}")
        return default
