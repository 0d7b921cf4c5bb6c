"""Bucketed padding whose timed window stands for the whole epoch.

``padding = "bucketed"`` is the Trainer's ``group_by_length``: its ``LengthGroupedSampler``
shuffles, cuts the shuffle into mega-batches of 50 batches, sorts each mega-batch by length
(longest first) and puts the batch holding the longest example first.  Every batch is
then of similar lengths, but the order of batches is not: a 30-step cell trains on the
first 30 batches of the first mega-batch, its longest 60%, and its samples/s cannot be
held against dynamic padding's, whose batches are a random draw.

``StratifiedBatchOrder`` keeps the Trainer's batches exactly (the same examples in the same
batches, the longest one first, so memory is still tested at once) and changes only the
order of the rest: batch ``k`` after the first gets the length rank at the golden-ratio
point ``frac(u + k * 0.618...)``, so any run of consecutive steps draws evenly from the
short, middle and long batches of the epoch.  An epoch trains on the same batches either
way; the timed window of a short cell now holds real tokens per step within about 1% of
the epoch's average (``timed_window_token_ratio`` in every result).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

GOLDEN = (math.sqrt(5) - 1) / 2


def stratified_order(batch_lengths: Sequence[float], offset: float) -> list[int]:
    """Positions for batches 1..n-1 (batch 0 stays first): the j-th shortest batch goes to
    the position whose golden-ratio key is the j-th smallest."""
    rest = list(range(1, len(batch_lengths)))
    if len(rest) < 2:
        return [0, *rest]
    by_length = sorted(rest, key=lambda b: (batch_lengths[b], b))
    keys = sorted(range(len(rest)), key=lambda k: (offset + (k + 1) * GOLDEN) % 1.0)
    order = [0] * len(rest)
    for position, batch in zip(keys, by_length):
        order[position] = batch
    return [0, *order]


class StratifiedBatchOrder(torch.utils.data.Sampler):
    """Wraps a ``LengthGroupedSampler``: the same batches, in a stratified order."""

    def __init__(self, inner: torch.utils.data.Sampler, lengths: Sequence[int], batch_size: int):
        self.inner = inner
        self.lengths = list(lengths)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[int]:
        indices = list(iter(self.inner))
        size = self.batch_size
        batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        tail = [batches.pop()] if batches and len(batches[-1]) < size else []  # a short last batch stays last
        means = [sum(self.lengths[i] for i in b) / len(b) for b in batches]
        offset = (indices[0] * GOLDEN) % 1.0 if indices else 0.0  # from the shuffle: seeded, no RNG drawn
        for position in stratified_order(means, offset):
            yield from batches[position]
        for batch in tail:
            yield from batch


def epoch_mean_length(lengths: Sequence[int]) -> float:
    return sum(lengths) / len(lengths) if lengths else float("nan")
