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

Every call is bounded in time (``sql_connect.py``: ``HARNESS_STORE_TIMEOUT_S``, default
10 s; for a run's writes, ``watchdog=True``, each unit of work as a whole).  A store opened for reading (``create=False``, what
``open_store`` gives the read-only commands) never creates a file or a schema; its
statements may take ``HARNESS_STORE_READ_TIMEOUT_S`` (default 300 s), as it reads whole
histories.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..results import CellResult, ResultsError, _finite
from .base import Store, StoreError, seconds_from_env
from .runs import manifest_state
from .sql_connect import (
    DEFAULT_TIMEOUT_S,
    RETRIES,
    TIMEOUT_ENV,
    WATCHDOG_TIMEOUTS,
    bounded,
    failed,
    make_engine,
    normalize_url,
    refuse_missing_file,
    transient,
)

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
            refuse_missing_file(self.url, self.location)
        self.engine = make_engine(self.url, create=create, timeout_s=self.timeout_s,
                                  statement_timeout_s=self.statement_timeout_s, location=self.location)
        if create:
            self._with_retries(self._migrate, "create or migrate the schema")
        else:
            self._with_retries(self._check_schema, "read the schema version")

    # ------------------------------------------------------------ connecting

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        return failed(self.location, what, exc, self.timeout_s)

    def _bounded(self, work: Callable[[], Any], what: str) -> Any:
        return bounded(work, what, deadline_s=self.deadline_s, location=self.location, timeout_s=self.timeout_s)

    def _with_retries(self, work: Callable[[], Any], what: str) -> Any:
        """Run ``work``; a lost race (two runners creating the schema, a locked SQLite file,
        a serialization failure) is retried, anything still failing is a ``StoreError``."""
        for attempt in range(RETRIES):
            try:
                return self._bounded(work, what)
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError) as exc:
                if attempt == RETRIES - 1 or not transient(exc):
                    raise self._failed(what, exc) from exc
                time.sleep(0.2 * (attempt + 1))
            except sa.exc.SQLAlchemyError as exc:
                raise self._failed(what, exc) from exc
        raise AssertionError("unreachable")

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
