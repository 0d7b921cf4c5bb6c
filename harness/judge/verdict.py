"""The verdict's types: what the gate found about one cell, typed from the moment it is
made until it is printed or written.  A verdict becomes JSON once, in the cell's document
(``CellResult.to_dict``), and comes back through ``Verdict.from_dict``.

This module imports only the vocabulary, so that the result document (``results.py``) can
carry a typed verdict without importing the gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..measure.vocabulary import QUALITY, THROUGHPUT

# What a cell's verdict can be, and which of them mean the cell was judged.
JUDGED = ("pass", "regression", "improvement", "suspect")
NOT_JUDGED = ("new", "disturbed", "skipped", "error")
VERDICTS = JUDGED + NOT_JUDGED

# What a finding was held against.
BASES = (
    "history",  # the window of the cell's recent runs and its prediction interval
    "baseline",  # the stored baseline file of this hardware key
    "reference",  # the same cell's figures on any hardware (hardware-independent figures)
    "band",  # the quality band around a published reference or the cell's seed spread
    "none",  # nothing to hold it against: a new figure
)


@dataclass(frozen=True)
class Finding:
    metric: str
    kind: str  # "speed", "memory", "quality", "numerics" or "invariant"
    verdict: str  # "pass", "regression", "improvement", "new", "suspect" or "unchecked"
    current: float | None
    baseline: float | None = None
    change: float | None = None  # relative (speed, memory) or in points (quality)
    threshold: str | None = None
    noise: float | None = None
    note: str = ""
    crossed: bool = False  # past its threshold the bad way (whatever the noise or interval said)
    basis: str = "none"  # what it was held against: one of BASES
    grew: tuple[str, ...] = ()  # a slower training rate: the phases of the step that grew, largest first

    def line(self) -> str:
        if self.kind == "quality" and self.metric in QUALITY:  # accuracy, F1: the band's own sentence
            return self.note
        if self.baseline is None or self.change is None:
            return f"{self.metric}: {number(self.current)} ({self.note or 'no baseline'})"
        return (
            f"{self.metric}: {number(self.baseline)} -> {number(self.current)} ({self.change:+.1%}; "
            f"threshold {self.threshold}, noise {self.noise:.1%}){' ' + self.note if self.note else ''}"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "basis" not in data:  # documents written before findings carried their basis
            values["basis"] = _basis_of_old(data)
        values["grew"] = tuple(values.get("grew") or ())
        return cls(**values)


def _basis_of_old(data: dict[str, Any]) -> str:
    if data.get("kind") == "quality":
        return "band"
    if data.get("kind") == "invariant":
        return "reference"
    if "history of" in (data.get("note") or ""):
        return "history"
    return "baseline" if data.get("baseline") is not None else "none"


@dataclass
class Verdict:
    cell_id: str
    verdict: str
    findings: list[Finding] = field(default_factory=list)
    env_changes: list[str] = field(default_factory=list)
    baseline_source: str | None = None
    confirmation: list[dict[str, Any]] | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("regression", "error")

    @property
    def judged(self) -> bool:
        return self.verdict in JUDGED

    @property
    def by_history(self) -> bool:
        return any(f.basis == "history" for f in self.findings)

    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == "regression"]

    def message(self) -> str:
        lines = [f"{self.cell_id}: {self.verdict}"]
        shown = self.regressions() if self.verdict == "regression" else [
            f for f in self.findings if f.verdict != "pass" or f.kind == "quality"
        ]
        lines += [f"  {f.line()}" for f in shown]
        if self.confirmation is not None:
            lines.append(f"  confirmation runs: {_confirmation_text(self.confirmation, self.regressions())}")
        if self.baseline_source:
            lines.append(f"  baseline: {self.baseline_source}")
        if self.env_changes:
            lines.append(f"  environment changed: {'; '.join(self.env_changes)}")
        elif self.baseline_source:
            lines.append("  environment: no difference in hardware, driver or library versions")
        if self.note:
            lines.append(f"  {self.note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "findings": [asdict(f) for f in self.findings],
            "env_changes": self.env_changes,
            "baseline_source": self.baseline_source,
            "confirmation": self.confirmation,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], cell_id: str) -> Verdict:
        return cls(
            cell_id=cell_id,
            verdict=data["verdict"],
            findings=[Finding.from_dict(f) for f in data.get("findings") or []],
            env_changes=list(data.get("env_changes") or []),
            baseline_source=data.get("baseline_source"),
            confirmation=data.get("confirmation"),
            note=data.get("note") or "",
        )


def number(value: float | None) -> str:
    """A figure as the verdict lines print it: bytes in MiB, others to 4 significant digits."""
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.4g}"


def _confirmation_text(runs: list[dict[str, Any]], regressions: list[Finding]) -> str:
    metrics = [f.metric for f in regressions] or [THROUGHPUT]
    return "; ".join(f"{m} " + ", ".join(number(r.get(m)) for r in runs) for m in metrics)
