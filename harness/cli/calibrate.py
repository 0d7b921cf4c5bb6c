"""``python -m harness calibrate RUN_DIR...``: false alarms and the smallest caught slowdown,
from unchanged runs (``judge.calibrate``), printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..project import baselines_dir

NAME = "calibrate"
HELP = "false alarms and the smallest caught slowdown, from unchanged runs"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--baselines", type=Path, default=baselines_dir())
    parser.add_argument("--confirm", type=int, default=2)
    parser.add_argument("--matrix", type=Path, help="judge with the thresholds this matrix declares now")


def run(args: argparse.Namespace) -> int:
    from ..judge.calibrate import calibrate
    from ..measure.vocabulary import THROUGHPUT

    report = calibrate(args.baselines, args.runs, args.confirm, args.matrix)
    print(f"runs: {len(args.runs)}; cell verdicts: {report['verdicts']}")
    print(f"first measurements past a threshold: {report['first_crossings']}")
    print(f"false regressions after confirmation: {report['false_alarms']}")
    for cell_id, cell in report["cells"].items():
        changes = ", ".join(f"{c:+.1%}" for c in cell["changes"])
        print(f"  {cell_id}: {THROUGHPUT} vs baseline {changes}; false alarms {cell['false_alarms']}")
        for alarm in cell.get("alarms", []):
            print(f"    alarm: {'; '.join(alarm)}")
    print("planted slowdown -> share of verdicts that catch it:")
    for s, share in report["detection"].items():
        print(f"  {s:.0%}: {share:.0%}")
    smallest = report["smallest_reliably_caught"]
    print(f"smallest slowdown caught in every verdict: {'none of those tried' if smallest is None else f'{smallest:.0%}'}")
    return 0
