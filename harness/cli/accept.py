"""``python -m harness accept CELL... --from RUN_ID -m WHY``: a new level, accepted."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..project import results_dir

NAME = "accept"
HELP = "accept a change of level: the cells' history windows restart at RUN_ID"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cells", nargs="+", metavar="CELL", help="cell ids (see the run folder's file names)")
    parser.add_argument("--from", dest="from_run", required=True, metavar="RUN_ID",
                        help="the first run of the new level")
    parser.add_argument("-m", "--message", required=True,
                        help="why the change is accepted (kept with it, shown in the report)")
    parser.add_argument("--results-dir", type=Path, default=results_dir())


def run(args: argparse.Namespace) -> int:
    from ..judge.accept import accept

    for cell in args.cells:
        entry = accept(args.results_dir, cell, args.from_run, args.message)
        print(f"accepted: {entry['cell']} from {entry['from_run']}: {entry['why']}")
    return 0
