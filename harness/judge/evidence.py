"""What a cell's measurement is held against, gathered: its baseline file, its history
window, the same cell on other hardware, and its previous night.

``gather`` reads them for one measured cell; ``policy.decide`` judges with what it found.
A baseline file or stored document that cannot be used is not skipped silently: its error
comes back, and the cell's verdict becomes ``error`` with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..results import CellResult, ResultsError
from ..spec import recipe_changes
from ..store.baselines import load_baseline
from .accept import accepted_from
from .policy import Evidence
from .window import DEFAULT_CONFIDENCE, DEFAULT_WINDOW, MIN_POINTS, build_window, load_pinned, previous_night


def gather(
    result: CellResult, *, baselines_dir: Path, history_of: Callable[[str], list[CellResult]], history_dir: Path,
    window_size: int = DEFAULT_WINDOW, confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[Evidence, str | None]:
    """The evidence for ``result`` and, when something stored could not be used, why.

    Speed and memory are held against the history window where it holds ``MIN_POINTS``
    good runs and no pinned baseline file wins; else against the baseline file; else, for
    the hardware-independent figures, against the same cell elsewhere."""
    if not result.ok:
        return Evidence(confidence=confidence), None
    baseline, source, pinned, error = None, None, False, None
    try:
        baseline, path = load_baseline(baselines_dir, result.env["hardware_key"], result.id, recipe=result.spec)
        source = str(path) if baseline is not None else None
        pinned = baseline is not None and load_pinned(path)
    except ResultsError as exc:
        error = f"{exc} (fix or delete it, or rewrite it with --update-baselines)"
    window, history = None, []
    try:
        history = history_of(result.id)
        start = accepted_from(history_dir, result.id, before=result.run_id)
    except ResultsError as exc:
        error = str(exc)
    else:
        window = build_window(history, result, size=window_size, accepted_from=start)
        if pinned or len(window.runs) < MIN_POINTS:
            window = None  # a pinned baseline file wins; too little history: the file, else new
    elsewhere = same_cell_elsewhere(baselines_dir, history, result) if baseline is None and window is None else None
    previous = previous_night(history, result)
    return Evidence(baseline, source, window, elsewhere, previous.verdict if previous is not None else None,
                    confidence), error


def same_cell_elsewhere(baselines_dir: Path, history: list[CellResult], current: CellResult) -> CellResult | None:
    """The same cell under the same recipe on another machine: its stored baseline for
    another hardware key, else its newest good run there.  For the figures that do not
    depend on the hardware."""
    key = current.env.get("hardware_key")
    folders = sorted(p for p in Path(baselines_dir).iterdir() if p.is_dir()) if Path(baselines_dir).is_dir() else []
    for folder in folders:
        if folder.name == key:
            continue
        try:
            found, _ = load_baseline(baselines_dir, folder.name, current.id, recipe=current.spec)
        except ResultsError:
            continue
        if found is not None:
            return found
    others = [r for r in history if r.ok and r.env.get("hardware_key") != key and not recipe_changes(r.spec, current.spec)]
    return others[-1] if others else None
