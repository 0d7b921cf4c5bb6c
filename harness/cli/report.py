"""``python -m harness report RESULTS_DIR``: the interactive HTML report of every stored run."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import STORE_HELP, UsageError

NAME = "report"
HELP = "an HTML report of every stored run"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", type=Path, nargs="?", help="a results folder (or give --store URL)")
    parser.add_argument("--store", metavar="URL", help=STORE_HELP + "; RESULTS_DIR then only supplies baselines "
                        "and accepted changes")
    parser.add_argument("--output", type=Path, help="default: RESULTS_DIR/report.html")
    parser.add_argument("--csv", type=Path, help="also write the DataFrame (one row per cell per run) as CSV")
    parser.add_argument("--matrix", metavar="NAME_OR_PATH", help="the matrix whose [gate] window and confidence the "
                        "bands are drawn with (default: benchmarks/NAME.toml for the matrix each run names, else the "
                        "gate's defaults)")


def run(args: argparse.Namespace) -> int:
    from ..report.html import write_report
    from ..store import open_store

    if not args.store and not args.results_dir:
        raise UsageError("report needs a results folder or --store URL")
    with open_store(args.store or args.results_dir) as store:
        out = write_report(store, args.output, csv_path=args.csv, results_dir=args.results_dir, matrix=args.matrix)
    print(f"report: {out}")
    if store.unreadable:  # the page says so too
        print(store.skipped_line())
    return 0
