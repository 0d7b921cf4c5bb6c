import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from harness.measure.metrics import accuracy, compute_metrics, f1_binary


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_f1_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 2, size=408)
    preds = np.where(rng.random(408) < 0.8, refs, 1 - refs)
    assert accuracy(preds, refs) == pytest.approx(accuracy_score(refs, preds), abs=1e-12)
    assert f1_binary(preds, refs) == pytest.approx(f1_score(refs, preds), abs=1e-12)


def test_edge_cases_match_scikit_learn():
    refs = np.array([1, 1, 0, 0])
    for preds in (np.zeros(4, int), np.ones(4, int), np.array([0, 0, 1, 1])):
        assert f1_binary(preds, refs) == pytest.approx(f1_score(refs, preds, zero_division=0))
    # Always answering "paraphrase" on MRPC dev: 279 of 408 positive.
    refs = np.array([1] * 279 + [0] * 129)
    ones = np.ones(408, int)
    assert accuracy(ones, refs) == pytest.approx(0.684, abs=5e-4)
    assert f1_binary(ones, refs) == pytest.approx(0.812, abs=5e-4)


def test_compute_metrics_takes_logits():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [0.0, 1.0]])
    out = compute_metrics((logits, np.array([0, 1, 0])))
    assert out == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(f1_score([0, 1, 0], [0, 1, 1]))}


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="3 predictions for 2 references"):
        accuracy([1, 0, 1], [1, 0])
