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


def test_weights_nudged_mid_run_fail_a_clean_cell_with_a_numerics_finding_while_its_speed_passes(bench_project,
                                                                                               monkeypatch):
    bench = bench_project("nudge", 16, """
        batch_size = [8]
        [[override]]
        where = { batch_size = [8] }
        set = { thresholds = ["train_samples_per_s:-60%", "peak_rss_bytes:+60%"] }
    """)
    bench.runpytest("--matrix", "nudge", "-p", "no:cacheprovider", "--update-baselines").assert_outcomes(passed=1)
    bench.runpytest("--matrix", "nudge", "-p", "no:cacheprovider").assert_outcomes(passed=1)  # a clean night passes
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_TEST_FAULT", "nudge:8")  # every weight moves by 5% of its size in the 8th step
    result = bench.runpytest("--matrix", "nudge", "-p", "no:cacheprovider", "--confirm", "0")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "numerics: the loss curve departs at step 8" in text, text[-3000:]
    documents = sorted((bench.path / "results" / "runs").glob("*/mrpc-*.json"))
    cell = json.loads(documents[-1].read_text())
    findings = cell["verdict"]["findings"]
    assert "loss_curve" in {f["metric"] for f in findings if f["verdict"] == "regression"}
    assert [f["verdict"] for f in findings if f["metric"] == "train_samples_per_s"] == ["pass"]
    clean = json.loads(documents[-2].read_text())
    assert clean["metrics"]["train_loss_mean"] != cell["metrics"]["train_loss_mean"]


def _curve_result(precision, losses, **metrics):
    from harness.results import CellResult
    from harness.spec import CellSpec

    spec = CellSpec(max_steps=len(losses), timing_warmup_steps=2, precision=precision)
    return CellResult(spec=spec, status="ok", run_id="r", env={"hardware_key": "1xNVIDIA-H200", "gpu_name": "H200"},
                      metrics=dict(metrics), samples={"step_losses": [[i + 1, v] for i, v in enumerate(losses)]})


def test_a_lower_precision_is_held_against_its_fp32_twin_and_flagged_with_its_step_of_departure():
    from harness.judge.gate import judge
    from harness.judge.numerics import PRECISION_TOLERANCE, precision_figures

    fp32 = [0.70 - 0.004 * i for i in range(60)]
    healthy = [v * (1.03 if i % 2 else 0.97) for i, v in enumerate(fp32)]  # +/-3% step to step, cancels out
    broken = fp32[:30] + [0.69] * 30  # stops learning at step 31: stuck at chance
    twin = _curve_result("fp32", fp32)
    ok = _curve_result("bf16", healthy)
    ok.metrics.update(precision_figures(ok, twin))
    assert ok.metrics["precision_deviation"] < 0.01 and ok.metrics["precision_reference_cell"] == twin.id
    assert [f.verdict for f in judge(ok, None).findings if f.metric == "precision_deviation"] == ["pass"]
    bad = _curve_result("bf16", broken)
    bad.metrics.update(precision_figures(bad, twin))
    assert bad.metrics["precision_deviation"] > PRECISION_TOLERANCE
    (finding,) = [f for f in judge(bad, None).findings if f.metric == "precision_deviation"]
    assert finding.verdict == "regression" and finding.kind == "numerics"
    first_past = bad.metrics["precision_deviation_step"]
    assert 31 < first_past <= 40 and f"at step {first_past}" in finding.line()  # 37: 12-step means


def test_time_to_quality_is_the_first_evaluation_where_every_gated_figure_reached_its_band():
    from harness.judge.gate import judge
    from harness.results import CellResult
    from harness.spec import CellSpec

    spec = CellSpec(checkpoint="roberta-base", weights="pretrained", num_train_epochs=3, max_steps=-1)
    curve = [{"train_seconds": 100.0, "step": 10, "eval_accuracy": 0.88, "eval_f1": 0.91},
             {"train_seconds": 200.0, "step": 20, "eval_accuracy": 0.89, "eval_f1": 0.91},
             {"train_seconds": 300.0, "step": 30, "eval_accuracy": 0.90, "eval_f1": 0.92}]
    run = CellResult(spec=spec, status="ok", run_id="r", env={"hardware_key": "k"},
                     metrics={"eval_accuracy": 0.90, "eval_f1": 0.92, "train_samples_per_s": 10.0},
                     samples={"eval_curve": curve, "step_samples": [16] * 30})
    verdict = judge(run, None)
    assert run.metrics["time_to_quality_s"] == 100.0 and run.metrics["samples_to_quality"] == 160
    slower = CellResult(spec=spec, status="ok", run_id="s", env={"hardware_key": "k"},
                        metrics={"eval_accuracy": 0.90, "eval_f1": 0.92, "train_samples_per_s": 10.0},
                        samples={"eval_curve": [{**curve[0], "eval_accuracy": 0.8}, {**curve[1], "eval_accuracy": 0.85},
                                                curve[2]], "step_samples": [16] * 30})
    again = judge(slower, run)
    assert verdict.verdict == "new" and slower.metrics["time_to_quality_s"] == 300.0
    (finding,) = [f for f in again.findings if f.metric == "samples_to_quality"]
    assert finding.verdict == "regression" and finding.kind == "quality" and finding.change == pytest.approx(2.0)


def test_a_night_with_fp32_and_bf16_records_the_bf16_curve_against_fp32(bench_project):
    bench = bench_project("prec", 16, 'batch_size = [8]\nprecision = ["fp32", "bf16"]\n')
    result = bench.runpytest("--matrix", "prec", "-p", "no:cacheprovider")
    cells = {json.loads(p.read_text())["spec"]["precision"]: json.loads(p.read_text())
             for p in (bench.path / "results" / "runs").glob("*/mrpc-*.json")}
    if cells["bf16"]["status"] == "skipped":
        pytest.skip(f"bf16 does not run on this CPU: {cells['bf16']['reason']}")
    assert cells["bf16"]["status"] == "ok", cells["bf16"]["reason"]
    metrics = cells["bf16"]["metrics"]
    assert metrics["precision_reference_cell"] == cells["fp32"]["id"]
    assert 0 < metrics["precision_deviation"] < 0.12, metrics["precision_deviation"]  # a healthy bf16 run
    assert "precision_deviation" not in cells["fp32"]["metrics"]
    result.assert_outcomes(skipped=2)  # no baselines: new, nothing failed
