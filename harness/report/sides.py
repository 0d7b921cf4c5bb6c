"""What a side of ``compare`` is read from: a run folder (``results/runs/<run-id>``), a
results folder (the newest result of every cell across its runs), a folder of cell
documents (a baselines folder, ``results/baselines/<hardware-key>``), a pytest-benchmark
``--benchmark-json`` file the harness wrote, or one run of a store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..results import CellResult, ResultsError, read_result, read_run
from ..spec import CellSpec
from ..store import Store
from ..store.runs import read_manifest, run_folders


@dataclass
class Side:
    label: str
    results: dict[str, CellResult]
    env: dict[str, Any]
    partial: bool = False


def load_side(path: str | Path) -> Side:
    """A run folder, a results folder, a folder of cell documents or a pytest-benchmark JSON
    file, as cells by id."""
    path = Path(path)
    if path.is_file():
        return _from_benchmark_json(path)
    run_dirs = run_folders(path)
    if run_dirs == [path]:
        manifest = read_manifest(path / "run.json")
        results = {r.id: r for r in read_run(path)}
        return Side(path.name, results, manifest.get("env") or _first_env(results), manifest["state"] != "complete")
    if not run_dirs and path.is_dir() and any(path.glob("*.json")):
        results = {r.id: r for r in read_run(path)}  # a folder of cell documents: baselines/<hardware-key>/
        return Side(path.name, results, _first_env(results))
    if not run_dirs:
        raise ResultsError(
            f"{path}: not a run folder (no run.json), a results folder (no runs/), a folder of cell results "
            f"(baselines/<hardware-key>/) or a benchmark JSON file"
        )
    results: dict[str, CellResult] = {}
    for run_dir in run_dirs:  # run ids start with a UTC time stamp: later runs win
        for result in read_run(run_dir):
            results[result.id] = result
    return Side(path.name, results, _first_env(results))


def load_run_from_store(store: Store, run_id: str) -> Side:
    """One run of a store (a database or a results folder) by its id; ``latest`` is the newest."""
    manifests = store.manifests()
    if run_id == "latest" and manifests:
        run_id = manifests[-1]["run_id"]
    manifest = next((m for m in manifests if m["run_id"] == run_id), None)
    results = {r.id: r for r in store.results(run_ids=[run_id])}
    if manifest is None and not results:
        known = [m["run_id"] for m in manifests[-5:]]
        raise ResultsError(f"{store.location}: no run {run_id!r}; the newest are {known}")
    manifest = manifest or {"run_id": run_id, "state": "unknown"}  # cells whose manifest the store missed
    return Side(run_id, results, manifest.get("env") or _first_env(results), manifest.get("state") != "complete")


def _first_env(results: dict[str, CellResult]) -> dict[str, Any]:
    return next(iter(results.values())).env if results else {}


def _from_benchmark_json(path: Path) -> Side:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        benchmarks = data["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ResultsError(f"{path}: not a pytest-benchmark JSON file ({exc})") from None
    results: dict[str, CellResult] = {}
    for bench in benchmarks:
        info = bench.get("extra_info") or {}
        if "cell_id" not in info:
            continue  # a benchmark that is not a harness cell (the overhead check, say)
        stored = Path(info.get("result_file", ""))
        if stored.is_file():
            result = read_result(stored)
        else:
            spec = CellSpec.from_dict(info["spec"])
            metrics = {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            result = CellResult(spec=spec, status=info.get("status", "ok"), run_id=path.stem,
                                env=info.get("env") or {"hardware_key": info.get("hardware_key")}, metrics=metrics,
                                samples={"noise": info.get("noise") or {}})
        results[result.id] = result
    if not results:
        raise ResultsError(f"{path}: holds no harness cell (no extra_info.cell_id)")
    return Side(path.stem, results, _first_env(results))
