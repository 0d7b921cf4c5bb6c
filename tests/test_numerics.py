"""Divergence stopped early: a NaN, an infinity or a blown-up loss ends the cell at its step,
and what was measured before it is kept."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from harness.measure.numerics import Diverged, DivergenceGuard

FAULTS = Path(__file__).resolve().parent / "faults"


def test_the_guard_stops_at_the_first_non_finite_or_blown_up_loss():
    guard = DivergenceGuard(use_cuda=False)
    for step, loss in enumerate([0.70, 0.69, 0.71, 0.65, 0.60], start=1):
        guard.observe(step, loss)
    with pytest.raises(Diverged, match=r"at step 6: loss nan \(not a finite number\)"):
        guard.observe(6, float("nan"))
    assert guard.losses[-1][0] == 6 and math.isnan(guard.losses[-1][1]) and len(guard.losses) == 6

    blown = DivergenceGuard(use_cuda=False)
    for step, loss in enumerate([0.7, 0.7, 0.7, 3.0], start=1):
        blown.observe(step, loss)  # 4x its start: a bad step, not a divergence
    with pytest.raises(Diverged, match=r"at step 5: loss 7.5 \(over 10x the 0.7 it started at\)"):
        blown.observe(5, 7.5)
    with pytest.raises(Diverged, match="step 1: loss inf"):
        DivergenceGuard(use_cuda=False).observe(1, float("inf"))


def test_a_loss_made_nan_mid_run_from_outside_ends_the_cell_at_that_step(bench_project, monkeypatch):
    bench = bench_project("nan", 12, "batch_size = [8]\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_TEST_FAULT", "nan:5")  # one weight becomes NaN in the 5th training step
    result = bench.runpytest("--matrix", "nan", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    (document,) = (bench.path / "results" / "runs").glob("*/mrpc-*.json")
    cell = json.loads(document.read_text())
    assert cell["status"] == "error"
    assert cell["reason"].startswith("training diverged at step 5: loss nan (not a finite number)"), cell["reason"]
    assert len(cell["samples"]["step_seconds"]) == 4, "the four steps before it are kept"
    assert [step for step, _ in cell["samples"]["step_losses"]] == [1, 2, 3, 4, 5]
    assert cell["samples"]["failure"]["kind"] == "diverged" and cell["metrics"]["diverged_at_step"] == 5


def test_determinism_is_the_largest_spread_between_same_seed_loss_curves():
    from harness.judge.stats import loss_determinism

    same = [[1, 0.70], [2, 0.65], [3, 0.61]]
    assert loss_determinism([same, same]) == 0.0
    assert loss_determinism([same, [[1, 0.70], [2, 0.65], [3, 0.62]]]) == pytest.approx(0.01 / 0.615)
    assert loss_determinism([same]) is None


def test_two_repeats_of_a_cpu_fp32_cell_have_a_determinism_of_zero(bench_project):
    bench = bench_project("twice", 6, "batch_size = [8]\n")
    bench.runpytest("--matrix", "twice", "-p", "no:cacheprovider", "--repeats", "2").assert_outcomes(skipped=1)
    (document,) = (bench.path / "results" / "runs").glob("*/mrpc-*.json")
    cell = json.loads(document.read_text())
    assert cell["metrics"]["repeats"] == 2 and cell["metrics"]["loss_determinism"] == 0.0
    curves = [r["raw"]["step_losses"] for r in cell["samples"]["repeats"]]
    assert len(curves[0]) == 6 and curves[0] == curves[1]
