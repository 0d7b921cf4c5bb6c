"""Task quality metrics, computed here so that no run needs the hub.

``evaluate.load("glue", "mrpc")`` fetches its script from the hub; these give the same
figures (accuracy, and binary F1 of the positive class "paraphrase" = 1, as
scikit-learn's ``accuracy_score`` and ``f1_score`` compute them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    preds, refs = _arrays(predictions, references)
    return float((preds == refs).mean())


def f1_binary(predictions: Sequence[int], references: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class; 0.0 when there is no true positive (scikit-learn's zero_division=0)."""
    preds, refs = _arrays(predictions, references)
    tp = int(np.sum((preds == positive) & (refs == positive)))
    fp = int(np.sum((preds == positive) & (refs != positive)))
    fn = int(np.sum((preds != positive) & (refs == positive)))
    if tp == 0:
        return 0.0
    return 2 * tp / (2 * tp + fp + fn)


def glue_mrpc(predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    return {"accuracy": accuracy(predictions, references), "f1": f1_binary(predictions, references)}


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """A Trainer ``compute_metrics``: logits -> argmax -> accuracy and F1."""
    logits, labels = eval_pred[0], eval_pred[1]
    if isinstance(logits, tuple):
        logits = logits[0]
    return glue_mrpc(np.argmax(logits, axis=-1), labels)


def _arrays(predictions: Sequence[int], references: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    preds = np.asarray(predictions).reshape(-1)
    refs = np.asarray(references).reshape(-1)
    if preds.shape != refs.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {refs.shape[0]} references")
    if preds.size == 0:
        raise ValueError("no predictions to score")
    return preds, refs
