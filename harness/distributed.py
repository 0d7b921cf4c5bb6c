"""Cells on several devices: the ``nproc`` axis, run under torchrun with DDP.

A cell with ``nproc = N`` is launched (``harness.launch``) as ``torchrun --standalone
--nproc_per_node N -m harness.worker``, in one process group with one timeout; every
rank fine-tunes its shard through the ordinary Trainer (which wraps the model in
DistributedDataParallel: NCCL on GPUs, gloo on CPUs), token counts are gathered from all
ranks, and rank 0 writes the one result, with the global batch size, global and
per-device throughput.  Scaling efficiency against the single-device cell is
``global samples/s / (N x single-device samples/s)``.

On a multi-node cluster, launch the same worker with torchrun's rendezvous on every node
(see docs/gpu.md): the worker does not care how it was started.
"""

from __future__ import annotations

import os
from typing import Any

from .measure.timing import BatchCount, group_batches
from .results import CellResult


def in_worker() -> bool:
    """True inside a process that torchrun (or another launcher) started as one rank."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


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
