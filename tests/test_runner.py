import json

import pytest
import torch

from harness.prepare import HarnessTrainer
from harness.results import read_result, write_result
from harness.runner import run_cell


def test_a_cell_runs_on_real_mrpc_and_writes_a_complete_result(tiny_cell, tmp_path):
    cell = tiny_cell(evaluate=True, max_steps=12, timing_warmup_steps=3)
    result = run_cell(cell, run_id="t", use_cuda=False)
    assert result.status == "ok", result.reason
    m = result.metrics
    assert m["train_steps"] == 12 and m["timed_steps"] == 9 and m["timing_warmup_steps"] == 3
    assert m["timed_samples"] == 9 * 8 and m["train_samples"] == 12 * 8
    assert m["train_samples_per_s"] == pytest.approx(m["timed_samples"] / m["timed_seconds"])
    assert 0 < m["padding_efficiency"] <= 1
    assert m["real_tokens_per_s"] == pytest.approx(m["padded_tokens_per_s"] * m["padding_efficiency"])
    assert m["peak_rss_bytes"] > 0 and m["train_wall_s"] >= m["timed_seconds"]
    assert m["eval_samples"] == 408 and 0 <= m["eval_accuracy"] <= 1 and 0 <= m["eval_f1"] <= 1
    assert len(result.samples["step_seconds"]) == 12
    assert result.samples["loss_curve"], "the loss curve is recorded"
    assert result.provenance["data_source"].startswith("GLUE_DIR:")
    assert result.env["cpu_count"] >= 1 and result.env["libraries"]["transformers"]
    again = read_result(write_result(result, tmp_path))
    assert again.to_dict() == json.loads(json.dumps(result.to_dict(), allow_nan=False))


def test_padding_modes_over_one_epoch(tiny_cell):
    """Same real tokens; dynamic pads fewer than max_length, bucketed fewer still."""
    figures = {}
    for padding in ("max_length", "dynamic", "bucketed"):
        cell = tiny_cell(padding=padding, batch_size=32, max_steps=-1, num_train_epochs=1, timing_warmup_steps=2)
        result = run_cell(cell, run_id="t", use_cuda=False)
        assert result.status == "ok", result.reason
        figures[padding] = result.metrics
    real = {p: m["train_real_tokens"] for p, m in figures.items()}
    padded = {p: m["train_padded_tokens"] for p, m in figures.items()}
    assert len(set(real.values())) == 1, real
    assert padded["max_length"] == 3668 * 128
    assert padded["bucketed"] < padded["dynamic"] < padded["max_length"]
    efficiency = {p: m["padding_efficiency"] for p, m in figures.items()}
    assert efficiency["bucketed"] > efficiency["dynamic"] > efficiency["max_length"]


def test_unknown_checkpoint_is_an_error_result_not_a_crash(tiny_cell):
    result = run_cell(tiny_cell(checkpoint="no-such-org/no-such-model"), run_id="t", use_cuda=False)
    assert result.status == "error"
    assert "no-such-org/no-such-model" in result.reason and "local folder" in result.reason


def test_fp16_on_a_cpu_is_skipped_with_its_reason(tiny_cell):
    result = run_cell(tiny_cell(precision="fp16"), run_id="t", use_cuda=False)
    assert result.status == "skipped" and "needs a CUDA device" in result.reason


def test_out_of_memory_is_recorded_and_the_next_cell_still_runs(tiny_cell, monkeypatch):
    def boom(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(HarnessTrainer, "train", boom)
        result = run_cell(tiny_cell(batch_size=16), run_id="t", use_cuda=False)
    assert result.status == "oom"
    assert "batch_size=16" in result.reason and "precision=fp32" in result.reason
    assert run_cell(tiny_cell(), run_id="t", use_cuda=False).status == "ok"


def test_a_crashing_cell_is_an_error_with_its_traceback(tiny_cell, monkeypatch):
    def crash(self, *args, **kwargs):
        raise RuntimeError("something broke inside the trainer")

    monkeypatch.setattr(HarnessTrainer, "train", crash)
    result = run_cell(tiny_cell(), run_id="t", use_cuda=False)
    assert result.status == "error" and "something broke inside the trainer" in result.reason


def test_gradient_accumulation_counts_every_batch(tiny_cell):
    cell = tiny_cell(batch_size=4, max_steps=6, timing_warmup_steps=2, training_args={"gradient_accumulation_steps": 2})
    result = run_cell(cell, run_id="t", use_cuda=False)
    assert result.status == "ok", result.reason
    assert result.metrics["timed_samples"] == 4 * 2 * 4


def test_a_compiled_cell_trains_on_full_batches_only(tiny_cell, tmp_path):
    """A partial last batch would recompile a compiled model inside the timed steps: compiled
    cells drop it, and their planned steps count full batches (3,668 pairs: 28 of 128)."""
    from harness.prepare import planned_optimizer_steps, prepare_cell

    cell = tiny_cell(batch_size=128, max_steps=-1, num_train_epochs=1, training_args=(("torch_compile", True),))
    prepared = prepare_cell(cell, use_cuda=False, output_dir=tmp_path)
    assert prepared.args.torch_compile and prepared.args.dataloader_drop_last
    assert planned_optimizer_steps(cell, 3668, 1, drop_last=True) == 28
    assert planned_optimizer_steps(cell, 3668, 1) == 29
    plain = prepare_cell(tiny_cell(batch_size=128), use_cuda=False, output_dir=tmp_path)
    assert not plain.args.dataloader_drop_last, "other cells keep every pair"


def test_a_cells_callbacks_are_recorded_with_the_hash_of_the_code_they_ran(tiny_cell, tmp_path, monkeypatch):
    import hashlib

    module = tmp_path / "planted_callbacks.py"
    module.write_text("from transformers import TrainerCallback\n\nclass Noop(TrainerCallback):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = run_cell(tiny_cell(callbacks=("planted_callbacks:Noop",)), run_id="t", use_cuda=False)
    assert result.ok, result.reason
    (source,) = result.provenance["callbacks"]
    assert source == {"path": "planted_callbacks:Noop", "file": str(module),
                      "sha256": hashlib.sha256(module.read_bytes()).hexdigest()}
