"""``python -m harness compare OLD NEW``: two result sets side by side, with noise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import OUTPUT_HELP, STORE_HELP, write_out

NAME = "compare"
HELP = "two result sets side by side"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", help="run folder, results folder or --benchmark-json file; with --store, a run id")
    parser.add_argument("new", help="run folder, results folder or --benchmark-json file; with --store, a run id "
                        "(or latest)")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP)
    parser.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    parser.add_argument("--only-changed", action="store_true", help="leave out the cells whose verdict is unchanged")
    parser.add_argument("--sort", choices=("name", "ratio"), default="name",
                        help="order of the rows (ratio: worst first)")
    parser.add_argument("--wide", action="store_true", help="full cell ids (the table is otherwise at most 120 columns)")
    parser.add_argument("--output", type=Path, help=OUTPUT_HELP)
    parser.add_argument("--fail-on", choices=("regression", "never"), default="never",
                        help="exit 1 when a cell is slower, uses more memory or drops out of its quality band")


def run(args: argparse.Namespace) -> int:
    from ..report.compare import compare
    from ..report.compare_text import render
    from ..report.sides import load_run_from_store, load_side

    if args.store:
        from ..store import open_store

        with open_store(args.store) as store:
            old, new = load_run_from_store(store, args.old), load_run_from_store(store, args.new)
            if store.unreadable:
                print(store.skipped_line(), file=sys.stderr)
    else:
        old, new = load_side(args.old), load_side(args.new)
    comparison = compare(old, new)
    text = render(comparison, args.format, only_changed=args.only_changed, sort=args.sort,
                  width=None if args.wide else 120)
    write_out(text, args.output)
    return 1 if args.fail_on == "regression" and comparison.regressions() else 0
