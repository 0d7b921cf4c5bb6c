"""What a cell's test does with its verdict: pass, skip or fail, and the message it says.

``outcome`` maps a measured and judged cell onto pytest's three words; the session
(``session.py``) hands the ``Outcome`` to the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .judge.verdict import Verdict
from .results import CellResult


@dataclass(frozen=True)
class Outcome:
    """What the test of a cell should do: ``passed``, ``skipped`` or ``failed``, and why."""

    kind: str
    message: str = ""


def confirmed_slower(verdict: Verdict) -> bool:
    """A speed regression that its confirmation runs repeated."""
    return verdict.verdict == "regression" and verdict.confirmation is not None and any(
        f.kind == "speed" and f.verdict == "regression" for f in verdict.findings)


def outcome(result: CellResult, verdict: Verdict, baseline_error: str | None, *, updating: bool,
            baselines_dir: Path, require_baselines: bool = False, reproduce: list[str] = ()) -> Outcome:
    """A cell's test outcome from its status and verdict.  With ``--update-baselines`` the
    figures were just written as the baseline, so nothing is held against them.  A regression
    or suspect message ends with ``reproduce``: the commands that measure it again."""
    again = "".join(f"\n  {line}" for line in reproduce)
    if result.status == "skipped":
        return Outcome("skipped", result.reason or "skipped")
    if result.status != "ok":
        return Outcome("failed", f"{result.id}: {result.status}: {result.reason}")
    if updating:
        return Outcome("passed")
    if baseline_error:
        return Outcome("failed", f"{result.id}: baseline unusable: {baseline_error}")
    if verdict.failed:
        return Outcome("failed", verdict.message() + (again if verdict.verdict == "regression" else ""))
    if verdict.verdict == "suspect":
        return Outcome("passed", verdict.message() + again)
    if verdict.verdict == "disturbed":
        reruns = result.metrics.get("disturbed_reruns")
        tried = ("" if reruns is None else f" after {reruns} re-run(s) on a quietened machine" if reruns
                 else " (the machine did not quieten for a re-run)")
        if require_baselines:  # judgment was asked for, and the speed gate could not give it
            return Outcome("failed", f"{result.id}: disturbed{tried} ({result.metrics.get('disturbed')}): its speed "
                                     "was not judged, and --require-baselines asks that every cell be judged")
        return Outcome("skipped", f"{result.id}: {verdict.note}{tried}; figures recorded")
    if verdict.verdict == "new":
        return Outcome(
            "failed" if require_baselines else "skipped",
            f"new: no baseline for {result.id} on {result.env['hardware_key']} (in {baselines_dir}); "
            "figures recorded, nothing judged. Write one deliberately with --update-baselines.",
        )
    return Outcome("passed")
