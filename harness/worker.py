"""The child side of a launched cell: ``python -m harness.worker --spec F --out F ...``.

Started by ``harness.launch`` in a fresh process (under torchrun, one per rank, for
``nproc > 1``).  It writes its environment as soon as it has one (so a child that dies
later still says where it ran), reports its progress through the memory-mapped board,
fine-tunes the cell, and writes the result document.  Every rank fine-tunes; rank 0 writes.

``--bare`` trains the same cell with a bare ``Trainer`` (no instruments) and writes only
its training wall time: the other side of the overhead measurement.

A launched worker dies with its launcher and ends itself a little past its timeout should
nobody be left to end it (``launch/lifeline.py``, started before anything else).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .launch.lifeline import watch_launcher
from .launch.progress import Board
from .results import write_json_atomic
from .spec import CellSpec


def main(argv: list[str] | None = None) -> int:
    watch_launcher()
    parser = argparse.ArgumentParser(prog="python -m harness.worker")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--progress", default=None, help="the progress board file the parent made")
    parser.add_argument("--env-out", type=Path, default=None)
    parser.add_argument("--show-progress", action="store_true")
    parser.add_argument("--bare", action="store_true")
    args = parser.parse_args(argv)

    rank0 = int(os.environ.get("RANK", "0")) == 0
    board = Board(args.progress if int(os.environ.get("LOCAL_RANK", "0")) == 0 else None)
    board.phase("loading")
    spec = CellSpec.from_dict(json.loads(args.spec.read_text()))
    if args.cuda:
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    from .measure.env import environment

    if rank0 and args.env_out is not None:
        write_json_atomic(args.env_out, environment())
    glue_dir = os.environ.get("GLUE_DIR") or None
    if args.bare:
        from .overhead import bare_train_wall

        wall = bare_train_wall(spec, use_cuda=args.cuda, glue_dir=glue_dir, board=board)
        if rank0:
            write_json_atomic(args.out, {"train_wall_s": wall})
        return 0

    from .runner import run_cell

    result = run_cell(
        spec, run_id=args.run_id, use_cuda=args.cuda, glue_dir=glue_dir, show_progress=args.show_progress, board=board
    )
    board.phase("writing")
    if rank0:
        write_json_atomic(args.out, result.to_dict())
    board.phase("done")
    return 0 if result.status in ("ok", "skipped", "oom") else 1


if __name__ == "__main__":
    raise SystemExit(main())
