"""Cells on several devices: the ``nproc`` axis, run under torchrun with DDP.

A cell with ``nproc = N`` is launched as ``torchrun --standalone --nproc_per_node N -m
harness.worker``; every rank fine-tunes its shard through the ordinary Trainer (which
wraps the model in DistributedDataParallel: NCCL on GPUs, gloo on CPUs), token counts are
gathered from all ranks, and rank 0 writes the one result, with the global batch size,
global and per-device throughput.  Scaling efficiency against the single-device cell is
``global samples/s / (N x single-device samples/s)``.

On a multi-node cluster, launch the same worker with torchrun's rendezvous on every node
(see the README): the worker does not care how it was started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .measure import BatchCount, group_batches
from .results import CellResult, read_result
from .spec import CellSpec


def in_worker() -> bool:
    """True inside a process that torchrun (or another launcher) started as one rank."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def launch(spec: CellSpec, *, run_id: str, use_cuda: bool, glue_dir: str | None, timeout_s: float = 3600) -> CellResult:
    """Run the cell under torchrun with ``spec.nproc`` processes; returns rank 0's result."""
    with tempfile.TemporaryDirectory(prefix=f"harness-ddp-{spec.id}-") as scratch:
        spec_file, out_file, log_file = (Path(scratch) / name for name in ("spec.json", "result.json", "torchrun.log"))
        spec_file.write_text(json.dumps(spec.to_dict()))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.nproc}",
            "-m", "harness.worker", "--spec", str(spec_file), "--out", str(out_file), "--run-id", run_id,
        ]
        if use_cuda:
            command.append("--cuda")
        env = dict(os.environ)
        if glue_dir:
            env["GLUE_DIR"] = str(glue_dir)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // spec.nproc)))
        with log_file.open("w") as log:
            try:
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        if out_file.exists():
            return read_result(out_file)
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"torchrun with {spec.nproc} processes ended ({code}) without a result; its log ends:\n{tail}")


def gather_batches(batches: list[BatchCount], steps: int, accumulation: int) -> list[BatchCount]:
    """Every rank's counts, summed step by step (ranks step in lockstep under DDP)."""
    import torch.distributed as dist

    mine = group_batches(batches, steps, accumulation)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return merge_ranks(everyone)


def merge_ranks(per_rank: list[list[BatchCount]]) -> list[BatchCount]:
    steps = min(len(r) for r in per_rank)
    return [
        BatchCount(
            sum(r[i].samples for r in per_rank),
            sum(r[i].real_tokens for r in per_rank),
            sum(r[i].padded_tokens for r in per_rank),
            sum(r[i].sum_sq_lengths for r in per_rank),
        )
        for i in range(steps)
    ]


def scaling_efficiency(result: CellResult, single: CellResult) -> float | None:
    """Global throughput over N times the single-device cell's."""
    n = result.spec.nproc
    multi, one = result.metrics.get("train_samples_per_s"), single.metrics.get("train_samples_per_s")
    if not (multi and one) or n < 2:
        return None
    return multi / (n * one)
