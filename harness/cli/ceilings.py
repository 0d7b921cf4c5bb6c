"""``python -m harness ceilings --out FILE``: this GPU's measured matmul rates and copy bandwidth."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import fail

NAME = "ceilings"
HELP = "measure this GPU's matmul rates and copy bandwidth (for MFU against them)"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the JSON file; name it in HARNESS_MEASURED_PEAKS")


def run(args: argparse.Namespace) -> int:
    from ..measure.ceilings import write

    try:
        figures = write(args.out)
    except RuntimeError as exc:
        return fail(exc)
    rates = ", ".join(f"{k} {v:.1f}" for k, v in figures["matmul_tflops"].items())
    print(f"{figures['device']}: matmul TFLOP/s {rates}; copy {figures['copy']['gbps']:.0f} GB/s -> {args.out}")
    return 0
