"""The environment a result was measured in: hardware, driver, library versions, commit.

``hardware_key`` names the machine class a baseline belongs to (GPU model and count, or
CPU model and core count); library versions are recorded but are not part of the key,
since an upgrade is exactly what gets compared.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "transformers", "datasets", "evaluate", "accelerate", "tokenizers", "numpy", "pytest-benchmark")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gpu_info() -> dict[str, Any]:
    """GPU name, count, driver and CUDA version; empty figures where there is no GPU."""
    import torch

    if not torch.cuda.is_available():
        return {"gpu_name": None, "gpu_count": 0, "gpu_driver": None, "cuda_version": None}
    props = torch.cuda.get_device_properties(0)
    driver = None
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except Exception:  # NVML missing or not initialisable: the figure stays unknown
        pass
    return {
        "gpu_name": props.name,
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_bytes": int(props.total_memory),
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_driver": driver,
        "cuda_version": torch.version.cuda,
    }


def git_commit(start: Path | None = None) -> str | None:
    start = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=start, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{out}-dirty" if dirty else out


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Collected once per process: it does not change while a run goes on."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        **gpu_info(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "harness_commit": git_commit(),
        "executable": sys.executable,
    }
    env["hardware_key"] = hardware_key(env)
    return env


def hardware_key(env: dict[str, Any]) -> str:
    """``1xNVIDIA-H100-80GB-HBM3`` or ``cpu-2x-Intel-Xeon-...``: safe as a folder name."""
    if env.get("gpu_count"):
        raw = f"{env['gpu_count']}x{env['gpu_name']}"
    else:
        raw = f"cpu-{env['cpu_count']}x-{env['cpu_model']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-")
