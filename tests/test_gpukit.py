"""The GPU kit, on this CPU machine: it builds under the 64 MiB a device call carries; its
model (MiniLM stored in fp16) trains in fp32 with a finite loss through the harness; and its
first-light script runs its CPU-safe parts on a tiny matrix and leaves at most 8 files in
``$OUT``, none deeper than two folders, with the result documents inside the bundle."""

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from harness.gpukit import LIMIT_BYTES, build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kit(tmp_path_factory, glue_dir, minilm_dir):
    folder = tmp_path_factory.mktemp("kit") / "gpu-kit"
    manifest = build(folder, glue_dir, wheels=False)
    return folder, manifest


def test_the_kit_builds_small_with_fp16_weights_and_its_files(kit):
    folder, manifest = kit
    assert manifest["bytes"] < LIMIT_BYTES
    assert (folder / "minilm" / "model.safetensors").stat().st_size < 50 * 2**20, "weights in fp16"
    assert (folder / "glue" / "MRPC" / "train.tsv").is_file()
    assert (folder / "first_light.sh").is_file() and (folder / "reference.py").is_file()
    reference = (folder / "reference.py").read_text()
    assert "from harness" not in reference and "import harness" not in reference, "the reference stands alone"


def test_the_kits_fp16_checkpoint_loads_in_fp32_and_trains_with_a_finite_loss(kit):
    """transformers 5 loads a checkpoint in its stored dtype: without an explicit dtype the
    kit's MiniLM would come up in fp16 (NaN under AdamW, and fp16 cells refusing to unscale)."""
    import math

    import torch
    from safetensors import safe_open

    from harness.models import load_model
    from harness.runner import run_cell
    from harness.spec import CellSpec

    folder, _ = kit
    with safe_open(folder / "minilm" / "model.safetensors", framework="pt") as stored:
        assert {stored.get_tensor(k).dtype for k in stored.keys() if stored.get_tensor(k).is_floating_point()} == {
            torch.float16}
    model, _ = load_model(str(folder / "minilm"), weights="pretrained", num_labels=2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    result = run_cell(CellSpec(checkpoint=str(folder / "minilm"), weights="pretrained", batch_size=8, max_steps=4,
                               timing_warmup_steps=1, evaluate=False), run_id="kit", use_cuda=False)
    assert result.ok, result.reason
    losses = [loss for _, loss in result.samples["loss_curve"]]
    assert losses and all(math.isfinite(x) for x in losses)


def _files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file())


def test_first_light_runs_its_cpu_safe_parts_and_packs_everything_into_a_few_files(kit, tmp_path, tiny_bert_dir):
    folder, _ = kit
    matrix = tmp_path / "tiny.toml"
    matrix.write_text(textwrap.dedent(f"""
        [matrix]
        name = "tiny-first-light"
        [defaults]
        checkpoint = "{tiny_bert_dir}"
        weights = "random"
        max_steps = 6
        timing_warmup_steps = 2
        evaluate = false
        [axes]
        batch_size = [8]
        precision = ["fp32"]
    """))
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), HARNESS_ROOT=str(ROOT), PYTHON=sys.executable,
               FIRST_LIGHT_MATRIX=str(matrix), FIRST_LIGHT_BUDGET_S="400")
    env.pop("GLUE_DIR", None)
    done = subprocess.run(["bash", str(folder / "first_light.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    files = _files(out)
    assert 0 < len(files) <= 8, files
    assert all(len(p.relative_to(out).parts) <= 3 for p in files), "no deeper than two folders"
    assert {p.name for p in files} >= {"summary.txt", "bundle.tar.gz", "first-light.md"}
    summary = (out / "summary.txt").read_text()
    assert "kit: exit 0" in summary and "slice: exit 0" in summary and "no CUDA device" in summary, summary
    with tarfile.open(out / "bundle.tar.gz") as bundle:
        names = bundle.getnames()
        documents = [n for n in names if "/results/runs/" in f"/{n.lstrip('./')}" and n.endswith("-fp32.json")]
        assert documents, names
        check = bundle.extractfile(next(n for n in names if n.endswith("logs/kit.log"))).read().decode()
        document = json.load(bundle.extractfile(documents[0]))
    assert "mrpc 3668 train pairs, 408 validation pairs" in check and str(folder / "minilm") in check, check
    assert "torch.float32" in check, "the kit's model loads in fp32"
    assert document["status"] == "ok" and len(document["samples"]["repeats"]) == 2


def test_a_kit_without_mrpc_says_where_to_find_it(tmp_path, minilm_dir):
    from harness.gpukit import KitError

    with pytest.raises(KitError, match="MRPC not found"):
        build(tmp_path / "kit", tmp_path / "nowhere", wheels=False)


def test_the_reference_trains_the_loop_and_the_trainer_on_the_very_same_batches(kit, tmp_path):
    """reference.py's logic on a CPU (--cpu: fp32, one layer, a few steps; its speed means
    nothing here): both sides run, and their timed batches hold the same real tokens."""
    folder, _ = kit
    out = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, str(folder / "reference.py"), "--mrpc", str(folder / "glue" / "MRPC"),
                           "--tokenizer", str(folder / "minilm"), "--out", str(out), "--cpu", "--steps", "5",
                           "--warmup", "2", "--layers", "1", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    loop, trainer = record["loop"][0], record["trainer"][0]
    assert loop["timed_steps"] == trainer["timed_steps"] == 3
    assert loop["timed_real_tokens"] == trainer["timed_real_tokens"] > 0
    assert loop["timed_samples"] == trainer["timed_samples"] == 3 * 32
    assert record["loop_samples_per_s_median"] > 0 and record["trainer_samples_per_s_median"] > 0
