"""``python -m harness merge [SHARD_DIR...] [--night ID]``: one verdict table for a night run
in shards (``--shard I/N``), from shard artifacts or a store (``store.shards.gather``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..project import results_dir

NAME = "merge"
HELP = "one verdict table for a night run in shards (--shard I/N)"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="*", type=Path,
                        help="shard artifacts (results folders or run folders), copied into --into")
    parser.add_argument("--into", type=Path, default=results_dir(), help="the results folder to gather them in")
    parser.add_argument("--night", help="the night's id (pytest --night); default: the runs given as sources")
    parser.add_argument("--store", metavar="URL", help="read the night's runs from this database instead")
    parser.add_argument("--format", choices=("table", "markdown"), default="table")


def run(args: argparse.Namespace) -> int:
    return main_merge(args.sources, into=args.into, night=args.night, store_url=args.store, fmt=args.format)


def main_merge(sources: Sequence[Path], *, into: Path, night: str | None, store_url: str | None,
               fmt: str = "table") -> int:
    """The merged night printed: exit 0 when every selected cell ran once and none failed,
    1 when a cell failed or the night is incomplete."""
    from ..judge.causes import cause_lines
    from ..report.summary import judged_summary
    from ..report.tables import summary_table
    from ..store import open_store
    from ..store.shards import collect, failing, gather

    run_ids = collect(sources, into) if sources else None
    with open_store(store_url or into) as store:
        found = gather(store, night=night, run_ids=None if night else run_ids)
        if store.unreadable:  # a damaged document is named, not taken for a cell that never ran
            found.problems.insert(0, store.skipped_line())
    print(found.describe())
    print(summary_table(sorted(found.results, key=lambda r: r.id), tablefmt="github" if fmt == "markdown" else "simple"))
    print(judged_summary(found.results))
    for line in cause_lines(found.results):  # one line per cause: the cells that went bad the same way
        print(line)
    for problem in found.problems:
        print(f"INCOMPLETE NIGHT: {problem}")
    failed = [r.id for r in found.results if failing(r)]
    if failed:
        print(f"failed: {len(failed)} cells: {', '.join(failed[:10])}")
    return 1 if failed or found.problems else 0
