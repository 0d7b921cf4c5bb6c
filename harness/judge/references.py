"""Published MRPC reference scores, each with its source, split and metric.

Figures are in percent, as published.  "dev" is the GLUE MRPC validation split (408
pairs, what the harness evaluates on); "test" is the GLUE test set (1,725 pairs).  A cell
is only gated against a reference of the same split and metric: a test-set figure is
shown beside a dev result, never held against it.
"""

from __future__ import annotations

from dataclasses import dataclass


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


REFERENCES: tuple[Reference, ...] = (
    Reference("BERT-base", ("bert-base-uncased", "bert-base-cased"), "mrpc", "test", "f1", 88.9,
              "Devlin et al. 2018, BERT paper, Table 1"),
    Reference("BERT-large", ("bert-large-uncased", "bert-large-cased"), "mrpc", "test", "f1", 89.3,
              "Devlin et al. 2018, BERT paper, Table 1"),
    Reference("bert-base-uncased", ("bert-base-uncased",), "mrpc", "dev", "accuracy", 84.56,
              "google-research/bert README (batch 32, lr 2e-5, 3 epochs, max length 128)",
              "re-runs give 84 to 88"),
    Reference("bert-base-cased via run_glue.py", ("bert-base-cased",), "mrpc", "dev", "f1", 88.85,
              "transformers examples/pytorch/text-classification/README.md (batch 32, lr 2e-5, length 128, 5 epochs)"),
    Reference("bert-base-cased via run_glue.py", ("bert-base-cased",), "mrpc", "dev", "accuracy", 84.07,
              "transformers examples/pytorch/text-classification/README.md"),
    Reference("distilbert-base-uncased", ("distilbert-base-uncased",), "mrpc", "dev", "f1", 87.5,
              "DistilBERT paper, Table 1, median of 5 seeds", "metric not stated, likely F1"),
    Reference("roberta-base", ("roberta-base",), "mrpc", "dev", "accuracy", 90.2,
              "fairseq examples/roberta/README.md (lr 1e-5, batch 16, 10 epochs)"),
    Reference("roberta-large", ("roberta-large",), "mrpc", "dev", "accuracy", 90.9,
              "fairseq examples/roberta/README.md"),
    Reference("ELECTRA-Small", ("google/electra-small-discriminator",), "mrpc", "dev", "accuracy", 88.0,
              "google-research/electra README, median over seeds"),
    Reference("ELECTRA-Base", ("google/electra-base-discriminator",), "mrpc", "dev", "accuracy", 89.5,
              "google-research/electra README, median over seeds"),
    Reference("MiniLM-L12-H384", ("microsoft/MiniLM-L12-H384-uncased",), "mrpc", "dev", "accuracy", 89.5,
              "microsoft/unilm minilm/README.md"),
    Reference("MiniLM-L6-H384", ("nreimers/MiniLM-L6-H384-uncased",), "mrpc", "dev", "accuracy", 88.9,
              "microsoft/unilm minilm/README.md",
              "the original MiniLM; no MRPC figure is published for sentence-transformers/all-MiniLM-L6-v2"),
    Reference("always 'paraphrase'", ("<majority>",), "mrpc", "dev", "accuracy", 68.4,
              "arithmetic: 279 of 408 dev pairs are positive"),
    Reference("always 'paraphrase'", ("<majority>",), "mrpc", "dev", "f1", 81.2,
              "arithmetic: 279 of 408 dev pairs are positive"),
)

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
