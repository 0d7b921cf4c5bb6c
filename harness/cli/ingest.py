"""``python -m harness ingest RESULTS_DIR --store URL``: run folders into a database."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "ingest"
HELP = "load run folders into a database (idempotent: twice changes nothing)"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", type=Path, help="a results folder (runs/<run-id>/...)")
    parser.add_argument("--store", metavar="URL", required=True, help="sqlite:///FILE or postgresql://USER@HOST/DB")
    parser.add_argument("--run", dest="runs", action="append", metavar="RUN_ID", help="only these runs (repeatable)")


def run(args: argparse.Namespace) -> int:
    from ..store.ingest import ingest
    from ..store.sql import SqlStore

    store = SqlStore(args.store)
    try:
        print(ingest(args.results_dir, store, args.runs).line(store))
    finally:
        store.close()
    return 0
