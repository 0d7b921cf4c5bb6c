"""``python -m harness gpu-kit``: what a GPU machine without network needs, to carry there."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import fail

NAME = "gpu-kit"
HELP = "build what a GPU machine without network needs, to carry there"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("gpu-kit"), help="the folder (git-ignored; replaced)")
    parser.add_argument("--glue-dir", type=Path, help="where MRPC lies (default: $GLUE_DIR)")
    parser.add_argument("--no-wheels", action="store_true", help="leave out the wheels (the machine has them)")


def run(args: argparse.Namespace) -> int:
    from ..gpukit import KitError, build

    try:
        manifest = build(args.out, args.glue_dir, wheels=not args.no_wheels)
    except KitError as exc:
        return fail(exc)
    print(f"kit: {args.out} ({manifest['bytes'] / 2**20:.1f} MiB); run there: bash {args.out}/first_light.sh")
    return 0
