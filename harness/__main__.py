"""``python -m harness compare OLD NEW`` | ``report RESULTS_DIR`` | ``calibrate RUN_DIR ...`` |
``accept CELL... --from RUN_ID -m WHY`` | ``changes [RESULTS_DIR]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .results import ResultsError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness", description="Trainer fine-tune benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)

    cmp_ = sub.add_parser("compare", help="two result sets side by side")
    cmp_.add_argument("old", type=Path, help="run folder, results folder or --benchmark-json file")
    cmp_.add_argument("new", type=Path, help="run folder, results folder or --benchmark-json file")
    cmp_.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    cmp_.add_argument("--output", type=Path, help="write here instead of standard output")
    cmp_.add_argument("--fail-on", choices=("regression", "never"), default="never",
                      help="exit 1 when a cell is slower, uses more memory or drops out of its quality band")

    rep = sub.add_parser("report", help="an HTML report of every stored run")
    rep.add_argument("results_dir", type=Path)
    rep.add_argument("--output", type=Path, help="default: RESULTS_DIR/report.html")
    rep.add_argument("--csv", type=Path, help="also write the DataFrame (one row per cell per run) as CSV")

    cal = sub.add_parser("calibrate", help="false alarms and the smallest caught slowdown, from unchanged runs")
    cal.add_argument("runs", nargs="+", type=Path)
    cal.add_argument("--baselines", type=Path, default=Path("results/baselines"))
    cal.add_argument("--confirm", type=int, default=2)
    cal.add_argument("--matrix", type=Path, help="judge with the thresholds this matrix declares now")

    acc = sub.add_parser("accept", help="accept a change of level: the cells' history windows restart at RUN_ID")
    acc.add_argument("cells", nargs="+", metavar="CELL", help="cell ids (see the run folder's file names)")
    acc.add_argument("--from", dest="from_run", required=True, metavar="RUN_ID", help="the first run of the new level")
    acc.add_argument("-m", "--message", required=True, help="why the change is accepted (kept with it, shown in the report)")
    acc.add_argument("--results-dir", type=Path, default=Path("results"))

    chg = sub.add_parser("changes", help="where each cell's level changed over its whole history (change points)")
    chg.add_argument("results_dir", type=Path, nargs="?", default=Path("results"))
    chg.add_argument("--format", choices=("table", "json"), default="table")
    chg.add_argument("--output", type=Path, help="write here instead of standard output")

    sim = sub.add_parser("simulate", help="the history gate on simulated nights: false alarms and detection")
    sim.add_argument("rest", nargs=argparse.REMAINDER, help="see python -m harness simulate -- --help")

    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            from .compare import compare, load_side, render

            comparison = compare(load_side(args.old), load_side(args.new))
            text = render(comparison, args.format)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 1 if args.fail_on == "regression" and comparison.regressions() else 0
        if args.command == "simulate":
            from .simulate import main as simulate_main

            return simulate_main([a for a in args.rest if a != "--"])
        if args.command == "changes":
            from .changes import find_changes
            from .changes import render as render_changes

            text = render_changes(find_changes(args.results_dir), args.format)
            if args.output:
                args.output.write_text(text, encoding="utf-8")
            else:
                sys.stdout.write(text)
            return 0
        if args.command == "accept":
            from .accept import accept

            for cell in args.cells:
                entry = accept(args.results_dir, cell, args.from_run, args.message)
                print(f"accepted: {entry['cell']} from {entry['from_run']}: {entry['why']}")
            return 0
        if args.command == "report":
            from .html_report import write_report

            out = write_report(args.results_dir, args.output, csv_path=args.csv)
            print(f"report: {out}")
            return 0
        from .calibrate import main as calibrate_main

        extra = ["--matrix", str(args.matrix)] if args.matrix else []
        return calibrate_main(
            [*map(str, args.runs), "--baselines", str(args.baselines), "--confirm", str(args.confirm), *extra]
        )
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
