"""Two processes, gloo DDP on the CPU: one merged result with the global batch."""

import pytest

from harness.distributed import merge_ranks, scaling_efficiency
from harness.launch import launch_cell
from harness.matrix import parse_matrix
from harness.measure.timing import BatchCount
from harness.results import CellResult
from harness.runner import run_cell
from harness.spec import CellSpec


def test_merge_ranks_sums_each_step():
    a = [BatchCount(4, 40, 60, 400), BatchCount(4, 30, 60, 300)]
    b = [BatchCount(4, 50, 60, 500), BatchCount(4, 20, 60, 200)]
    assert merge_ranks([a, b]) == [BatchCount(8, 90, 120, 900), BatchCount(8, 50, 120, 500)]


def test_scaling_efficiency():
    single = CellResult(spec=CellSpec(), status="ok", run_id="r", env={}, metrics={"train_samples_per_s": 100.0})
    double = CellResult(spec=CellSpec(nproc=2), status="ok", run_id="r", env={}, metrics={"train_samples_per_s": 180.0})
    assert scaling_efficiency(double, single) == pytest.approx(0.9)


def test_nproc_is_an_axis_that_names_its_cells():
    m = parse_matrix({"axes": {"nproc": [1, 2]}})
    assert m.ids == ["mrpc-bert-base-uncased-dynamic-bs32-fp32-nproc1", "mrpc-bert-base-uncased-dynamic-bs32-fp32-nproc2"]


def test_two_process_gloo_ddp_gives_one_merged_result_with_the_global_batch(tiny_cell):
    cell = tiny_cell(nproc=2, batch_size=4, max_steps=6, timing_warmup_steps=2, evaluate=True)
    result = launch_cell(cell, run_id="ddp", use_cuda=False)  # torchrun, started by the launcher
    assert result.status == "ok", result.reason
    m = result.metrics
    assert m["world_size"] == 2 and m["global_batch_size"] == 8
    assert m["train_steps"] == 6 and m["timed_samples"] == 4 * 8  # both ranks' samples in every timed step
    assert m["per_device_samples_per_s"] == pytest.approx(m["train_samples_per_s"] / 2)
    assert m["eval_samples"] == 408 and 0 <= m["eval_accuracy"] <= 1
    assert result.spec.nproc == 2


def test_a_failing_launch_is_an_error_result(tiny_cell):
    result = launch_cell(tiny_cell(nproc=2, checkpoint="no-such-org/no-such-model"), run_id="ddp", use_cuda=False)
    assert result.status == "error" and "no-such-model" in result.reason


def test_ranks_run_only_under_the_launcher(tiny_cell):
    result = run_cell(tiny_cell(nproc=2), run_id="ddp", use_cuda=False)
    assert result.status == "error" and "launch_cell" in result.reason
