"""Stored baselines: ``results/baselines/<hardware-key>/<cell-id>.json``.

A baseline is a cell result document (same schema), folded over its repeats, so it keeps
its medians, its spread, its seeds and the environment it was measured in.  The hardware
key (GPU model and count, or CPU model and cores) keeps an H100's figures from ever being
held against an A100's; library versions and driver are recorded, not keyed, since an
upgrade is exactly what gets compared.  Baselines are written by ``--update-baselines``
only, never as a side effect.
"""

from __future__ import annotations

from pathlib import Path

from ..results import CellResult, ResultsError, read_result, write_json_atomic
from ..spec import CellSpec, recipe_changes


def baseline_path(baselines_dir: str | Path, hardware_key: str, cell_id: str) -> Path:
    return Path(baselines_dir) / hardware_key / f"{cell_id}.json"


def load_baseline(
    baselines_dir: str | Path, hardware_key: str, cell_id: str, *, recipe: CellSpec | None = None
) -> tuple[CellResult | None, Path]:
    """The stored baseline, or None when there is none.  A corrupt file raises ResultsError
    naming it; so does, given the cell's ``recipe``, a baseline measured under another one."""
    path = baseline_path(baselines_dir, hardware_key, cell_id)
    if not path.exists():
        return None, path
    baseline = read_result(path)
    if recipe is not None and (changes := recipe_changes(baseline.spec, recipe)):
        raise ResultsError(
            f"{path}: the baseline was measured under another recipe of this cell ({'; '.join(changes)}),"
            " so its figures are not comparable"
        )
    return baseline, path


def write_baseline(result: CellResult, baselines_dir: str | Path) -> Path:
    """Write ``result`` as its cell's baseline for its hardware key.  Refuses (ValueError) a
    cell that did not finish, and one that was disturbed: another load shared the machine
    while it ran, so its speed is not this machine's and every later night would be judged
    against it."""
    if not result.ok:
        raise ValueError(f"{result.id}: only a finished cell can become a baseline (status {result.status})")
    disturbed = result.metrics.get("disturbed")
    if disturbed:
        reason = " ".join(str(disturbed).split())
        raise ValueError(
            f"{result.id}: a disturbed cell cannot become a baseline ({reason}); measure it again on a quiet machine"
        )
    path = baseline_path(baselines_dir, result.env["hardware_key"], result.id)
    document = result.to_dict()
    document["verdict"] = None  # a baseline is judged by nothing
    return write_json_atomic(path, document)
