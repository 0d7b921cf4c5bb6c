"""``python -m harness changes [RESULTS_DIR]``: change points over every cell's history."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..project import results_dir
from . import OUTPUT_HELP, STORE_HELP, write_out

NAME = "changes"
HELP = "where each cell's level changed over its whole history (change points)"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", type=Path, nargs="?", default=results_dir())
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--output", type=Path, help=OUTPUT_HELP)


def run(args: argparse.Namespace) -> int:
    """The changes; documents left out as unreadable are counted and the first named (the
    table's last line; standard error with ``--format json``)."""
    import sys

    from ..judge.changes import find_changes, open_history, render

    with open_history(args.store or args.results_dir) as store:
        changes = find_changes(store)
    write_out(render(changes, args.format, skipped=store.unreadable), args.output)
    if store.unreadable and (args.format == "json" or args.output):
        print(store.skipped_line(), file=sys.stderr)
    return 0
