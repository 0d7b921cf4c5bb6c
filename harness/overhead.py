"""Does measuring slow training down?  Bare Trainer vs instrumented harness, same cell.

Both sides fine-tune the same cell from the same seed, each run in a fresh child process
(``harness.launch``, as every measured execution is); the figure is the wall time of
``trainer.train()`` (synchronized on a GPU), so the harness's collator counting, step
marks, progress board and sampler thread are all inside what is compared.  Repeats run
in ABBA order so a drift of the machine's speed falls on both sides alike.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .launch import launch_cell, run_child
from .launch.progress import NO_BOARD
from .spec import CellSpec


@dataclass(frozen=True)
class OverheadResult:
    cell_id: str
    bare_wall_s: tuple[float, ...]
    harness_wall_s: tuple[float, ...]

    @property
    def ratio(self) -> float:
        """Harness throughput over bare throughput (1.0: no cost; 0.98: 2% slower)."""
        return statistics.median(self.bare_wall_s) / statistics.median(self.harness_wall_s)

    @property
    def noise(self) -> float:
        """Relative spread (max - min) / median of the bare runs: what a rerun alone moves."""
        walls = self.bare_wall_s
        return (max(walls) - min(walls)) / statistics.median(walls)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "bare_train_wall_s": list(self.bare_wall_s),
            "harness_train_wall_s": list(self.harness_wall_s),
            "throughput_ratio": self.ratio,
            "bare_noise": self.noise,
        }


def overhead_cell(cell: CellSpec, steps: int) -> CellSpec:
    return replace(cell, weights="random", max_steps=steps, evaluate=False, label="overhead")


def bare_train_wall(cell: CellSpec, *, use_cuda: bool, glue_dir: str | None, board: Any = NO_BOARD) -> float:
    """In the child (``harness.worker --bare``): a bare Trainer over the same cell."""
    import torch

    from .prepare import prepare_cell

    with tempfile.TemporaryDirectory(prefix="harness-bare-") as scratch:
        prepared = prepare_cell(cell, use_cuda=use_cuda, output_dir=scratch, glue_dir=glue_dir)
        trainer = prepared.make_trainer()
        board.phase("training")
        if use_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train()
        if use_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def _bare_in_child(cell: CellSpec, *, use_cuda: bool, glue_dir: str | None) -> float:
    import os

    from .launch import default_timeout_s

    with tempfile.TemporaryDirectory(prefix="harness-bare-") as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "spec.json").write_text(json.dumps(cell.to_dict()))
        args = ["--spec", str(scratch / "spec.json"), "--run-id", "overhead", "--bare", *(["--cuda"] if use_cuda else [])]
        env = dict(os.environ, **({"GLUE_DIR": str(glue_dir)} if glue_dir else {}))
        outcome = run_child(args, scratch=scratch, timeout_s=default_timeout_s(cell, use_cuda=use_cuda),
                            use_cuda=use_cuda, env=env)
        if outcome.document is None:
            raise RuntimeError(f"{cell.id} (bare Trainer): {outcome.failure('the bare run')['reason']}")
        return float(outcome.document["train_wall_s"])


def harness_train_wall(cell: CellSpec, *, use_cuda: bool, glue_dir: str | None) -> float:
    result = launch_cell(cell, run_id="overhead", use_cuda=use_cuda, glue_dir=glue_dir)
    if not result.ok:
        raise RuntimeError(f"{cell.id}: {result.status}: {result.reason}")
    return float(result.metrics["train_wall_s"])


def measure_overhead(cell: CellSpec, *, repeats: int, use_cuda: bool, glue_dir: str | None) -> OverheadResult:
    bare: list[float] = []
    harness: list[float] = []
    # One untimed run first: the tokenization cache on disk, the file system's page cache.
    _bare_in_child(cell, use_cuda=use_cuda, glue_dir=glue_dir)
    for i in range(repeats):
        order = ("bare", "harness") if i % 2 == 0 else ("harness", "bare")
        for side in order:
            if side == "bare":
                bare.append(_bare_in_child(cell, use_cuda=use_cuda, glue_dir=glue_dir))
            else:
                harness.append(harness_train_wall(cell, use_cuda=use_cuda, glue_dir=glue_dir))
    return OverheadResult(cell.id, tuple(bare), tuple(harness))
