from harness.judge.calibrate import calibrate, slowed
from harness.results import CellResult
from harness.spec import CellSpec
from harness.store.baselines import write_baseline
from harness.store.runs import RunWriter

ENV = {"hardware_key": "cpu-test", "libraries": {}}


def measured(sps, run="r"):
    return CellResult(spec=CellSpec(max_steps=30), status="ok", run_id=run, env=ENV,
                      metrics={"train_samples_per_s": sps, "peak_rss_bytes": 1e9},
                      samples={"step_seconds": [1.0] * 30, "noise": {}})


def test_slowed_scales_every_speed_figure():
    r = slowed(measured(100.0), 0.10)
    assert r.metrics["train_samples_per_s"] == 90.0 and r.samples["step_seconds"][0] > 1.1


def test_false_alarms_and_detection_limit_from_real_runs(tmp_path):
    write_baseline(measured(100.0), tmp_path / "baselines")
    runs = []
    for i, sps in enumerate([100.0, 99.0, 93.0, 101.0, 100.5]):  # one noisy first measurement
        writer = RunWriter(tmp_path, f"run{i}", matrix="smoke", planned=[], env=ENV)
        writer.add(measured(sps, run=f"run{i}"))
        runs.append(writer.dir)
    report = calibrate(tmp_path / "baselines", runs, confirm=2)
    assert report["verdicts"] == 5
    assert report["first_crossings"] == 1 and report["false_alarms"] == 0  # confirmation clears it
    assert report["detection"][0.02] < 1.0
    assert report["smallest_reliably_caught"] == 0.10


def test_the_confirmation_runs_a_result_carries_are_used(tmp_path):
    write_baseline(measured(100.0), tmp_path / "baselines")
    first = measured(80.0, run="r0")
    first.samples["confirmation"] = [{"train_samples_per_s": 79.0}, {"train_samples_per_s": 81.0}]
    writer = RunWriter(tmp_path, "r0", matrix="smoke", planned=[], env=ENV)
    writer.add(first)
    report = calibrate(tmp_path / "baselines", [writer.dir])
    assert report["false_alarms"] == 1  # a real slowdown, confirmed by its own re-runs
    assert "train_samples_per_s" in report["cells"][first.id]["alarms"][0][0]


def test_a_matrix_supplies_the_thresholds_to_judge_with(tmp_path):
    write_baseline(measured(100.0), tmp_path / "baselines")
    matrix = tmp_path / "m.toml"
    matrix.write_text('[defaults]\nmax_steps = 30\nthresholds = ["train_samples_per_s:-25%"]\n[axes]\nbatch_size = [32]\n')
    writer = RunWriter(tmp_path, "r0", matrix="smoke", planned=[], env=ENV)
    writer.add(measured(80.0, run="r0"))
    assert calibrate(tmp_path / "baselines", [writer.dir])["false_alarms"] == 1
    assert calibrate(tmp_path / "baselines", [writer.dir], matrix=matrix)["false_alarms"] == 0
