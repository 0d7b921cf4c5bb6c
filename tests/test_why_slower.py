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
    bench.runpytest("--matrix", "why", "-p", "no:cacheprovider", "--update-baselines").assert_outcomes(passed=1)
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
