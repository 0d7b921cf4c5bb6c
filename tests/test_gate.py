from dataclasses import replace

import pytest

from harness.judge.gate import env_changes, judge
from harness.judge.policy import needs_confirmation
from harness.judge.stats import fold, relative_spread
from harness.judge.thresholds import Threshold, ThresholdError, resolve_thresholds
from harness.matrix import parse_matrix
from harness.results import CellResult
from harness.spec import CellSpec, SpecError

ENV = {"hardware_key": "cpu-2x-test", "cpu_model": "test", "cpu_count": 2,
       "libraries": {"torch": "2.4.0", "transformers": "4.46.3"}, "harness_commit": "abc"}


def result(spec=None, env=ENV, noise=None, **metrics):
    base = {"train_samples_per_s": 100.0, "peak_rss_bytes": 1e9, "peak_mem_reserved_bytes": 2e9}
    base.update(metrics)
    return CellResult(spec=spec or CellSpec(max_steps=30), status="ok", run_id="r", env=dict(env),
                      metrics=base, samples={"noise": noise or {}, "step_seconds": []})


# ---------------------------------------------------------------- thresholds

@pytest.mark.parametrize("text, metric, direction, limit, relative", [
    ("train_samples_per_s:-5%", "train_samples_per_s", -1, 0.05, True),
    ("peak_mem_reserved_bytes:+5%", "peak_mem_reserved_bytes", +1, 0.05, True),
    ("peak_mem_reserved_bytes:+512MiB", "peak_mem_reserved_bytes", +1, 512 * 2**20, False),
    ("train_samples_per_s:-2.5", "train_samples_per_s", -1, 2.5, False),
    (" eval_wall_s : +10% ", "eval_wall_s", +1, 0.10, True),
])
def test_threshold_expressions_parse(text, metric, direction, limit, relative):
    t = Threshold.parse(text)
    assert (t.metric, t.bad_direction, t.limit, t.relative) == (metric, direction, pytest.approx(limit), relative)


@pytest.mark.parametrize("text, fragment", [
    ("train_samples_per_s-5%", "malformed"),
    ("train_samples_per_s:5%", "malformed"),
    ("train_samples_per_s:-five%", "malformed"),
    ("samples:-5%", "`samples` is not a gated metric"),
    ("train_samples_per_s:+5%", "a rise of `train_samples_per_s` is an improvement"),
    ("peak_rss_bytes:-5%", "a fall of `peak_rss_bytes` is an improvement"),
    ("train_samples_per_s:-5MiB", "byte units apply to *_bytes metrics only"),
])
def test_malformed_thresholds_say_what_is_allowed(text, fragment):
    with pytest.raises(ThresholdError) as info:
        Threshold.parse(text)
    assert fragment in str(info.value)


def test_thresholds_layer_per_metric_and_are_checked_in_the_matrix():
    layered = resolve_thresholds(["train_samples_per_s:-5%", "peak_rss_bytes:+5%"], ["train_samples_per_s:-10%"])
    assert layered["train_samples_per_s"].limit == pytest.approx(0.10) and "peak_rss_bytes" in layered
    m = parse_matrix({"defaults": {"thresholds": ["train_samples_per_s:-8%"]}, "axes": {"batch_size": [8, 16]},
                      "override": [{"where": {"batch_size": 8}, "set": {"thresholds": ["train_samples_per_s:-20%"]}}]})
    assert [c.thresholds for c in m.cells] == [("train_samples_per_s:-20%",), ("train_samples_per_s:-8%",)]
    with pytest.raises(SpecError, match=r"m.toml: .*threshold 'train_samples_per_s:5' is malformed; write METRIC:-N%"):
        parse_matrix({"defaults": {"thresholds": ["train_samples_per_s:5"]}, "axes": {"batch_size": [8]}}, source="m.toml")


# ---------------------------------------------------------------- repeats

def test_fold_takes_medians_and_spread():
    runs = [result(train_samples_per_s=v) for v in (100.0, 90.0, 104.0)]
    folded = fold(runs)
    assert folded.metrics["train_samples_per_s"] == 100.0 and folded.metrics["repeats"] == 3
    assert folded.samples["noise"]["train_samples_per_s"] == pytest.approx(14 / 100)
    assert [r["train_samples_per_s"] for r in folded.samples["repeats"]] == [100.0, 90.0, 104.0]
    assert relative_spread([5.0]) == 0.0


def test_fold_over_seeds_records_quality_mean_and_std():
    spec = CellSpec(weights="pretrained", num_train_epochs=2)
    runs = [result(spec=replace(spec, seed=42 + i), eval_accuracy=a) for i, a in enumerate((0.80, 0.82, 0.84))]
    folded = fold(runs)
    assert folded.metrics["eval_accuracy_mean"] == pytest.approx(0.82)
    assert folded.metrics["eval_accuracy_std"] == pytest.approx(0.02)
    assert folded.spec.seed == 42


# ---------------------------------------------------------------- speed and memory

def test_identical_figures_pass():
    v = judge(result(), result())
    assert v.verdict == "pass" and not v.failed


def test_a_slowdown_past_threshold_and_noise_is_a_regression_with_a_full_message():
    new_env = dict(ENV, libraries={"torch": "2.5.0", "transformers": "4.46.3"})
    v = judge(result(env=new_env, train_samples_per_s=80.0), result(train_samples_per_s=100.0), baseline_source="b.json")
    assert v.verdict == "regression" and needs_confirmation(v)
    msg = v.message()
    for fragment in ("train_samples_per_s", "100", "80", "-20.0%", "threshold train_samples_per_s:-5%", "noise 0.0%",
                     "torch 2.4.0 -> 2.5.0", "b.json"):
        assert fragment in msg, (fragment, msg)


def test_a_small_change_inside_the_threshold_passes():
    assert judge(result(train_samples_per_s=98.0), result()).verdict == "pass"


def test_a_change_past_the_threshold_but_inside_the_noise_passes():
    v = judge(result(train_samples_per_s=92.0), result(noise={"train_samples_per_s": 0.12}))
    (finding,) = [f for f in v.findings if f.metric == "train_samples_per_s"]
    assert v.verdict == "pass" and "within the measured noise" in finding.note


def test_memory_growth_past_its_threshold_fails():
    v = judge(result(peak_mem_reserved_bytes=2.2e9), result())
    assert v.verdict == "regression" and v.regressions()[0].metric == "peak_mem_reserved_bytes"


def test_process_rss_is_gated_since_every_cell_has_a_process_of_its_own():
    v = judge(result(peak_rss_bytes=1.3e9), result())
    assert v.verdict == "regression" and v.regressions()[0].metric == "peak_rss_bytes"
    assert judge(result(peak_rss_bytes=1.05e9), result()).verdict == "pass", "+5% is inside the default +10%"
    spec = CellSpec(max_steps=30, thresholds=("peak_rss_bytes:+40%",))
    assert judge(result(spec=spec, peak_rss_bytes=1.3e9), result(spec=spec)).verdict == "pass"


def test_a_speedup_is_an_improvement_and_never_fails():
    v = judge(result(train_samples_per_s=130.0), result())
    assert v.verdict == "improvement" and not v.failed


def test_no_baseline_is_new_not_pass():
    v = judge(result(), None)
    assert v.verdict == "new" and not v.failed


def test_a_cell_threshold_overrides_the_default():
    spec = CellSpec(max_steps=30, thresholds=("train_samples_per_s:-25%",))
    assert judge(result(spec=spec, train_samples_per_s=80.0), result(spec=spec)).verdict == "pass"


def test_environment_differences_are_listed():
    old = dict(ENV, gpu_driver="550.54", cuda_version="12.4")
    new = dict(ENV, gpu_driver="560.35", cuda_version="12.4", libraries={"torch": "2.4.0", "transformers": "5.0.0"})
    assert env_changes(old, new) == ["gpu_driver 550.54 -> 560.35", "transformers 4.46.3 -> 5.0.0"]


# ---------------------------------------------------------------- quality

def finetune(checkpoint="bert-base-uncased", **metrics):
    spec = CellSpec(checkpoint=checkpoint, weights="pretrained", num_train_epochs=3)
    return result(spec=spec, **metrics)


def test_quality_inside_the_published_band_passes_and_records_its_distance():
    v = judge(finetune(eval_accuracy=0.850, eval_f1=0.89), finetune(eval_accuracy=0.85, eval_f1=0.89))
    (acc,) = [f for f in v.findings if f.metric == "eval_accuracy"]
    assert acc.verdict == "pass" and acc.baseline == 84.56
    assert acc.change == pytest.approx(85.0 - 84.56)
    assert "std" in acc.note and "google-research/bert" in acc.note
    (f1,) = [f for f in v.findings if f.metric == "eval_f1"]
    assert f1.verdict == "pass" and "own single-seed baseline" in f1.note  # no dev reference: the baseline's figure
    (f1,) = [f for f in judge(finetune(eval_accuracy=0.850, eval_f1=0.89), None).findings if f.metric == "eval_f1"]
    assert f1.verdict == "unchecked" and "test f1 88.9" in f1.note  # the paper's figure is test-set: not gated


def test_a_quality_drop_out_of_the_band_fails_even_though_speed_improved():
    v = judge(finetune(eval_accuracy=0.70, train_samples_per_s=150.0), finetune(eval_accuracy=0.85))
    assert v.verdict == "regression"
    (q,) = v.regressions()
    assert q.kind == "quality" and q.metric == "eval_accuracy"
    assert any(f.verdict == "improvement" for f in v.findings)
    assert not needs_confirmation(v)


def test_quality_band_comes_from_the_measured_seed_spread_of_the_baseline():
    baseline = finetune("all-MiniLM-L6-v2", eval_accuracy=0.78, eval_accuracy_mean=0.78, eval_accuracy_std=0.01, repeats=3)
    inside = judge(finetune("all-MiniLM-L6-v2", eval_accuracy=0.765), baseline)
    outside = judge(finetune("all-MiniLM-L6-v2", eval_accuracy=0.75), baseline)
    assert inside.verdict == "pass" and outside.verdict == "regression"
    assert "own 3-seed baseline mean" in outside.regressions()[0].note
    # a single-seed baseline: its own figure, with the published seed spread
    single = judge(finetune("all-MiniLM-L6-v2", eval_accuracy=0.5), finetune("all-MiniLM-L6-v2", eval_accuracy=0.78))
    assert single.verdict == "regression"
    note = single.regressions()[0].note
    assert "own single-seed baseline (seed 42)" in note and "published spread" in note
    near = judge(finetune("all-MiniLM-L6-v2", eval_accuracy=0.77), finetune("all-MiniLM-L6-v2", eval_accuracy=0.78))
    assert near.verdict == "pass"
    unchecked = judge(finetune("all-MiniLM-L6-v2", eval_accuracy=0.5), None)
    assert unchecked.verdict == "new"
    assert any(f.verdict == "unchecked" and "--seeds" in f.note for f in unchecked.findings)


def test_a_throttled_gpu_is_flagged_in_the_verdict():
    v = judge(result(throttled=True, throttle_reasons=["sw_power_cap"]), result())
    assert "throttled during training (sw_power_cap)" in v.message()
