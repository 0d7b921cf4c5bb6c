"""Does measuring slow training down?  Bare Trainer vs instrumented harness, same cell.

Both sides fine-tune the same cell from the same seed; the figure is the wall time of
``trainer.train()`` (synchronized on a GPU), so the harness's collator counting, step
marks and sampler thread are all inside what is compared.  Repeats run in ABBA order so a
drift of the machine's speed falls on both sides alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from .runner import prepare_cell, run_cell
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


def bare_train_wall(cell: CellSpec, *, use_cuda: bool, glue_dir: str | None) -> float:
    with tempfile.TemporaryDirectory(prefix="harness-bare-") as scratch:
        prepared = prepare_cell(cell, use_cuda=use_cuda, output_dir=scratch, glue_dir=glue_dir)
        trainer = prepared.make_trainer()
        if use_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train()
        if use_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def harness_train_wall(cell: CellSpec, *, use_cuda: bool, glue_dir: str | None) -> float:
    result = run_cell(cell, run_id="overhead", use_cuda=use_cuda, glue_dir=glue_dir)
    if not result.ok:
        raise RuntimeError(f"{cell.id}: {result.status}: {result.reason}")
    return float(result.metrics["train_wall_s"])


def measure_overhead(cell: CellSpec, *, repeats: int, use_cuda: bool, glue_dir: str | None) -> OverheadResult:
    bare: list[float] = []
    harness: list[float] = []
    # One untimed run of each first: tokenization caches, allocator, kernels.
    bare_train_wall(cell, use_cuda=use_cuda, glue_dir=glue_dir)
    for i in range(repeats):
        order = ("bare", "harness") if i % 2 == 0 else ("harness", "bare")
        for side in order:
            if side == "bare":
                bare.append(bare_train_wall(cell, use_cuda=use_cuda, glue_dir=glue_dir))
            else:
                harness.append(harness_train_wall(cell, use_cuda=use_cuda, glue_dir=glue_dir))
    return OverheadResult(cell.id, tuple(bare), tuple(harness))
