"""Results in a database: SQLite (embedded) or PostgreSQL (psycopg 3), through SQLAlchemy Core.

Tables (schema version ``SCHEMA_VERSION``, kept in ``harness_meta``)::

    harness_runs          one row per run: run_id (key), matrix, state, night, shard,
                          hardware_key, started_at, finished_at, manifest (the run.json)
    harness_cells         one row per cell of a run: (run_id, cell_id) key, status,
                          verdict, hardware_key, finished_at, document (the cell's JSON)
    harness_measurements  one row per measured execution: (run_id, cell_id, repeat) key,
                          seed, train_samples_per_s, peak memory, figures (JSON)

Every write is an upsert on those keys inside one transaction, so writing a cell twice,
from a retry, from ``ingest`` or from four runners at once, leaves one row with the last
document.  The schema is created on first use; an older schema is brought forward by
the migrations in ``MIGRATIONS`` (one per version step, each in the transaction that
records the new version); a newer one is refused.

Every call is bounded in time (``HARNESS_STORE_TIMEOUT_S``, default 10 s): connecting
(psycopg's ``connect_timeout``, SQLite's ``timeout``), each statement (PostgreSQL's
``statement_timeout``, SQLite's busy timeout) and, for a run's writes (``watchdog=True``),
each unit of work as a whole, so that a server that accepts and then never answers costs
a bounded time per attempt.  A store opened for reading (``create=False``, what
``open_store`` gives the read-only commands) never creates a file or a schema; its
statements may take ``HARNESS_STORE_READ_TIMEOUT_S`` (default 300 s), as it reads whole
histories.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

from ..results import CellResult, ResultsError, _finite, manifest_state
from .base import Store, StoreError, seconds_from_env

SCHEMA_VERSION = 1
# version n -> the function that brings a schema of version n-1 to n, for n >= 2.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
metadata = sa.MetaData()
meta_table = sa.Table(
    "harness_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
runs_table = sa.Table(
    "harness_runs", metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("matrix", sa.String(255)),
    sa.Column("state", sa.String(16)),
    sa.Column("night", sa.String(255), index=True),
    sa.Column("shard", sa.String(32)),
    sa.Column("hardware_key", sa.String(255)),
    sa.Column("started_at", sa.String(32)),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("manifest", _JSON, nullable=False),
)
cells_table = sa.Table(
    "harness_cells", metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("cell_id", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("verdict", sa.String(16)),
    sa.Column("hardware_key", sa.String(255), index=True),
    sa.Column("finished_at", sa.String(32)),
    sa.Column("document", _JSON, nullable=False),
    sa.Index("ix_harness_cells_cell_run", "cell_id", "run_id"),
)
measurements_table = sa.Table(
    "harness_measurements", metadata,
    sa.Column("run_id", sa.String(255), primary_key=True),
    sa.Column("cell_id", sa.String(255), primary_key=True),
    sa.Column("repeat", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seed", sa.Integer),
    sa.Column("train_samples_per_s", sa.Float),
    sa.Column("peak_memory_bytes", sa.Float),
    sa.Column("figures", _JSON, nullable=False),
)

_RETRIES = 5
TIMEOUT_ENV = "HARNESS_STORE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 10.0
READ_TIMEOUT_ENV = "HARNESS_STORE_READ_TIMEOUT_S"
DEFAULT_READ_TIMEOUT_S = 300.0
# A run's unit of work (connect, then a few statements) that has not returned after this
# many timeouts is stuck (a server that stopped mid-statement, where no server-side timeout
# can fire): given up as a failure, its thread left to the process's end.
WATCHDOG_TIMEOUTS = 3


def normalize_url(url: str) -> sa.URL:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default driver is psycopg2)."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise StoreError(f"store URL {url!r} is not a database URL ({exc}); "
                         "use sqlite:///FILE or postgresql://USER@HOST/DATABASE", lasting=True) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        if parsed.drivername in ("postgres", "postgresql"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StoreError(f"store URL {url!r}: a store is a file (sqlite:///FILE); an in-memory database "
                             "would be gone when the run ends", lasting=True)
        return parsed
    raise StoreError(f"store URL {url!r}: {backend!r} is not supported; use sqlite:///FILE or postgresql://...",
                     lasting=True)


class SqlStore(Store):
    """``create``: make the database and its schema (or migrate it) when missing; a store
    opened for reading only (``create=False``) refuses a missing SQLite file or an empty
    database instead.  ``timeout_s``: the connect timeout and, unless ``statement_timeout_s``
    says otherwise, each statement's (default ``$HARNESS_STORE_TIMEOUT_S``, else 10 s).
    ``watchdog``: each unit of work also runs under a deadline of ``WATCHDOG_TIMEOUTS``
    timeouts, in a thread of its own, for a server that stops answering mid-statement."""

    def __init__(self, url: str, *, create: bool = True, timeout_s: float | None = None,
                 statement_timeout_s: float | None = None, watchdog: bool = False):
        self.url = normalize_url(url)
        self.location = self.url.render_as_string(hide_password=True)
        self._unreadable: list[str] = []
        self.create = create
        self.timeout_s = timeout_s or seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
        self.statement_timeout_s = statement_timeout_s or self.timeout_s
        self.deadline_s = WATCHDOG_TIMEOUTS * max(self.timeout_s, self.statement_timeout_s) if watchdog else None
        if not create:
            self._refuse_missing_file()
        self.engine = self._engine()
        if create:
            self._with_retries(self._migrate, "create or migrate the schema")
        else:
            self._with_retries(self._check_schema, "read the schema version")

    # ------------------------------------------------------------ connecting

    def _engine(self) -> Engine:
        backend = self.url.get_backend_name()
        create, timeout = self.create, self.timeout_s
        try:
            if backend == "sqlite":
                engine = sa.create_engine(self.url, connect_args={"timeout": timeout})

                @sa.event.listens_for(engine, "connect")
                def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                    cursor = dbapi_connection.cursor()
                    if create:  # a reader leaves the file as it found it
                        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
                    cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                    cursor.close()

                return engine
            ms = max(1, int(self.statement_timeout_s * 1000))
            options = " ".join(filter(None, [self.url.query.get("options"), f"-c statement_timeout={ms}"]))
            return sa.create_engine(self.url, pool_pre_ping=True, connect_args={
                "connect_timeout": max(2, math.ceil(timeout)),  # libpq's least
                "options": options,
                # a network that drops packets: unacknowledged data and a silent peer give up too
                "tcp_user_timeout": int(timeout * 1000),
                "keepalives": 1, "keepalives_idle": max(1, int(timeout)), "keepalives_interval": max(1, int(timeout) // 3),
                "keepalives_count": 3,
            })
        except ImportError as exc:
            raise StoreError(f"{self.location}: the database driver is missing ({exc}); "
                             "pip install 'psycopg[binary]>=3.1'", lasting=True) from None

    def _refuse_missing_file(self) -> None:
        """A reader never creates a database: a SQLite file that is not there is an error."""
        if self.url.get_backend_name() != "sqlite":
            return
        path = Path(self.url.database or "")
        if not path.is_file():
            raise StoreError(f"{self.location}: no database file {path.resolve()} (a command that only reads "
                             "never creates one; check the path)", lasting=True)

    def _with_retries(self, work: Callable[[], Any], what: str) -> Any:
        """Run ``work``; a lost race (two runners creating the schema, a locked SQLite file,
        a serialization failure) is retried, anything still failing is a ``StoreError``."""
        for attempt in range(_RETRIES):
            try:
                return self._bounded(work, what)
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
                if attempt == _RETRIES - 1 or not _transient(exc):
                    raise self._failed(what, exc) from exc
                time.sleep(0.2 * (attempt + 1))
            except sa.exc.SQLAlchemyError as exc:
                raise self._failed(what, exc) from exc
        raise AssertionError("unreachable")

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        text = _short(exc)
        if "timeout" in text.lower() or "timed out" in text.lower():
            text += f" (timeout {self.timeout_s:g} s, {TIMEOUT_ENV})"
        return StoreError(f"{self.location}: could not {what}: {text}", lasting=_lasting(exc))

    def _bounded(self, work: Callable[[], Any], what: str) -> Any:
        """``work()``, or with a watchdog: in a thread of its own, given up after ``deadline_s``."""
        if self.deadline_s is None:
            return work()
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=call, name=f"harness-store: {what}", daemon=True)
        thread.start()
        thread.join(self.deadline_s)
        if thread.is_alive():  # left to finish or to die with the process; its connection with it
            raise StoreError(f"{self.location}: could not {what}: no answer within {self.deadline_s:g} s "
                             f"({WATCHDOG_TIMEOUTS} x the timeout of {self.timeout_s:g} s, {TIMEOUT_ENV})")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ schema

    def schema_version(self) -> int | None:
        with self.engine.connect() as conn:
            return _version(conn, self.location)

    def _check_schema(self) -> None:
        """For reading: a schema this harness reads, or a one-line error; nothing written."""
        with self.engine.connect() as conn:
            version = _version(conn, self.location)
        if version is None:
            raise StoreError(f"{self.location}: holds no harness tables (nothing was ever stored there; "
                             "check the URL)", lasting=True)
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        if version < SCHEMA_VERSION:
            raise StoreError(f"{self.location}: schema version {version} is older than this harness reads "
                             f"({SCHEMA_VERSION}); a write brings it forward (python -m harness ingest, or a run "
                             "with --store)", lasting=True)

    def _newer(self, version: int) -> StoreError:
        return StoreError(f"{self.location}: schema version {version} is newer than this harness reads "
                          f"({SCHEMA_VERSION}); upgrade the harness", lasting=True)

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(74657315)"))  # one migrator at a time
            version = _version(conn, self.location)
            if version is None:
                metadata.create_all(conn)
                _set_version(conn, SCHEMA_VERSION)
                return
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step](conn)
                _set_version(conn, step)

    # ------------------------------------------------------------ writing

    def put_run(self, manifest: dict[str, Any]) -> None:
        row = _run_row(manifest)
        self._with_retries(lambda: self._upsert_all(runs_table, [row]), f"write run {row['run_id']}")

    def put_cell(self, result: CellResult) -> None:
        document = result.to_dict()
        rows = _measurement_rows(result)

        def write() -> None:
            with self.engine.begin() as conn:
                self._upsert(conn, cells_table, [_cell_row(document)])
                conn.execute(sa.delete(measurements_table).where(
                    measurements_table.c.run_id == result.run_id, measurements_table.c.cell_id == result.id,
                    measurements_table.c.repeat >= len(rows)))
                self._upsert(conn, measurements_table, rows)

        self._with_retries(write, f"write cell {result.id} of run {result.run_id}")

    def _upsert_all(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            self._upsert(conn, table, rows)

    @staticmethod
    def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        keys = [c.name for c in table.primary_key.columns]
        for row in rows:
            statement = insert(table).values(**row)
            conn.execute(statement.on_conflict_do_update(
                index_elements=keys, set_={k: statement.excluded[k] for k in row if k not in keys}))

    # ------------------------------------------------------------ reading

    def manifests(self, run_ids: Iterable[str] | None = None, *, night: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(runs_table.c.run_id, runs_table.c.manifest).order_by(runs_table.c.run_id)
        if run_ids is not None:
            query = query.where(runs_table.c.run_id.in_(list(run_ids)))
        if night is not None:
            query = query.where(runs_table.c.night == night)
        rows = self._with_retries(lambda: self._fetch(query), "read runs")
        return [{**manifest, "run_id": run_id, "state": manifest_state(manifest)} for run_id, manifest in rows]

    def results(self, cell_id: str | None = None, *, run_ids: Iterable[str] | None = None) -> list[CellResult]:
        query = sa.select(cells_table.c.run_id, cells_table.c.cell_id, cells_table.c.document).order_by(
            cells_table.c.run_id, cells_table.c.cell_id)
        if cell_id is not None:
            query = query.where(cells_table.c.cell_id == cell_id)
        if run_ids is not None:
            query = query.where(cells_table.c.run_id.in_(list(run_ids)))
        out = []
        for run_id, cid, document in self._with_retries(lambda: self._fetch(query), "read cells"):
            try:
                out.append(CellResult.from_dict(document, source=f"{self.location} run {run_id} cell {cid}"))
            except ResultsError as exc:
                self._unreadable.append(str(exc))
        return out

    def count(self, table: str = "harness_cells") -> int:
        chosen = metadata.tables[table]
        return self._with_retries(lambda: self._fetch(sa.select(sa.func.count()).select_from(chosen))[0][0], "count")

    def _fetch(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())


def _version(conn: Connection, location: str) -> int | None:
    if not sa.inspect(conn).has_table(meta_table.name):
        return None
    value = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")).scalar()
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise StoreError(f"{location}: its schema version ({meta_table.name}, key schema_version) is {value!r}, "
                         f"not a number; this database was not written by the harness, or was damaged "
                         f"(this harness writes version {SCHEMA_VERSION})", lasting=True) from None


def _set_version(conn: Connection, version: int) -> None:
    SqlStore._upsert(conn, meta_table, [{"key": "schema_version", "value": str(version)}])


def _transient(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig or exc).lower()
    return any(word in text for word in (
        "locked", "busy", "already exists", "duplicate key", "deadlock", "could not serialize", "unique",
    ))


def _lasting(exc: BaseException) -> bool:
    """A failure that trying again within a run cannot mend: not a database, wrong credentials
    or database name (a wrong URL in a CI secret).  A server down or slow may come back."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(words in text for words in (
        "file is not a database", "authentication failed", "no password supplied", "role \"",
    )) or ("database \"" in text and "does not exist" in text)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _run_row(manifest: dict[str, Any]) -> dict[str, Any]:
    shard = manifest.get("shard") or {}
    return {
        "run_id": manifest["run_id"],
        "matrix": manifest.get("matrix"),
        "state": manifest.get("state"),
        "night": manifest.get("night"),
        "shard": f"{shard['index']}/{shard['count']}" if shard else None,
        "hardware_key": (manifest.get("env") or {}).get("hardware_key"),
        "started_at": manifest.get("started_at"),
        "finished_at": manifest.get("finished_at"),
        "manifest": _finite(manifest),
    }


def _cell_row(document: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": document["run_id"],
        "cell_id": document["id"],
        "status": document["status"],
        "verdict": (document.get("verdict") or {}).get("verdict"),
        "hardware_key": (document.get("env") or {}).get("hardware_key"),
        "finished_at": document.get("finished_at"),
        "document": document,
    }


def _measurement_rows(result: CellResult) -> list[dict[str, Any]]:
    """One row per measured execution: the folded repeats, or the one measurement."""
    repeats = result.samples.get("repeats") or ([dict(result.metrics, seed=result.spec.seed)] if result.ok else [])
    rows = []
    for i, figures in enumerate(repeats):
        kept = _finite({k: v for k, v in figures.items() if k not in ("raw", "launch")})
        memory = kept.get("peak_mem_reserved_bytes", kept.get("peak_rss_bytes"))
        rows.append({
            "run_id": result.run_id, "cell_id": result.id, "repeat": i, "seed": kept.get("seed", result.spec.seed),
            "train_samples_per_s": kept.get("train_samples_per_s"), "peak_memory_bytes": memory, "figures": kept,
        })
    return rows
