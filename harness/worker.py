"""One rank of a multi-process cell: ``torchrun ... -m harness.worker --spec F --out F``.

Every rank fine-tunes; rank 0 writes the result document to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .results import write_json_atomic
from .runner import run_cell
from .spec import CellSpec


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.worker")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--cuda", action="store_true")
    args = parser.parse_args()
    spec = CellSpec.from_dict(json.loads(args.spec.read_text()))
    if args.cuda:
        import torch

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    result = run_cell(spec, run_id=args.run_id, use_cuda=args.cuda, glue_dir=os.environ.get("GLUE_DIR"))
    if int(os.environ.get("RANK", "0")) == 0:
        write_json_atomic(args.out, result.to_dict())
    return 0 if result.status in ("ok", "skipped", "oom") else 1


if __name__ == "__main__":
    raise SystemExit(main())
