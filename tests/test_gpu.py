"""The GPU path on a real GPU (marked ``gpu``; skipped without CUDA; run by the GPU kit,
``python -m harness gpu-kit`` then ``bash gpu-kit/run.sh`` on the device).

Each execution runs in its own child process, as in a nightly run; this process never
initializes CUDA.  Figures the checks measure go to ``--gpu-out`` (the kit's ``$OUT``) as
``gpu-checks.json``, whatever the outcome.
"""

import json
import statistics
from dataclasses import replace

import pytest

from harness.launch import launch_cell
from harness.spec import CellSpec


def _cuda() -> bool:
    import subprocess
    import sys

    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="no CUDA device: the GPU checks need one")]

FIGURES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def keep_figures(request):
    yield
    out = request.config.getoption("gpu_out")
    if out and FIGURES:
        from pathlib import Path

        Path(out, "gpu-checks.json").write_text(json.dumps(FIGURES, indent=2, default=str))


def run(cell: CellSpec, **kw):
    return launch_cell(cell, run_id="gpu-checks", use_cuda=True, timeout_s=kw.pop("timeout_s", 1200), **kw)


BERT = CellSpec(checkpoint="bert-base-uncased", weights="random", tokenizer="all-MiniLM-L6-v2", batch_size=32,
                precision="bf16", max_steps=120, timing_warmup_steps=20, evaluate=False)
MINILM = CellSpec(checkpoint="all-MiniLM-L6-v2", batch_size=32, num_train_epochs=3)


def test_allocator_and_nvml_peaks_are_both_recorded_and_nvml_holds_the_allocators():
    r = run(BERT)
    assert r.ok, r.reason
    m = r.metrics
    FIGURES["peaks"] = {k: m.get(k) for k in ("peak_mem_allocated_bytes", "peak_mem_reserved_bytes",
                                              "peak_device_mem_used_bytes")}
    assert m["peak_mem_allocated_bytes"] > 0 and m["peak_device_mem_used_bytes"] > 0
    assert m["peak_device_mem_used_bytes"] >= m["peak_mem_reserved_bytes"] >= m["peak_mem_allocated_bytes"]


def test_cuda_event_step_times_agree_with_the_synchronized_wall_clock():
    """The timed window's CUDA-event seconds against train_wall_s scaled to the same steps:
    the wall clock brackets warmup and the timed steps, so the timed share must be close."""
    r = run(BERT)
    assert r.ok, r.reason
    steps = r.samples["step_seconds"]
    warm = BERT.timing_warmup_steps
    events = sum(steps[warm:])
    wall_per_step = (r.metrics["train_wall_s"] - sum(steps[:warm])) / len(steps[warm:])
    FIGURES["timing"] = {"event_s": events, "wall_per_step_s": wall_per_step, "event_per_step_s": events / len(steps[warm:])}
    assert events / len(steps[warm:]) == pytest.approx(wall_per_step, rel=0.02)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_fine_tunes_learn_as_fp32_does(precision):
    fp32 = FIGURES.get("fp32_accuracy")
    if fp32 is None:
        base = run(MINILM)
        assert base.ok, base.reason
        fp32 = FIGURES["fp32_accuracy"] = base.metrics["eval_accuracy"]
    r = run(replace(MINILM, precision=precision))
    assert r.ok, r.reason
    FIGURES[f"{precision}_accuracy"] = r.metrics["eval_accuracy"]
    assert r.metrics["eval_accuracy"] > r.metrics["majority_class_accuracy"] + 0.05, "it learned"
    assert abs(r.metrics["eval_accuracy"] - fp32) <= 0.03, f"inside the fp32 cell's band ({fp32:.3f} +/- 3 points)"


def test_a_cell_far_too_big_is_an_oom_naming_its_batch_and_the_next_cell_measures():
    huge = replace(BERT, batch_size=16384, max_length=512, padding="max_length", max_steps=3, timing_warmup_steps=1)
    r = run(huge)
    assert r.status == "oom", (r.status, r.reason)
    assert "16384" in r.reason and "GiB" in r.reason, r.reason
    after = run(replace(BERT, max_steps=40))
    assert after.ok and after.metrics["train_samples_per_s"] > 0


def test_the_max_batch_search_answer_trains_and_one_step_above_does_not():
    from harness.maxbatch import find_max_batch_size, probe_cell

    cell = replace(BERT, max_length=512, padding="max_length")
    found = find_max_batch_size(cell, lambda c: run(c, timeout_s=600), start=64, limit=8192)
    FIGURES["max_batch"] = found.to_dict()
    assert found.error is None and found.max_batch_size and found.first_oom
    assert run(replace(probe_cell(cell, 3), batch_size=found.max_batch_size)).ok
    assert run(replace(probe_cell(cell, 3), batch_size=found.first_oom)).status == "oom"


def test_energy_from_the_counter_agrees_with_mean_power_times_time():
    r = run(replace(BERT, max_steps=300))
    assert r.ok, r.reason
    m = r.metrics
    FIGURES["energy"] = {k: m.get(k) for k in ("energy_j", "mean_power_w", "train_wall_s", "energy_per_sample_j")}
    assert m["energy_j"] == pytest.approx(m["mean_power_w"] * m["train_wall_s"], rel=0.10)


def test_throughput_noise_of_five_repeats_in_separate_processes_is_recorded():
    values = []
    for _ in range(5):
        r = run(BERT)
        assert r.ok, r.reason
        values.append(r.metrics["train_samples_per_s"])
    cv = statistics.stdev(values) / statistics.fmean(values)
    FIGURES["noise"] = {"samples_per_s": values, "cv": cv, "goal": 0.01}
    assert cv < 0.05, f"coefficient of variation {cv:.2%} (goal under 1%)"
