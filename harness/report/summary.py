"""The end of a run in the terminal: what pytest prints after the last cell.

The largest batches found (``--find-max-batch-size``), then the verdict table, the
judged line, where the results went, the store, where the history came from and the
baselines written or refused.  Each line comes with its markup (``red``, ``yellow``,
``bold``) for pytest's terminal writer.
"""

from __future__ import annotations

from typing import Any

from ..judge.causes import cause_lines
from ..judge.reproduce import matrix_argument
from ..judge.verdict import JUDGED
from ..results import CellResult
from .tables import summary_table

Line = tuple[str, dict[str, bool]]


def summary_sections(run: Any, searches: list[Any]) -> list[tuple[str, list[Line]]]:
    """``(title, lines)`` for each section to print; ``run`` is the ``session.BenchmarkRun``
    (None when nothing ran), ``searches`` the largest-batch answers."""
    sections: list[tuple[str, list[Line]]] = []
    if searches:
        sections.append(("trainer-bench: largest batch that fits", [(search.line(), {}) for search in searches]))
    if run is None or not run.results:
        return sections
    lines: list[Line] = [(line, {}) for line in summary_table(run.results).splitlines()]
    lines.append((run.judged_line(), {}))
    matrix = matrix_argument(run.matrix.source, run.matrix.name)
    lines += [(line, {"red": True} if line.startswith("  ") else {"bold": True})
              for line in cause_lines(run.results, matrix)]
    if run.writer is not None:
        lines.append((f"results ({run.writer.manifest['state']}): {run.writer.dir}", {}))
    if run.options.store:
        behind = run.mirror.behind_line(run.writer.dir if run.writer else None)
        if behind:
            lines.append((behind, {"red": True, "bold": True}))
        else:
            lines.append((f"store: {run.mirror.location} (every cell written)", {}))
    if run.mirror.history_note:
        lines.append((run.mirror.history_note, {"yellow": True}))
    if run.updated:
        lines.append((f"baselines written ({len(run.updated)}): {run.updated[0].parent}", {}))
    if run.refused:
        lines.append((f"baselines NOT written ({len(run.refused)}):", {"yellow": True, "bold": True}))
        lines.extend((f"  {line}", {"yellow": True}) for line in run.refused)
    sections.append(("trainer-bench", lines))
    return sections


# Why a cell was not judged, by its verdict.
NOT_JUDGED = {
    "new": "no baseline for this hardware key",
    "disturbed": "disturbed by another load",
    "skipped": "cannot run here",
    "error": "failed to run",
}


def judged_summary(results: list[CellResult]) -> str:
    """``judged 5 of 7 cells (1 regressed); not judged: 1 no baseline for this hardware key, 1 cannot run here``."""
    judged = regressed = suspect = 0
    missing: dict[str, int] = {}
    for r in results:
        verdict = r.verdict_word or "error"
        if verdict in JUDGED:
            judged += 1
            regressed += verdict == "regression"
            suspect += verdict == "suspect"
            continue
        why = "baseline unusable" if verdict == "error" and r.ok else NOT_JUDGED.get(verdict, verdict)
        missing[why] = missing.get(why, 0) + 1
    line = f"judged {judged} of {len(results)} cells"
    if judged:
        line += f" ({regressed} regressed{f', {suspect} suspect' if suspect else ''})"
    if missing:
        line += "; not judged: " + ", ".join(f"{n} {why}" for why, n in missing.items())
    return line
