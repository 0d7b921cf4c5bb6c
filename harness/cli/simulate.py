"""``python -m harness simulate RESULT.json --noise N``: the history gate on simulated nights
(``judge.simulate``), printed."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

NAME = "simulate"
HELP = "the history gate on simulated nights: false alarms and detection"
DESCRIPTION = "The history gate, night after night, on simulated noise: false alarms and detection."


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("result", type=Path, help="a stored cell result to clone into nights")
    parser.add_argument("--noise", type=float, required=True, help="relative noise of one night, e.g. 0.01")
    parser.add_argument("--threshold", default="-3%", help="the relative speed threshold (default -3%%)")
    parser.add_argument("--nights", type=int, default=10_000, help="cell-nights for the false-alarm count")
    parser.add_argument("--trials", type=int, default=200, help="independent steps per step size")
    parser.add_argument("--confirm", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)


def legacy_argv(rest: Sequence[str]) -> list[str]:
    """``simulate -- ARGS`` (when simulate parsed its own arguments, after a ``--``) still works."""
    return [a for a in rest if a != "--"]


def run(args: argparse.Namespace) -> int:
    from ..judge.simulate import METRIC, STEPS, detection, false_alarms
    from ..judge.window import DEFAULT_CONFIDENCE, DEFAULT_WINDOW
    from ..results import read_result

    template = read_result(args.result)
    threshold = f"{METRIC}:{args.threshold}"
    fa = false_alarms(template, noise=args.noise, threshold=threshold, nights=args.nights,
                      confirm=args.confirm, seed=args.seed)
    print(f"noise {args.noise:.1%}, threshold {args.threshold}, confirm {args.confirm}, window {DEFAULT_WINDOW}, "
          f"{DEFAULT_CONFIDENCE:.0%} interval")
    print(f"unchanged: {fa['false_regressions']} false regressions in {fa['cell_nights']} cell-nights "
          f"({fa['per_1000']:.2f} per 1,000), {fa['suspect_nights']} suspect nights")
    smallest = None
    for step in STEPS:
        share = detection(template, noise=args.noise, threshold=threshold, step=step, trials=args.trials,
                          confirm=args.confirm, seed=args.seed)
        print(f"step -{step:.0%}: caught within two nights in {share:.0%} of {args.trials}")
        if smallest is None and share >= 0.95:
            smallest = step
    print(f"smallest step caught within two nights in >= 95% of trials: {'none' if smallest is None else f'{smallest:.0%}'}")
    return 0
