"""Reaching a database within bounds: the URL, the engine and its timeouts, the watchdog over
a unit of work, and which failures are worth trying again (``sql.py`` is the store itself).

Every call is bounded in time (``HARNESS_STORE_TIMEOUT_S``, default 10 s): connecting
(psycopg's ``connect_timeout``, SQLite's ``timeout``), each statement (PostgreSQL's
``statement_timeout``, SQLite's busy timeout) and, for a run's writes, each unit of work as
a whole (``bounded``), so that a server that accepts and then never answers costs a bounded
time per attempt.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from .base import StoreError

RETRIES = 5
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


def make_engine(url: sa.URL, *, create: bool, timeout_s: float, statement_timeout_s: float, location: str) -> Engine:
    """The engine: SQLite with its timeouts (WAL for a writer only), or psycopg with connect
    and statement timeouts, TCP timeouts and keepalives."""
    backend = url.get_backend_name()
    timeout = timeout_s
    try:
        if backend == "sqlite":
            engine = sa.create_engine(url, connect_args={"timeout": timeout})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                if create:  # a reader leaves the file as it found it
                    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
                cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                cursor.close()

            return engine
        ms = max(1, int(statement_timeout_s * 1000))
        options = " ".join(filter(None, [url.query.get("options"), f"-c statement_timeout={ms}"]))
        return sa.create_engine(url, pool_pre_ping=True, connect_args={
            "connect_timeout": max(2, math.ceil(timeout)),  # libpq's least
            "options": options,
            # a network that drops packets: unacknowledged data and a silent peer give up too
            "tcp_user_timeout": int(timeout * 1000),
            "keepalives": 1, "keepalives_idle": max(1, int(timeout)), "keepalives_interval": max(1, int(timeout) // 3),
            "keepalives_count": 3,
        })
    except ImportError as exc:
        raise StoreError(f"{location}: the database driver is missing ({exc}); "
                         "pip install 'psycopg[binary]>=3.1'", lasting=True) from None


def refuse_missing_file(url: sa.URL, location: str) -> None:
    """A reader never creates a database: a SQLite file that is not there is an error."""
    if url.get_backend_name() != "sqlite":
        return
    path = Path(url.database or "")
    if not path.is_file():
        raise StoreError(f"{location}: no database file {path.resolve()} (a command that only reads "
                         "never creates one; check the path)", lasting=True)


def failed(location: str, what: str, exc: BaseException, timeout_s: float) -> StoreError:
    text = short(exc)
    if "timeout" in text.lower() or "timed out" in text.lower():
        text += f" (timeout {timeout_s:g} s, {TIMEOUT_ENV})"
    return StoreError(f"{location}: could not {what}: {text}", lasting=lasting(exc))


def bounded(work: Callable[[], Any], what: str, *, deadline_s: float | None, location: str, timeout_s: float) -> Any:
    """``work()``, or with a watchdog: in a thread of its own, given up after ``deadline_s``."""
    if deadline_s is None:
        return work()
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=call, name=f"harness-store: {what}", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():  # left to finish or to die with the process; its connection with it
        raise StoreError(f"{location}: could not {what}: no answer within {deadline_s:g} s "
                         f"({WATCHDOG_TIMEOUTS} x the timeout of {timeout_s:g} s, {TIMEOUT_ENV})")
    if "error" in box:
        raise box["error"]
    return box["value"]


def transient(exc: sa.exc.DBAPIError) -> bool:
    text = str(exc.orig or exc).lower()
    return any(word in text for word in (
        "locked", "busy", "already exists", "duplicate key", "deadlock", "could not serialize", "unique",
    ))


def lasting(exc: BaseException) -> bool:
    """A failure that trying again within a run cannot mend: not a database, wrong credentials
    or database name (a wrong URL in a CI secret).  A server down or slow may come back."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(words in text for words in (
        "file is not a database", "authentication failed", "no password supplied", "role \"",
    )) or ("database \"" in text and "does not exist" in text)


def short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
