"""What is kept, read one way: a results folder or a database behind one interface.

    open_store("results")                      # runs/<run-id>/*.json, as the harness writes them
    open_store("sqlite:///history.db")         # embedded, no setup
    open_store("postgresql://user@host/db")    # shared by every runner (psycopg 3)

The gate's history window, ``changes``, ``report`` and ``compare`` read through ``Store``;
``open_store`` opens for reading only: it never creates a database file or a schema.  A
run writes its folder (the artifact of record) and, with ``--store URL``, the database as
well (``mirror.py``, ``sql.py``); those, and ``ingest`` (folders into a database), may
create it.  ``shards`` splits a night's matrix over machines.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import STORE_ENV, Store, StoreError, is_url, seconds_from_env


def open_store(location: str | os.PathLike[str] | None = None) -> Store:
    """A results folder or a database URL (default: ``$HARNESS_STORE``), for reading: a
    SQLite file that is not there, or a database without the harness's tables, is a
    StoreError naming it, never created."""
    location = location if location is not None else os.environ.get(STORE_ENV)
    if not location:
        raise StoreError(f"no store given: pass a results folder or a database URL, or set {STORE_ENV}")
    if is_url(location):
        from .sql import SqlStore
        from .sql_connect import DEFAULT_READ_TIMEOUT_S, READ_TIMEOUT_ENV

        return SqlStore(str(location), create=False,
                        statement_timeout_s=seconds_from_env(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT_S))
    from .files import FolderStore

    return FolderStore(Path(location))


__all__ = ["STORE_ENV", "Store", "StoreError", "is_url", "open_store"]
