"""History as the baseline: windows built from a real stored run, cloned into nights.

Every history here is made of copies of a real committed result (its figures, raw
samples and environment), with its throughput moved by the noise or step a test needs.
The gate, the window and the interval are the real ones.
"""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from harness.judge.accept import accept, accepted_from
from harness.judge.gate import judge
from harness.judge.policy import Evidence, confirm_verdict, needs_confirmation, repeated_suspect, suspect_verdict
from harness.judge.verdict import Verdict
from harness.judge.window import MIN_POINTS, build_window, cell_documents, prediction_interval, previous_night
from harness.results import CellResult, ResultsError, read_result, write_result
from harness.spec import CellSpec

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "results" / "runs" / "20261123T202743Z-smoke-cpu" / "mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32.json"
METRIC = "train_samples_per_s"


def night(i: int) -> str:
    return f"202611{1 + i // 28:02d}{1 + i % 28:02d}T020000Z-smoke-cpu"


@pytest.fixture(scope="module")
def real() -> CellResult:
    """The real document, its thresholds left to each test (the smoke matrix gave it -15%)."""
    doc = read_result(REAL)
    return replace(doc, spec=replace(doc.spec, thresholds=()))


def clone(real: CellResult, run_id: str, speed: float, verdict: str | None = "pass", **changes) -> CellResult:
    metrics = dict(real.metrics, **{METRIC: speed})
    return replace(real, run_id=run_id, metrics=metrics, verdict=Verdict(real.id, verdict) if verdict else None,
                   **changes)


def nights(real: CellResult, count: int, *, noise: float = 0.01, level: float | None = None, seed: int = 0):
    rng = random.Random(seed)
    level = level or real.metrics[METRIC]
    return [clone(real, night(i), level * (1 + rng.gauss(0, noise))) for i in range(count)]


def test_the_prediction_interval_is_students_t_for_one_more_draw():
    values = [10.0, 11.0, 9.0, 10.5, 9.5]
    interval = prediction_interval(values, 0.99)
    # mean 10, s = 0.7906, t(0.995, 4) = 4.6041, sqrt(1 + 1/5) = 1.0954
    assert interval.mean == pytest.approx(10.0)
    assert interval.high - interval.mean == pytest.approx(4.6041 * 0.7906 * 1.0954, rel=1e-3)
    assert prediction_interval(values, 0.90).high < interval.high
    assert prediction_interval([5.0, 5.0, 5.0], 0.99, min_std=0.5).high > 5.0, "identical copies still get a width"


def test_an_unchanged_night_passes_and_a_5_percent_step_fails_against_a_quiet_history(real):
    history = nights(real, 20, noise=0.01)
    level = real.metrics[METRIC]
    quiet = [replace(r, samples=dict(r.samples, noise={METRIC: 0.005})) for r in history]
    tonight = clone(real, night(30), level * 0.995, verdict=None)
    window = build_window(quiet, tonight)
    assert len(window.runs) == 20
    v = judge(tonight, None, window=window, matrix_thresholds=("train_samples_per_s:-3%",))
    assert v.verdict == "pass" and "history of 20 good runs" in v.baseline_source
    slower = clone(real, night(30), level * 0.95, verdict=None)
    v = judge(slower, None, window=window, matrix_thresholds=("train_samples_per_s:-3%",))
    (finding,) = [f for f in v.findings if f.metric == METRIC]
    assert v.verdict == "regression" and "99% prediction interval" in finding.note
    assert finding.baseline == pytest.approx(level, rel=0.01), "judged against the window's level"


def test_a_step_past_the_threshold_but_inside_a_noisy_history_passes(real):
    history = nights(real, 20, noise=0.08, seed=3)
    tonight = clone(real, night(30), real.metrics[METRIC] * 0.90, verdict=None)
    v = judge(tonight, None, window=build_window(history, tonight))
    (finding,) = [f for f in v.findings if f.metric == METRIC]
    assert finding.verdict == "pass" and "inside the interval" in finding.note


def test_the_window_leaves_out_bad_nights_other_machines_other_recipes_and_the_old_segment(real):
    level = real.metrics[METRIC]
    good = nights(real, 8)
    history = [
        *good[:4],
        clone(real, night(4), level * 0.5, verdict="regression"),
        clone(real, night(5), level * 0.5, verdict="disturbed"),
        clone(real, night(6), level * 0.5, verdict="suspect"),
        clone(real, night(7), level, env=dict(real.env, hardware_key="cpu-2x-Intel-Xeon")),
        clone(real, night(8), level, spec=replace(real.spec, max_steps=60)),
        replace(clone(real, night(9), level), status="error"),
        *[replace(r, run_id=night(10 + i)) for i, r in enumerate(good[4:])],
    ]
    tonight = clone(real, night(40), level, verdict=None)
    window = build_window(history, tonight)
    assert [r.run_id for r in window.runs] == [night(i) for i in (0, 1, 2, 3, 10, 11, 12, 13)]
    assert window.left_out == {"regression": 1, "disturbed": 1, "suspect": 1, "another recipe": 1, "error": 1}
    assert len(build_window(history, tonight, size=3).runs) == 3, "only the last N"
    later = build_window(history, tonight, accepted_from=night(11))
    assert [r.run_id for r in later.runs] == [night(11), night(12), night(13)]
    assert later.left_out["before the accepted change"] == 11


def test_under_five_history_points_the_stored_baseline_judges(real):
    history = nights(real, MIN_POINTS - 1)
    tonight = clone(real, night(30), real.metrics[METRIC] * 0.5, verdict=None)
    window = build_window(history, tonight)
    v = judge(tonight, None, window=window)
    assert v.verdict == "new", "four nights are not a history: no figure is judged from them"


def test_a_suspect_night_passes_and_a_second_one_the_same_way_is_a_regression(real):
    history = nights(real, 20)
    level = real.metrics[METRIC]
    first = clone(real, night(30), level * 0.8, verdict=None)
    v = judge(first, None, window=build_window(history, first))
    assert v.verdict == "regression"
    suspect = suspect_verdict(v, "the confirmation runs did not repeat it")
    assert suspect.verdict == "suspect" and not suspect.failed and "SUSPECT" in suspect.note
    second = clone(real, night(31), level * 0.8, verdict=None)
    v2 = suspect_verdict(judge(second, None, window=build_window(history, second)), "not confirmed")
    assert repeated_suspect(v2, suspect).verdict == "regression"
    faster = clone(real, night(31), level * 1.3, verdict=None)
    v3 = judge(faster, None, window=build_window(history, faster))
    assert v3.verdict == "improvement"
    up = suspect_verdict(replace(v3, findings=[replace(f, verdict="regression") for f in v3.findings
                                               if f.metric == METRIC]), "x")
    assert repeated_suspect(up, suspect).verdict == "suspect", "the other direction is not the same level change"


def test_history_is_read_from_the_run_folders_and_unreadable_files_are_skipped(real, tmp_path):
    for r in nights(real, 6):
        write_result(r, tmp_path / "runs" / r.run_id)
    broken = tmp_path / "runs" / night(7)
    broken.mkdir(parents=True)
    (broken / f"{real.id}.json").write_text("{not json")
    docs = cell_documents(tmp_path, real.id)
    assert [d.run_id for d in docs] == [night(i) for i in range(6)]
    tonight = clone(real, night(8), 1.0, verdict=None)
    assert previous_night(docs, tonight).run_id == night(5)


def test_accept_starts_a_new_segment_and_refuses_what_does_not_exist(real, tmp_path):
    for r in nights(real, 3):
        write_result(r, tmp_path / "runs" / r.run_id)
    entry = accept(tmp_path, real.id, night(1), "transformers 5.24 is 6% faster; accepted")
    assert entry["from_run"] == night(1) and json.loads((tmp_path / "accepted.json").read_text())[0]["why"]
    assert accepted_from(tmp_path, real.id) == night(1)
    assert accepted_from(tmp_path, real.id, before=night(0)) is None
    with pytest.raises(ResultsError, match="no run"):
        accept(tmp_path, real.id, "20990101T000000Z-x", "why")
    with pytest.raises(ResultsError, match="has no cell"):
        accept(tmp_path, "mrpc-no-such-cell", night(1), "why")
    with pytest.raises(ResultsError, match="say why"):
        accept(tmp_path, real.id, night(1), " ")


def test_the_gate_section_of_a_matrix_sets_window_and_confidence(tmp_path):
    from harness.matrix import load_matrix
    from harness.spec import SpecError

    path = tmp_path / "m.toml"
    path.write_text('[gate]\nwindow = 10\nconfidence = 0.95\n[defaults]\nmax_steps = 30\n[axes]\nbatch_size = [8]\n')
    m = load_matrix(path)
    assert (m.window, m.confidence) == (10, 0.95)
    path.write_text('[gate]\nconfidence = 99\n[axes]\nbatch_size = [8]\n')
    with pytest.raises(SpecError, match="`confidence` must be a probability"):
        load_matrix(path)
    assert load_matrix(ROOT / "harness" / "matrices" / "smoke.toml").window == 20
    assert CellSpec().id  # the spec itself is untouched by the gate section


def test_accept_from_the_command_line(real, tmp_path, capsys):
    from harness.__main__ import main

    for r in nights(real, 2):
        write_result(r, tmp_path / "runs" / r.run_id)
    assert main(["accept", real.id, "--from", night(1), "-m", "isolated processes", "--results-dir", str(tmp_path)]) == 0
    assert f"accepted: {real.id} from {night(1)}" in capsys.readouterr().out
    assert main(["accept", real.id, "--from", "nope", "-m", "x", "--results-dir", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------- figures that do not depend on the machine


def test_on_another_machine_token_counts_padding_and_flops_are_judged_against_the_same_cell_elsewhere(real):
    intel = dict(real.env, hardware_key="cpu-2x-Intel-Xeon", cpu_model="Intel Xeon")
    tonight = clone(real, night(30), real.metrics[METRIC] / 7, verdict=None, env=intel)
    v = judge(tonight, None, elsewhere=real)
    judged = {f.metric for f in v.findings if f.kind == "invariant"}
    assert judged == {"timed_samples", "train_real_tokens", "train_padded_tokens", "padding_efficiency",
                      "model_flops_per_step"}
    assert v.verdict == "new" and "judged against cpu-2x-AMD-EPYC" in v.note, "speed still needs this machine's baseline"
    other_data = replace(tonight, metrics=dict(tonight.metrics, train_real_tokens=tonight.metrics["train_real_tokens"] + 40))
    v = judge(other_data, None, elsewhere=real)
    (bad,) = v.regressions()
    assert v.verdict == "regression" and bad.metric == "train_real_tokens" and "tokenization changed" in bad.note


def test_a_multi_seed_reference_is_compared_at_the_same_seed(real):
    seeds = [dict(real.metrics, seed=42), dict(real.metrics, seed=43, train_real_tokens=1)]
    three = replace(real, metrics=dict(real.metrics, train_real_tokens=1), samples=dict(real.samples, repeats=seeds))
    v = judge(clone(real, night(30), real.metrics[METRIC], verdict=None), three)
    (tokens,) = [f for f in v.findings if f.metric == "train_real_tokens"]
    assert tokens.verdict == "pass", "seed 42 against seed 42's figures, not the headline repeat's"


def test_the_simulated_nightly_gate_is_quiet_on_an_unchanged_level_and_catches_a_step(real):
    from harness.judge.simulate import detection, false_alarms

    quiet = false_alarms(real, noise=0.01, threshold="train_samples_per_s:-3%", nights=400, cells=4)
    assert quiet["cell_nights"] >= 300 and quiet["per_1000"] < 10, quiet
    assert detection(real, noise=0.01, threshold="train_samples_per_s:-3%", step=0.10, trials=20) == 1.0
    assert detection(real, noise=0.01, threshold="train_samples_per_s:-3%", step=0.01, trials=20) < 0.5, (
        "a 1% step sits inside a -3% threshold: never a regression"
    )


def test_a_small_step_inside_the_one_night_interval_is_confirmed_by_pooling_the_re_runs(real):
    level = real.metrics[METRIC]
    history = [clone(real, night(i), level * f) for i, f in
               enumerate([1.0, 1.01, 0.99, 1.005, 0.995, 1.012, 0.988, 1.0, 1.003, 0.997] * 2)]
    quiet = [replace(r, samples=dict(r.samples, noise={METRIC: 0.002})) for r in history]
    spec = replace(real.spec, thresholds=("train_samples_per_s:-2%",))
    tonight = clone(real, night(30), level * 0.979, verdict=None, spec=spec)
    window = build_window(quiet, tonight)
    first = judge(tonight, None, window=window)
    assert first.verdict == "pass" and needs_confirmation(first), "past -2%, inside the one-night interval: re-measure"
    reruns = clone(real, night(30), level * 0.972, verdict=None, spec=spec)
    reruns = replace(reruns, samples={"repeats": [{"seed": 42, METRIC: level * 0.97}, {"seed": 42, METRIC: level * 0.974}]})
    confirmed = confirm_verdict(first, tonight, reruns, Evidence(window=window))
    (finding,) = [f for f in confirmed.findings if f.metric == METRIC]
    assert confirmed.verdict == "regression" and "for the mean of 3 measurements" in finding.note
    unchanged = replace(reruns, samples={"repeats": [{"seed": 42, METRIC: level * 1.004}, {"seed": 42, METRIC: level}]})
    assert confirm_verdict(first, tonight, unchanged, Evidence(window=window)).verdict == "pass"
