"""The environment a result was measured in: hardware, driver, library versions, commit.

``hardware_key`` names the machine class a baseline belongs to (GPU model and count, a MIG
slice by its profile; or CPU model, generation, widest vector ISA and core count, see
``cpu.py``); library versions are recorded but are not part of the key, since an upgrade is
exactly what gets compared.  What the key leaves out but can move a figure (microcode, a
GPU's power limit or clock lock, see ``gpu_identity.py``) is recorded, and a change in it is
an environment change.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import cpu, gpu_identity
from .devices import cuda_device_uuid

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
    count = torch.cuda.device_count()
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
        "gpu_count": count,
        "gpu_memory_bytes": int(props.total_memory),
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_driver": driver,
        "cuda_version": torch.version.cuda,
        "gpu": gpu_identity.identity([cuda_device_uuid(i) for i in range(count)]),
    }


def cuda_devices_in_a_child() -> dict[str, Any]:
    """Ask a short-lived child how many CUDA devices torch sees: the asking process never
    initializes CUDA (each cell's child does, from a clean state)."""
    import json

    probe = (
        "import json, torch; print(json.dumps({'count': torch.cuda.device_count() if torch.cuda.is_available() else 0,"
        " 'torch': torch.__version__, 'cuda': torch.version.cuda}))"
    )
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"count": 0, "error": f"the probe failed: {exc}"}


def git_commit(start: Path | None = None) -> str | None:
    """The commit of the checkout ``start`` lies in (``-dirty`` with changes), None when
    ``start`` is not a tracked part of one (an installed copy inside a clone's .venv is not)."""
    start = start or Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=start, capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()

    try:
        if not git("ls-files", "--", "__init__.py"):
            return None
        out = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{out}-dirty" if dirty else out


HARNESS_FILES = ("*.py", "*.toml", "*.js", "*.css", "*.sh")


def harness_identity(package: Path | None = None) -> dict[str, Any]:
    """Which harness ran: its folder, git commit (when it lies in a checkout), installed
    version and a sha256 over its files (what tells two installs apart without git)."""
    import hashlib

    package = package or Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = sorted({p for pattern in HARNESS_FILES for p in package.rglob(pattern) if "__pycache__" not in p.parts})
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"path": str(package), "commit": git_commit(package), "version": _version("trainer-bench-harness"),
            "files_sha256": digest.hexdigest(), "files": len(files)}


def harness_label(env: dict[str, Any]) -> str | None:
    """The harness that ran, in one word: its commit, else its version and files' hash."""
    if env.get("harness_commit"):
        return str(env["harness_commit"])
    ident = env.get("harness") or {}
    return f"{ident.get('version')}+sha256:{str(ident.get('files_sha256'))[:12]}" if ident.get("files_sha256") else None


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Collected once per process: it does not change while a run goes on."""
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "cpu": cpu.identity(),
        "torch_num_threads": torch.get_num_threads(),
        **gpu_info(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "harness": harness_identity(),
        "executable": sys.executable,
        "threads": thread_settings(),
        "torch_build": torch_build(),
        "cpu_clock": cpu_clock(),
        **boot(),
    }
    env["harness_commit"] = env["harness"]["commit"]
    env["packages"] = installed_packages()
    env["packages_sha256"] = packages_hash(env["packages"])
    env["hardware_key"] = hardware_key(env)
    return env


def boot() -> dict[str, str]:
    """This boot of the machine: the kernel's id for it, and when it booted (to the minute)."""
    out = {}
    try:
        out["boot_id"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        out["booted_at"] = datetime.fromtimestamp(btime, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    except (OSError, StopIteration, ValueError):  # not Linux, or no /proc: no boot to compare
        pass
    return out


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "TOKENIZERS_PARALLELISM", "KMP_AFFINITY", "OMP_PROC_BIND")


def thread_settings() -> dict[str, Any]:
    """The variables that set how many threads the math libraries use (unset: None), and
    what torch ended up with."""
    import torch

    out: dict[str, Any] = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    out["torch_num_threads"] = torch.get_num_threads()
    out["torch_num_interop_threads"] = torch.get_num_interop_threads()
    return out


def torch_build() -> dict[str, Any]:
    """How torch was built: its BLAS, oneDNN and OpenMP, CUDA, cuDNN and NCCL versions."""
    import torch

    build: dict[str, Any] = {
        "mkl": bool(torch.backends.mkl.is_available()),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "openmp": bool(getattr(torch.backends, "openmp", None) and torch.backends.openmp.is_available()),
        "cuda": torch.version.cuda,
        "cudnn": None,
        "nccl": None,
    }
    try:
        config = torch.__config__.show()
    except Exception:  # a build without the config string
        config = ""
    onednn = re.search(r"MKL-DNN v([\d.]+)", config)
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    capability = re.search(r"CPU capability usage: (\w+)", config)
    commit = re.search(r"COMMIT_SHA=(\w+)", config)
    build.update({"onednn": onednn.group(1) if onednn else None, "blas": blas.group(1) if blas else None,
                  "cpu_capability": capability.group(1) if capability else None,
                  "commit": commit.group(1)[:12] if commit else None})
    if torch.cuda.is_available():
        try:
            build["cudnn"] = torch.backends.cudnn.version()
        except Exception:
            pass
        try:
            version = torch.cuda.nccl.version()
            build["nccl"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except Exception:
            pass
    return build


def cpu_clock() -> dict[str, Any]:
    """The CPU frequency governor and the current, minimum and maximum clocks of CPU 0, where
    the kernel shows them (virtual machines often do not: None)."""
    base = Path("/sys/devices/system/cpu/cpu0/cpufreq")

    def read(name: str) -> str | None:
        try:
            return (base / name).read_text().strip()
        except OSError:
            return None

    def mhz(name: str) -> float | None:
        value = read(name)
        return round(int(value) / 1000, 1) if value and value.isdigit() else None

    current = mhz("scaling_cur_freq")
    if current is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                current = next((float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz")), None)
        except (OSError, ValueError):
            current = None
    return {"governor": read("scaling_governor"), "mhz": current, "min_mhz": mhz("scaling_min_freq"),
            "max_mhz": mhz("scaling_max_freq")}


def installed_packages() -> dict[str, str]:
    """Every installed distribution and its version, by normalized name; where a name is
    installed twice (an overlay environment over another), the one imported wins: the
    first on ``sys.path``."""
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        out.setdefault(canonical_name(name), dist.version)
    return dict(sorted(out.items()))


def canonical_name(name: str) -> str:
    """A distribution's name as PEP 503 compares them: ``Foo_Bar.baz`` is ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def packages_hash(packages: dict[str, str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(f"{k}=={v}" for k, v in sorted(packages.items())).encode()).hexdigest()[:16]


def hardware_key(env: dict[str, Any]) -> str:
    """``1xNVIDIA-H100-80GB-HBM3``, ``1xNVIDIA-H200-MIG-1g.18gb`` or ``cpu-2x-AMD-EPYC-zen3-avx2``:
    safe as a folder name."""
    if env.get("gpu_count"):
        raw = f"{env['gpu_count']}x{env['gpu_name']}"
        slice_ = gpu_identity.key_suffix(env.get("gpu") or {})
        if slice_ and "MIG" not in str(env["gpu_name"]):
            raw += f"-{slice_}"
    else:
        raw = f"cpu-{env['cpu_count']}x-{env['cpu_model']}"
        if env.get("cpu"):
            raw += f"-{cpu.key_suffix(env['cpu'])}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-")
