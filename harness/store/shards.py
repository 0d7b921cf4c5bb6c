"""One night's matrix over many machines: ``--shard I/N`` and ``python -m harness merge``.

The split is a pure function of the selected cells (in collection order) and their
expected durations, so every runner of a night computes the same parts without talking to
the others.  Durations come from the committed baselines (``results/baselines``): one
execution's wall time per cell, the median over the hardware keys of the same kind (GPU
or CPU).  They are the same file on every runner of a commit, where live history is not:
shards that start minutes apart would see each other's first cells and split differently.
Cells with no recorded duration count as the median of those with one; with none at all
the split is round-robin.  No shard gets more than ``ceil(cells / N)`` cells (at most one
over an even share); within that, the longest cells go first to the least loaded shard.

Each shard is an ordinary run whose manifest names its night, its shard and the whole
selection; ``gather`` takes a night's runs (from shard artifacts or a store) and checks that
every selected cell finished in exactly one shard; ``python -m harness merge``
(``harness/cli/merge.py``) prints them as one verdict table.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..results import CellResult, ResultsError, read_result
from ..spec import recipe_changes
from .base import Store
from .runs import read_manifest

MAX_SHARDS = 1024  # more machines than any night has; a shard beyond the cells is empty


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: shard 2 of 3, counted from 1."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 1/3 (shard I of N, counted from 1)") from None
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: I must be between 1 and N, and N at least 1")
    if count > MAX_SHARDS:
        raise ValueError(f"--shard {text!r}: N is at most {MAX_SHARDS} (a shard beyond the selected cells is empty)")
    return index, count


def split(cells: Sequence[str], count: int, durations: Mapping[str, float] | None = None) -> list[list[str]]:
    """``cells`` in ``count`` parts, each in the selection's order (see the module's docstring)."""
    if count < 1:
        raise ValueError(f"cannot split into {count} shards")
    if len(set(cells)) != len(cells):
        raise ValueError("cells to shard must be distinct")
    known = {c: float(durations[c]) for c in cells if durations and (durations.get(c) or 0) > 0}
    if not known:
        return [list(cells[i::count]) for i in range(count)]
    fill = statistics.median(known.values())
    cap = math.ceil(len(cells) / count)
    parts: list[list[str]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for cell in sorted(cells, key=lambda c: (-known.get(c, fill), c)):
        target = min((i for i in range(count) if len(parts[i]) < cap), key=lambda i: (loads[i], len(parts[i]), i))
        parts[target].append(cell)
        loads[target] += known.get(cell, fill)
    position = {c: k for k, c in enumerate(cells)}
    return [sorted(part, key=position.__getitem__) for part in parts]


def execution_seconds(result: CellResult) -> float | None:
    """Wall time of one measured execution of the cell (child process start to end)."""
    repeats = result.samples.get("repeats") or []
    walls = [r.get("launch", {}).get("child_wall_s") for r in repeats] or [
        (result.samples.get("launch") or {}).get("child_wall_s")]
    walls = [float(w) for w in walls if isinstance(w, (int, float)) and w > 0]
    if walls:
        return statistics.median(walls)
    try:
        start = datetime.fromisoformat(result.started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(result.finished_at.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    seconds = (end - start).total_seconds() / max(1, int(result.metrics.get("repeats") or 1))
    return seconds if seconds > 0 else None


def expected_durations(baselines_dir: str | Path, *, gpu: bool) -> dict[str, float]:
    """Cell id -> seconds per execution, from the committed baselines of GPU (or CPU) keys."""
    folder = Path(baselines_dir)
    seen: dict[str, list[float]] = {}
    for key_dir in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        if key_dir.name.startswith("cpu-") == gpu:
            continue
        for path in sorted(key_dir.glob("*.json")):
            try:
                seconds = execution_seconds(read_result(path))
            except ResultsError:
                continue
            if seconds:
                seen.setdefault(path.stem, []).append(seconds)
    return {cell: statistics.median(values) for cell, values in seen.items()}


# ---------------------------------------------------------------- merging a night


def shard_nodes(nodes: Sequence[tuple[str, str | None]], shard: tuple[int, int], baselines_dir: str | Path, *,
                gpu: bool) -> set[str]:
    """The tests of shard I of N: ``nodes`` are (test id, its cell's id or None) in
    collection order, weighed by the cells' durations in the committed baselines."""
    index, count = shard
    by_cell = expected_durations(baselines_dir, gpu=gpu)
    durations = {node: by_cell.get(cell or "", 0.0) for node, cell in nodes}
    return set(split([node for node, _ in nodes], count, durations)[index - 1])


@dataclass
class Night:
    """A night's shard runs, every cell they finished, and what is wrong with the set."""

    night: str | None
    manifests: list[dict[str, Any]]
    results: list[CellResult]
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        shards = sorted({(m.get("shard") or {}).get("index", 1) for m in self.manifests})
        count = max(((m.get("shard") or {}).get("count", 1) for m in self.manifests), default=0)
        return (f"night {self.night or '(given runs)'}: {len(self.manifests)} runs, shards {shards} of {count}, "
                f"{len(self.results)} cells")


def gather(store: Store, *, night: str | None = None, run_ids: Sequence[str] | None = None) -> Night:
    """The runs of ``night`` (or the given runs) with their cells, checked for coverage."""
    if night is None and not run_ids:
        raise ResultsError("merge needs --night ID or the shard runs themselves")
    manifests = store.manifests(run_ids, night=night)
    if not manifests:
        where = f"night {night!r}" if night else f"runs {list(run_ids or [])}"
        raise ResultsError(f"{store.location}: no run of {where}")
    results = store.results(run_ids=[m["run_id"] for m in manifests])
    found = Night(night, manifests, results)
    found.problems += mixed(manifests, results)
    counts = {(m.get("shard") or {}).get("count") for m in manifests}
    if len(counts) > 1:
        found.problems.append(f"the runs were split into different numbers of shards: {sorted(map(str, counts))}")
    count = max((c or 1 for c in counts), default=1)
    present = {(m.get("shard") or {}).get("index") for m in manifests if m.get("shard")}
    if any(m.get("shard") for m in manifests):
        missing = [i for i in range(1, count + 1) if i not in present]
        if missing:
            found.problems.append(f"shards {missing} of {count} have no run")
    selection: list[str] = []
    for m in manifests:
        for cell in (m.get("shard") or {}).get("selection") or m.get("planned") or []:
            if cell not in selection:
                selection.append(cell)
    where: dict[str, list[str]] = {}
    for r in results:
        where.setdefault(r.id, []).append(r.run_id)
    twice = {cell: runs for cell, runs in where.items() if len(runs) > 1}
    if twice:
        found.problems.append("cells measured in more than one shard: "
                              + "; ".join(f"{c} ({', '.join(runs)})" for c, runs in sorted(twice.items())))
    not_run = [c for c in selection if c not in where]
    if not_run:
        found.problems.append(f"{len(not_run)} selected cells have no result: {', '.join(not_run[:10])}")
    partial = [m["run_id"] for m in manifests if m.get("state") != "complete"]
    if partial:
        found.problems.append(f"runs not complete (interrupted or still running): {', '.join(partial)}")
    return found


def mixed(manifests: Sequence[dict[str, Any]], results: Sequence[CellResult]) -> list[str]:
    """What makes the runs not one night: different matrices (by name, or by the file's
    hash), or one cell under different recipes.  Named, both sides."""
    problems = []

    def runs_by(values: dict[str, list[str]], what: str) -> None:
        if len(values) > 1:
            problems.append(f"MIXED NIGHT: the runs used different {what}: "
                            + "; ".join(f"{v} ({', '.join(sorted(set(runs)))})" for v, runs in sorted(values.items())))

    names: dict[str, list[str]] = {}
    hashes: dict[str, list[str]] = {}
    for m in manifests:
        names.setdefault(str(m.get("matrix")), []).append(m["run_id"])
        if m.get("matrix_sha256"):
            hashes.setdefault(str(m["matrix_sha256"]), []).append(m["run_id"])
    for r in results:
        if r.env.get("matrix_sha256"):
            hashes.setdefault(str(r.env["matrix_sha256"]), []).append(r.run_id)
    runs_by(names, "matrices")
    runs_by(hashes, "matrix files (sha256)")
    first: dict[str, CellResult] = {}
    for r in results:
        other = first.setdefault(r.id, r)
        if other is not r and (changes := recipe_changes(other.spec, r.spec)):
            problems.append(f"MIXED NIGHT: {r.id} ran under different recipes in {other.run_id} and {r.run_id}: "
                            + "; ".join(changes))
    return problems


def collect(sources: Sequence[str | Path], into: str | Path) -> list[str]:
    """Copy shard artifacts (results folders with ``runs/``, or run folders) into
    ``into/runs``; a run already there is left as it is.  Returns the run ids."""
    runs_dir = Path(into) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    found: list[str] = []
    for source in map(Path, sources):
        if (source / "run.json").is_file():
            run_dirs = [source]
        else:
            base = source / "runs" if (source / "runs").is_dir() else source
            run_dirs = sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []
        if not run_dirs:
            raise ResultsError(f"{source}: no run folder (runs/<run-id>/run.json) in it")
        for run_dir in run_dirs:
            read_manifest(run_dir / "run.json")  # a manifest, or refuse naming the file
            target = runs_dir / run_dir.name
            if target.resolve() != run_dir.resolve() and not target.exists():
                shutil.copytree(run_dir, target)
            found.append(run_dir.name)
    return found


def failing(result: CellResult) -> bool:
    """A cell that fails its test: it did not run (other than a skip), or its verdict failed."""
    if result.status == "skipped":
        return False
    return result.status != "ok" or result.verdict_word in ("regression", "error")
