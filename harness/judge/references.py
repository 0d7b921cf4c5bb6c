"""Published MRPC reference scores, each with its source, split and metric.

Figures are in percent, as published.  "dev" is the GLUE MRPC validation split (408
pairs, what the harness evaluates on); "test" is the GLUE test set (1,725 pairs).  A cell
is only gated against a reference of the same split and metric: a test-set figure is
shown beside a dev result, never held against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reference:
    model: str
    checkpoints: tuple[str, ...]  # checkpoint names this figure stands for
    task: str
    split: str  # "dev" or "test"
    metric: str  # "accuracy" or "f1"
    value: float  # percent
    source: str
    note: str = ""


def _load() -> tuple[Reference, ...]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    rows = tomllib.loads(Path(__file__).with_name("references.toml").read_text(encoding="utf-8"))["reference"]
    return tuple(Reference(**{**row, "checkpoints": tuple(row["checkpoints"])}) for row in rows)


REFERENCES: tuple[Reference, ...] = _load()  # references.toml, beside this file

# Seed spread published for MRPC: NVIDIA DeepLearningExamples (BERT-large, 10 seeds) saw an
# accuracy std of 1.23 points.  Used only where a cell has no measured seed spread of its own.
PUBLISHED_SEED_STD_POINTS = 1.23
PUBLISHED_SEED_STD_SOURCE = "NVIDIA DeepLearningExamples PyTorch BERT README, 10 seeds, std 1.23"


def references_for(checkpoint: str, task: str) -> list[Reference]:
    """Every published figure for this checkpoint (by name or its last path component)."""
    names = {checkpoint, checkpoint.rstrip("/").split("/")[-1]}
    return [r for r in REFERENCES if r.task == task and names & set(r.checkpoints)]


def gating_reference(checkpoint: str, task: str, metric: str, split: str = "dev") -> Reference | None:
    """The figure a cell evaluated on ``split`` is held against, for ``metric``: same split, same metric."""
    for ref in references_for(checkpoint, task):
        if ref.split == split and ref.metric == metric:
            return ref
    return None
