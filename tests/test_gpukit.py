"""The GPU kit, on this CPU machine: it builds under the 64 MiB a device call carries, and
its command runs its CPU-safe parts (the kit's own model and data load; the GPU tests
collect and skip) and says that the GPU parts did not run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.gpukit import LIMIT_BYTES, build

ROOT = Path(__file__).resolve().parents[1]


def test_the_kit_builds_small_and_its_command_runs_the_cpu_safe_parts(tmp_path, glue_dir, minilm_dir):
    kit = tmp_path / "gpu-kit"
    manifest = build(kit, glue_dir, wheels=False)
    assert manifest["bytes"] < LIMIT_BYTES
    assert (kit / "minilm" / "model.safetensors").stat().st_size < 50 * 2**20, "weights in fp16"
    assert (kit / "glue" / "MRPC" / "train.tsv").is_file() and (kit / "run.sh").is_file()
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), HARNESS_ROOT=str(ROOT), PYTHON=sys.executable)
    env.pop("GLUE_DIR", None)
    done = subprocess.run(["bash", str(kit / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check = (out / "kit-check.txt").read_text()
    assert "mrpc 3668 train pairs, 408 validation pairs" in check, check
    assert str(kit / "minilm") in check, "the model comes from the kit"
    summary = (out / "summary.txt").read_text()
    assert "kit check: exit 0" in summary
    assert "no CUDA device" in summary and "gpu tests: exit 0" in summary, summary
    assert "skipped" in (out / "gpu-tests.log").read_text()


def test_a_kit_without_mrpc_says_where_to_find_it(tmp_path, minilm_dir):
    from harness.gpukit import KitError

    with pytest.raises(KitError, match="MRPC not found"):
        build(tmp_path / "kit", tmp_path / "nowhere", wheels=False)
