"""The regression gate end to end through pytest (pytester), with a scripted runner.

In every cell's child process the runner is replaced (a ``sitecustomize`` on the children's
PYTHONPATH) by one that returns planted figures, so each scenario is exact: the launcher,
the gate, the baselines, the confirmation runs and the messages are the real ones.
"""

import json
import os
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "test_mrpc.py"

FAKE_RUNNER = '''
"""Loaded by every child process of the run (PYTHONPATH): the cell's child returns planted
figures instead of training, without importing torch."""
import json
import os
import signal
import sys
import types
from pathlib import Path

import harness.measure.env
from harness.results import CellResult

HERE = Path(__file__).parent
ENV = json.loads((HERE / "env.json").read_text())
harness.measure.env.environment = lambda: dict(ENV)


def run_cell(spec, *, run_id, use_cuda, glue_dir=None, show_progress=False, board=None):
    script = json.loads((HERE / "script.json").read_text())
    if spec.label == "maxbatch":  # probes of --find-max-batch-size
        status = "ok" if spec.batch_size <= script["capacity"] else "oom"
        return CellResult(spec=spec, status=status, run_id=run_id, env=dict(ENV))
    if spec.id == script.get("sigterm_on"):  # a CI job's timeout, arriving mid-run, to pytest
        import psutil

        parent = psutil.Process().parent()  # the zygote that forked this child, or pytest itself
        while parent is not None and "pytest" not in " ".join(parent.cmdline()):
            parent = parent.parent()
        os.kill(parent.pid, signal.SIGTERM)
    calls = HERE / "calls.txt"
    done = calls.read_text().split() if calls.exists() else []
    with calls.open("a") as handle:
        handle.write(spec.id + "\\n")
    queue = script[spec.id]
    figures = dict(queue[min(done.count(spec.id), len(queue) - 1)])
    env = dict(ENV)
    env["libraries"] = dict(env["libraries"], **figures.pop("_libraries", {}))
    metrics = {"timed_steps": 25, "majority_class_accuracy": 0.684, **figures}
    return CellResult(spec=spec, status="ok", run_id=run_id, env=env, metrics=metrics,
                      samples={"step_seconds": []})


fake = types.ModuleType("harness.runner")
fake.run_cell = run_cell
sys.modules["harness.runner"] = fake
'''

SPEED = "mrpc-bert-base-uncased-dynamic-bs8-fp32"
QUALITY = "mrpc-bert-base-uncased-dynamic-bs32-fp32-finetune"


@pytest.fixture
def project(pytester, monkeypatch):
    from harness.measure.env import environment

    pytester.makepyfile(test_mrpc=BENCH.read_text())
    fakes = pytester.mkdir("fakes")
    fakes.joinpath("sitecustomize.py").write_text(FAKE_RUNNER)
    fakes.joinpath("env.json").write_text(json.dumps(environment()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fakes), os.environ.get("PYTHONPATH", "")]))
    pytester.path.joinpath("benchmarks").mkdir()
    pytester.path.joinpath("benchmarks", "gate.toml").write_text(textwrap.dedent("""
        [defaults]
        max_steps = 30
        [axes]
        batch_size = [8]
        [[cells]]
        label = "finetune"
        weights = "pretrained"
        batch_size = 32
        max_steps = -1
    """))

    def run(script, *args):
        fakes.joinpath("script.json").write_text(json.dumps(script))
        fakes.joinpath("calls.txt").unlink(missing_ok=True)  # each run starts its queues afresh
        return pytester.runpytest("--matrix", "gate", "-p", "no:cacheprovider", "-rs", *args)

    return pytester, run


def speed(sps=100.0, mem=2e9, **more):
    return {"train_samples_per_s": sps, "peak_rss_bytes": 1e9, "peak_mem_reserved_bytes": mem, **more}


def quality(acc=0.85, f1=0.89, sps=100.0, **more):
    return {"train_samples_per_s": sps, "peak_rss_bytes": 1e9, "eval_accuracy": acc, "eval_f1": f1, **more}


def run_dir(result):
    """The folder the run printed in its summary (each run has its own, however quickly they follow)."""
    (line,) = [line for line in result.stdout.lines if line.startswith("results (")]
    return Path(line.split(": ", 1)[1])


def baselines(pytester):
    return sorted(pytester.path.joinpath("results", "baselines").rglob("*.json"))


def write_baselines(run, speed_figures=None, quality_figures=None, *args):
    result = run({SPEED: [speed_figures or speed()], QUALITY: [quality_figures or quality()]}, "--update-baselines", *args)
    result.assert_outcomes(passed=2)
    return result


def test_without_a_baseline_cells_are_new_and_nothing_is_written(project):
    pytester, run = project
    result = run({SPEED: [speed()], QUALITY: [quality()]})
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*new: no baseline for mrpc-bert-base-uncased-dynamic-bs8-fp32 on *--update-baselines*"])
    assert baselines(pytester) == []


def test_update_baselines_writes_them_and_identical_figures_pass(project):
    pytester, run = project
    result = write_baselines(run)
    result.stdout.fnmatch_lines(["baselines written (2): *"])
    files = baselines(pytester)
    assert [f.name for f in files] == [f"{QUALITY}.json", f"{SPEED}.json"]
    before = [f.read_text() for f in files]
    result = run({SPEED: [speed()], QUALITY: [quality()]})
    result.assert_outcomes(passed=2)
    assert [f.read_text() for f in files] == before, "a run without --update-baselines writes no baseline"
    rewritten = run({SPEED: [speed(sps=120.0)], QUALITY: [quality()]}, "--update-baselines")
    rewritten.assert_outcomes(passed=2)
    assert json.loads(files[1].read_text())["metrics"]["train_samples_per_s"] == 120.0


def test_a_baseline_20_percent_faster_fails_with_the_full_message(project):
    pytester, run = project
    write_baselines(run, speed(sps=120.0))
    result = run({SPEED: [speed(sps=100.0, _libraries={"torch": "9.9.9"})], QUALITY: [quality()]})
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    for fragment in (f"{SPEED}: regression",
                     "train_samples_per_s: 120 -> 100 (-16.7%; threshold train_samples_per_s:-5%, noise 0.0%)",
                     "confirmation runs: train_samples_per_s 100, 100", "environment changed: torch", "-> 9.9.9", "baselines"):
        assert fragment in out, fragment


def test_a_small_change_inside_the_threshold_passes(project):
    pytester, run = project
    write_baselines(run)
    run({SPEED: [speed(sps=98.0)], QUALITY: [quality()]}).assert_outcomes(passed=2)


def test_a_change_past_the_threshold_but_inside_the_measured_noise_passes(project):
    pytester, run = project
    # The baseline was measured three times and spread over 15%.
    result = run({SPEED: [speed(sps=100.0), speed(sps=88.0), speed(sps=103.0)], QUALITY: [quality()]},
                 "--update-baselines", "--repeats", "3")
    result.assert_outcomes(passed=2)
    run({SPEED: [speed(sps=92.0)], QUALITY: [quality()]}).assert_outcomes(passed=2)


def test_memory_growth_past_its_threshold_fails(project):
    pytester, run = project
    write_baselines(run)
    result = run({SPEED: [speed(mem=2.6e9)], QUALITY: [quality()]})
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*peak_mem_reserved_bytes: 1907.3 MiB -> 2479.6 MiB (+30.0%; threshold peak_mem_reserved_bytes:+5%*"]
    )


def test_a_quality_drop_out_of_its_band_fails_although_speed_improved(project):
    pytester, run = project
    write_baselines(run)
    result = run({SPEED: [speed()], QUALITY: [quality(acc=0.75, sps=150.0)]})
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert f"{QUALITY}: regression" in out and "eval_accuracy 75.00 is -9.56 points" in out
    assert "google-research/bert" in out


def test_a_threshold_crossing_that_confirmation_runs_do_not_repeat_passes(project):
    pytester, run = project
    write_baselines(run)
    result = run({SPEED: [speed(sps=80.0), speed(sps=100.0), speed(sps=99.0)], QUALITY: [quality()]})
    result.assert_outcomes(passed=2)
    doc = json.loads((run_dir(result) / f"{SPEED}.json").read_text())
    assert doc["verdict"]["verdict"] == "suspect", "it passes, loudly"
    assert [r["train_samples_per_s"] for r in doc["verdict"]["confirmation"]] == [100.0, 99.0]
    assert "confirmation runs did not repeat it" in doc["verdict"]["note"]
    result.stdout.fnmatch_lines(["*SuspectNight: *: suspect", "*SUSPECT: train_samples_per_s: 100 -> 80*",
                                 "judged 2 of 2 cells (0 regressed, 1 suspect)"])


def test_a_second_suspect_night_in_the_same_direction_is_a_regression(project):
    pytester, run = project
    write_baselines(run)
    first = run({SPEED: [speed(sps=80.0), speed(sps=100.0), speed(sps=99.0)], QUALITY: [quality()]})
    first.assert_outcomes(passed=2)
    second = run({SPEED: [speed(sps=81.0), speed(sps=100.0), speed(sps=98.0)], QUALITY: [quality()]})
    second.assert_outcomes(passed=1, failed=1)
    second.stdout.fnmatch_lines(["*a second consecutive suspect night in the same direction*"])
    faster = run({SPEED: [speed(sps=130.0)], QUALITY: [quality()]})  # the other way: not the same level change
    faster.assert_outcomes(passed=2)


def test_five_good_nights_become_the_baseline_and_a_pinned_file_still_wins(project):
    pytester, run = project
    write_baselines(run)
    for sps in (101.0, 99.0, 100.5, 99.5, 100.2):
        run({SPEED: [speed(sps=sps)], QUALITY: [quality()]}, "--confirm", "0")
    result = run({SPEED: [speed(sps=100.0)], QUALITY: [quality()]})
    result.assert_outcomes(passed=2)
    doc = json.loads((run_dir(result) / f"{SPEED}.json").read_text())
    assert doc["verdict"]["verdict"] == "pass"
    # the --update-baselines run and the five nights
    assert doc["verdict"]["baseline_source"].startswith("history of 6 good runs"), doc["verdict"]["baseline_source"]
    slow = run({SPEED: [speed(sps=80.0)], QUALITY: [quality()]})
    slow.assert_outcomes(passed=1, failed=1)
    slow.stdout.fnmatch_lines(["*train_samples_per_s: 100 -> 80 (-20.0%*history of 7 runs, 99% prediction interval*"])
    pinned = next(f for f in baselines(pytester) if f.name == f"{SPEED}.json")
    doc = json.loads(pinned.read_text())
    doc["metrics"]["train_samples_per_s"] = 200.0  # a user's pinned figure, far from the history's level
    pinned.write_text(json.dumps(dict(doc, pinned=True)))
    result = run({SPEED: [speed(sps=100.0)], QUALITY: [quality()]})
    result.assert_outcomes(passed=1, failed=1)  # 200 -> 100 against the pinned file
    result.stdout.fnmatch_lines(["*train_samples_per_s: 200 -> 100*"])


def test_require_baselines_fails_a_cell_with_nothing_to_judge_it_and_the_summary_counts(project):
    pytester, run = project
    result = run({SPEED: [speed()], QUALITY: [quality()]}, "--require-baselines")
    assert result.ret == 1
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*new: no baseline for*", "judged 0 of 2 cells; not judged: 2 no baseline for this hardware key"]
    )


def test_a_scratch_results_dir_is_judged_against_the_projects_baselines(project):
    pytester, run = project
    write_baselines(run)
    result = run({SPEED: [speed(sps=70.0)], QUALITY: [quality()]}, "--results-dir", "scratch")
    result.assert_outcomes(passed=1, failed=1)
    assert list(pytester.path.joinpath("scratch", "runs").iterdir()), "the run went to the scratch folder"
    assert not pytester.path.joinpath("scratch", "baselines").exists()
    result.stdout.fnmatch_lines(["judged 2 of 2 cells (1 regressed)"])


def test_a_corrupt_baseline_gives_a_clear_error_and_the_rest_still_runs(project):
    pytester, run = project
    write_baselines(run)
    broken = next(f for f in baselines(pytester) if f.name == f"{SPEED}.json")
    broken.write_text("{ truncated")
    result = run({SPEED: [speed()], QUALITY: [quality()]})
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*{SPEED}: baseline unusable: {broken}: not valid JSON*"])


def test_a_disturbed_cell_never_becomes_a_baseline(tmp_path):
    from harness.results import CellResult
    from harness.spec import CellSpec
    from harness.store.baselines import write_baseline

    result = CellResult(spec=CellSpec(max_steps=30), status="ok", run_id="r", env={"hardware_key": "cpu-test"},
                        metrics={"train_samples_per_s": 100.0, "disturbed": "other processes used 1.20 CPU cores"})
    with pytest.raises(ValueError, match=rf"^{result.id}: a disturbed cell cannot become a baseline "
                                         r"\(other processes used 1.20 CPU cores\); measure it again on a quiet machine$"):
        write_baseline(result, tmp_path)
    assert not any(tmp_path.rglob("*.json"))


def test_update_baselines_refuses_a_disturbed_cell_says_so_and_writes_the_others(project):
    pytester, run = project
    result = run({SPEED: [speed(disturbed="other processes on the GPU: pids [4242]")], QUALITY: [quality()]},
                 "--update-baselines", "--disturbed-retries", "0")
    result.assert_outcomes(passed=1, skipped=1)
    assert [f.name for f in baselines(pytester)] == [f"{QUALITY}.json"]
    result.stdout.fnmatch_lines([
        f"*BASELINE NOT WRITTEN: {SPEED}: a disturbed cell cannot become a baseline (other processes on the GPU*",
        "baselines written (1): *",
        "baselines NOT written (1):",
        f"  {SPEED}: a disturbed cell cannot become a baseline (other processes on the GPU: pids ?4242?)*",
    ])


def test_seeds_mode_records_mean_and_std_and_sets_the_band(project):
    pytester, run = project
    result = run({SPEED: [speed()], QUALITY: [quality(acc=0.84), quality(acc=0.86), quality(acc=0.85)]},
                 "--seeds", "3", "--update-baselines")
    result.assert_outcomes(passed=2)
    doc = json.loads(next(f for f in baselines(pytester) if f.name == f"{QUALITY}.json").read_text())
    assert doc["metrics"]["eval_accuracy_mean"] == pytest.approx(0.85)
    assert doc["metrics"]["eval_accuracy_std"] == pytest.approx(0.01)
    assert [r["seed"] for r in doc["samples"]["repeats"]] == [42, 43, 44]


def test_find_max_batch_size_replaces_the_cells_with_searches(project):
    pytester, run = project
    result = run({"capacity": 40}, "--find-max-batch-size")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines([
        "*largest batch that fits*",
        "mrpc-bert-base-uncased-dynamic-fp32: max batch size 40 (first out of memory at 41; tried 8:ok, 16:ok, 32:ok*64:oom*",
    ])
    manifest = json.loads(next(pytester.path.joinpath("results", "runs").rglob("run.json")).read_text())
    assert manifest["max_batch_size"][0]["max_batch_size"] == 40


def test_a_run_stopped_by_sigterm_keeps_its_finished_cells_and_is_partial(project):
    pytester, run = project
    pytester.path.joinpath("fakes", "script.json").write_text(json.dumps(
        {SPEED: [speed()], QUALITY: [quality()], "sigterm_on": QUALITY}))
    pytester.runpytest_subprocess("--matrix", "gate", "-p", "no:cacheprovider")
    (folder,) = pytester.path.joinpath("results", "runs").iterdir()
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["state"] == "partial" and manifest["finished"] == [SPEED]
    assert (folder / f"{SPEED}.json").is_file()


def test_a_baseline_measured_under_another_recipe_is_not_held_against_the_cell(project):
    pytester, run = project
    write_baselines(run)
    matrix = pytester.path.joinpath("benchmarks", "gate.toml")
    matrix.write_text(matrix.read_text().replace("max_steps = 30", "max_steps = 60"))
    result = run({SPEED: [speed(sps=60.0)], QUALITY: [quality()]})
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*{SPEED}: baseline unusable: *{SPEED}.json: the baseline was measured under another"
                                 " recipe of this cell (max_steps 30 -> 60)*--update-baselines*"])
    # Rewriting it deliberately clears the error; a threshold edit alone keeps the baseline comparable.
    run({SPEED: [speed(sps=60.0)], QUALITY: [quality()]}, "--update-baselines").assert_outcomes(passed=2)
    matrix.write_text(matrix.read_text().replace("[axes]", 'thresholds = ["train_samples_per_s:-10%"]\n[axes]'))
    run({SPEED: [speed(sps=59.0)], QUALITY: [quality()]}).assert_outcomes(passed=2)


def test_on_another_machine_class_the_hardware_independent_figures_are_still_judged(project):
    pytester, run = project
    tokens = {"train_real_tokens": 12908, "train_padded_tokens": 17592, "padding_efficiency": 0.734}
    write_baselines(run, speed(**tokens))
    folder = baselines(pytester)[0].parent
    for path in folder.glob("*.json"):  # the only baselines are another machine's
        doc = json.loads(path.read_text())
        doc["env"] = dict(doc["env"], hardware_key="cpu-2x-Intel-Xeon", cpu_model="Intel Xeon")
        path.write_text(json.dumps(doc))
    folder.rename(folder.with_name("cpu-2x-Intel-Xeon"))
    same = run({SPEED: [speed(sps=14.0, **tokens)], QUALITY: [quality()]})
    same.assert_outcomes(skipped=2)  # speed needs this machine's baseline: new, but not silent
    same.stdout.fnmatch_lines(["*new: no baseline for*"])
    doc = json.loads((run_dir(same) / f"{SPEED}.json").read_text())
    assert "judged against cpu-2x-Intel-Xeon" in doc["verdict"]["note"]
    assert {f["metric"] for f in doc["verdict"]["findings"] if f["kind"] == "invariant"} == set(tokens)
    other = run({SPEED: [speed(sps=14.0, **dict(tokens, train_real_tokens=13000))], QUALITY: [quality(acc=0.70)]})
    other.assert_outcomes(failed=2)
    other.stdout.fnmatch_lines(["*train_real_tokens: 1.291e+04 -> 1.3e+04*differs from the same cell*"])
    other.stdout.fnmatch_lines(["*eval_accuracy 70.00*"])


DISTURBED = "other processes used 1.20 CPU cores on average while it ran (limit 0.1)"


def test_a_disturbed_cell_is_measured_again_once_the_machine_is_quiet_and_judged(project):
    pytester, run = project
    write_baselines(run)
    result = run({SPEED: [speed(disturbed=DISTURBED), speed()], QUALITY: [quality()]}, "--require-baselines",
                 "--max-foreign-load", "8")  # the machine's real load never disturbs these fakes
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*{SPEED}: disturbed (other processes used 1.20 CPU cores*); waiting up to 300 s "
                                 "for a quiet machine, then measuring it again (1/2)*",
                                 "judged 2 of 2 cells (0 regressed)*"])
    doc = json.loads((run_dir(result) / f"{SPEED}.json").read_text())
    assert doc["metrics"]["disturbed_reruns"] == 1 and not doc["metrics"].get("disturbed")


def test_a_cell_still_disturbed_after_its_re_runs_fails_a_night_that_requires_judgment(project):
    pytester, run = project
    write_baselines(run)
    script = {SPEED: [speed(disturbed=DISTURBED)], QUALITY: [quality()]}
    result = run(script, "--require-baselines", "--max-foreign-load", "8")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines([f"*{SPEED}: disturbed after 2 re-run(s) on a quietened machine (other processes used "
                                 "1.20 CPU cores*): its speed was not judged, and --require-baselines asks that every "
                                 "cell be judged*",
                                 "judged 1 of 2 cells*not judged: 1 disturbed by another load*"])
    relaxed = run(script, "--max-foreign-load", "8", "--disturbed-retries", "0")  # nobody asked for judgment
    relaxed.assert_outcomes(passed=1, skipped=1)

