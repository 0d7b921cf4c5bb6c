"""Why it got slower: each step's phases in every cell, and a regression message that names
the phase that grew and ends with the command that measures it again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.measure.vocabulary import PHASE_NAMES

FAULTS = Path(__file__).resolve().parent / "faults"


def test_a_slowdown_planted_before_the_optimizer_step_is_named_as_the_optimizer_phase(bench_project, monkeypatch):
    bench = bench_project("why", 12, "batch_size = [8]\n")
    bench.runpytest("--matrix", "why", "-p", "no:cacheprovider", "--update-baselines", "--profile").assert_outcomes(
        passed=1)
    (baseline,) = (bench.path / "results" / "baselines").glob("*/mrpc-*.json")
    before = json.loads(baseline.read_text())
    phases = before["samples"]["step_phases"]
    assert set(phases) == set(PHASE_NAMES) and len(phases["optimizer"]) == 12
    for i, total in enumerate(before["samples"]["step_seconds"]):  # the phases add up to the step
        assert abs(sum(phases[name][i] for name in PHASE_NAMES) - total) <= 0.01 * total

    # From outside the project: a sleep of 60 ms before every AdamW step, nothing else changed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_TEST_SLOW", "optimizer:0.06")
    result = bench.runpytest("--matrix", "why", "-p", "no:cacheprovider", "--confirm", "1")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    line = next(text for text in out.splitlines() if text.startswith("  train_samples_per_s:") and "grew:" in text)
    grew = line.split("grew: ", 1)[1]
    assert grew.startswith("optimizer +"), line  # the optimizer phase first: it grew most
    assert float(grew.split("+", 1)[1].split(" ms/step")[0]) > 30, line  # of the 60 ms planted
    cell = next(text.split(": ")[0].split()[-1] for text in out.splitlines() if "-dynamic-bs8-fp32: regression" in text)
    assert f"reproduce here: pytest benchmarks/ --matrix why -k {cell} --repeats 3" in out, out[-3000:]
    # the confirmed regression was profiled by itself, and held against the baseline's profile
    assert "operators that grew against the baseline's profile: " in out, out[-3000:]


def test_phases_side_by_side_and_what_grew():
    from harness.judge.phases import side_by_side, where_it_grew

    old = {"phase_data_s": 0.002, "phase_forward_backward_s": 0.030, "phase_optimizer_s": 0.010, "phase_other_s": 0.0005}
    new = {"phase_data_s": 0.002, "phase_forward_backward_s": 0.031, "phase_optimizer_s": 0.025, "phase_other_s": 0.0005}
    assert side_by_side(old, new) == ("data 2.0 -> 2.0, fwd+bwd 30.0 -> 31.0, optimizer 10.0 -> 25.0 (+150%), "
                                      "other 0.5 -> 0.5")
    assert where_it_grew(new, old) == "grew: optimizer +15.0 ms/step (+150%, now 43% of the step)"
    assert where_it_grew(old, old) == "" and side_by_side({}, new) == ""


def test_a_regression_ends_with_the_commands_that_measure_it_again():
    from harness.judge.reproduce import reproduce_lines

    lines = reproduce_lines("mrpc-x-bs8-fp16", "nightly", gpu=True, env_changes=[
        "gpu0.power_limit_w 700.0 -> 500.0", "transformers 4.46.3 -> 5.24.0", "harness abc -> def",
        "data hub:nyu-mll/glue@aaa/mrpc -> hub:nyu-mll/glue@bbb/mrpc", "newpkg (none) -> 1.0"])
    assert lines == [
        "reproduce here: pytest benchmarks/ --matrix nightly -k mrpc-x-bs8-fp16 --repeats 3 --gpu",
        "the upgrade side by side: python -m harness ab transformers==4.46.3 transformers==5.24.0 "
        "--matrix nightly -k mrpc-x-bs8-fp16 --gpu",
    ]


def test_two_cells_slowed_in_the_forward_pass_after_one_upgrade_are_one_alert(bench_project, monkeypatch):
    bench = bench_project("cause", 12, "batch_size = [4, 8]\n")
    bench.runpytest("--matrix", "cause", "-p", "no:cacheprovider", "--update-baselines").assert_outcomes(passed=2)
    # The baselines were measured under another transformers: the one change between them and tonight.
    for path in (bench.path / "results" / "baselines").glob("*/mrpc-*.json"):
        document = json.loads(path.read_text())
        for table in ("libraries", "packages"):
            document["env"][table]["transformers"] = "4.0.0"
        path.write_text(json.dumps(document))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_TEST_SLOW", "forward:0.08")  # 80 ms before every forward pass, from outside
    result = bench.runpytest("--matrix", "cause", "-p", "no:cacheprovider", "--confirm", "1")
    result.assert_outcomes(failed=2)  # each regressed cell still fails on its own
    lines = result.stdout.str().splitlines()
    start = lines.index("by cause:")
    (group,) = [line for line in lines[start + 1:] if line.startswith("  transformers 4.0.0 -> ")]
    assert ": 2 cells slower, " in group and "in fwd+bwd: " in group, group
    assert "-dynamic-bs4-fp32" in group and "-dynamic-bs8-fp32" in group, group
    again = lines[lines.index(group) + 1:lines.index(group) + 3]  # the group ends with the commands
    assert again[0].startswith("    reproduce here: pytest benchmarks/ --matrix cause -k '") and " or " in again[0]
    assert again[1].startswith("    the upgrade side by side: python -m harness ab transformers==4.0.0 "), again


def test_causes_group_by_software_change_and_name_the_machine_when_no_software_changed():
    from harness.judge.causes import cause_lines, group_by_cause, split_changes
    from harness.judge.verdict import Finding, Verdict
    from harness.results import CellResult
    from harness.spec import CellSpec

    def bad(batch, change, env_changes, grew=("forward_backward",), verdict="regression"):
        spec = CellSpec(batch_size=batch, max_steps=10)
        finding = Finding("train_samples_per_s", "speed", verdict, 90.0, 100.0, change, "-5%", 0.01, grew=grew)
        return CellResult(spec=spec, status="ok", run_id="r", env={}, metrics={},
                          verdict=Verdict(spec.id, verdict, [finding], env_changes))

    upgrade = ["transformers 5.23.0 -> 5.24.0"]
    reboot = ["booted 2026-11-29T03:00Z -> 2026-11-30T02:10Z (the machine restarted)", "gpu0.power_limit_w 700 -> 500"]
    causes = group_by_cause([bad(8, -0.06, upgrade), bad(16, -0.09, upgrade), bad(32, -0.07, upgrade),
                             bad(64, -0.2, reboot, grew=("optimizer",), verdict="suspect")])
    assert [len(c.cells) for c in causes] == [3, 1]
    assert causes[0].line().startswith("transformers 5.23.0 -> 5.24.0: 3 cells slower, 6%-9% (median 7%), in fwd+bwd: ")
    assert causes[1].line().startswith("no change in the software (the machine: booted 2026-11-29T03:00Z -> ")
    assert "gpu0.power_limit_w 700 -> 500" in causes[1].line() and "(1 suspect, not confirmed)" in causes[1].line()
    assert split_changes(upgrade + reboot) == (tuple(upgrade), tuple(reboot))
    lines = cause_lines([bad(8, -0.06, upgrade), bad(16, -0.09, upgrade)], "nightly")
    assert lines[0] == "by cause:" and lines[1].startswith("  transformers 5.23.0 -> 5.24.0: 2 cells slower, 6%-9%")
    assert lines[2] == ("    reproduce here: pytest benchmarks/ --matrix nightly "
                        "-k 'mrpc-bert-base-uncased-dynamic-bs8-fp32 or mrpc-bert-base-uncased-dynamic-bs16-fp32' --repeats 3")
    assert lines[3].startswith("    the upgrade side by side: python -m harness ab transformers==5.23.0 transformers==5.24.0")


def test_profile_keeps_an_operator_table_whose_total_is_the_profiled_steps_time(bench_project):
    bench = bench_project("prof", 10, "batch_size = [8]\n")
    bench.runpytest("--matrix", "prof", "-p", "no:cacheprovider", "--profile", "4").assert_outcomes(skipped=1)
    (document,) = (bench.path / "results" / "runs").glob("*/mrpc-*.json")
    cell = json.loads(document.read_text())
    table = cell["samples"]["profile"]
    assert table["steps"] == 4 and table["device"] == "cpu"
    names = [op["name"] for op in table["ops"]]
    assert "aten::addmm" in names and "harness::step" in names, names[:20]
    total_s = table["total_self_cpu_us"] / 1e6
    assert abs(total_s - table["seconds"]) <= 0.10 * table["seconds"], (total_s, table["seconds"])
    assert len(cell["samples"]["step_seconds"]) == 10, "the measured execution is untouched by the profile"
