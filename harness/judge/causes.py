"""One alert per cause: a night's regressions and suspects grouped by what changed.

Forty red cells after one upgrade are one problem.  The cells that went bad the same way
(slower, more memory, a departed loss curve, quality out of band) and share the same change
in their software (a package, the harness, the matrix, the data's or weights' revision) form
one group, said in one line::

    transformers 4.46.3 -> 4.47.0: 14 cells slower, 6-9% (median 7%), mostly fwd+bwd: cell-a, cell-b, ...

Cells whose software did not change are grouped as such, with what changed in the machine
(its kernel, driver, clocks or power limit, a reboot) or that nothing did.  pytest still fails
each regressed cell on its own; the groups are what a person reads first (the terminal
summary, ``merge``, ``changes`` and the report).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..measure.vocabulary import PHASE_LABELS, THROUGHPUT, label_of
from ..results import CellResult
from .reproduce import reproduce_lines

# env_changes lines about the machine rather than the software that ran on it
MACHINE_PREFIXES = ("gpu", "cpu", "platform", "booted", "threads", "torch_num_threads")
WORDS = {"speed": "slower", "memory": "using more memory", "numerics": "with a departed loss curve",
         "quality": "out of their quality band", "invariant": "training on other data"}
SHOWN = 6  # cells named in a group's line
CHANGES_SHOWN = 4  # software changes named in a group's line (the rest counted)


def split_changes(lines: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(software, machine) changes of an ``env_changes`` list."""
    software, machine = [], []
    for line in lines:
        (machine if line.split(" ", 1)[0].split(".", 1)[0].startswith(MACHINE_PREFIXES) else software).append(line)
    return tuple(software), tuple(machine)


@dataclass
class Cause:
    software: tuple[str, ...]  # the shared software change; () for none
    kind: str  # what went bad: a key of WORDS
    cells: list[str] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)  # the headline figure's relative change, per cell
    phases: list[str] = field(default_factory=list)  # the phase that grew most, per slower cell
    machine: set[str] = field(default_factory=set)  # what changed in the machine, over the group
    suspects: int = 0

    def line(self) -> str:
        what = what_changed(self.software, self.machine)
        text = f"{what}: {len(self.cells)} cell{'s' if len(self.cells) != 1 else ''} {WORDS.get(self.kind, self.kind)}"
        if self.changes:
            low, high = sorted(abs(c) for c in self.changes)[0], max(abs(c) for c in self.changes)
            spread = f"{low:.0%}" if f"{low:.0%}" == f"{high:.0%}" else f"{low:.0%}-{high:.0%}"
            text += f", {spread}" + (f" (median {statistics.median(abs(c) for c in self.changes):.0%})"
                                     if len(self.changes) > 2 else "")
        if self.phases:
            top = max(set(self.phases), key=self.phases.count)
            share = self.phases.count(top) / len(self.phases)
            text += f", {'in ' if share == 1 else 'mostly in '}{PHASE_LABELS.get(top, top)}"
        if self.suspects:
            text += f" ({self.suspects} suspect, not confirmed)"
        return f"{text}: {cells_text(self.cells)}"


def what_changed(software: tuple[str, ...], machine: Iterable[str]) -> str:
    """A group's cause: its software changes, else what changed in the machine, or nothing."""
    if software:
        return changes_text(software)
    machine = sorted(machine)
    return "no change in the software (" + (
        "the machine: " + "; ".join(machine) if machine else "nor in the machine as recorded") + ")"


def cells_text(cells: list[str]) -> str:
    """The first ``SHOWN`` cells, and how many more."""
    return ", ".join(cells[:SHOWN]) + (f" and {len(cells) - SHOWN} more" if len(cells) > SHOWN else "")


def changes_text(software: tuple[str, ...]) -> str:
    """The first ``CHANGES_SHOWN`` changes, the package versions first (the harness and the matrix
    last), and how many more there are."""
    ordered = sorted(software, key=lambda line: line.startswith(("harness ", "matrix ")))
    shown = "; ".join(ordered[:CHANGES_SHOWN])
    return shown + (f" and {len(ordered) - CHANGES_SHOWN} more changes" if len(ordered) > CHANGES_SHOWN else "")


def group_by_cause(results: Iterable[CellResult]) -> list[Cause]:
    """The regressed and suspect cells of a night, one group per (software change, what went
    bad); largest group first.  A cell bad in two ways is in two groups."""
    groups: dict[tuple[tuple[str, ...], str], Cause] = {}
    for result in results:
        verdict = result.verdict
        if verdict is None or verdict.verdict not in ("regression", "suspect"):
            continue
        software, machine = split_changes(verdict.env_changes)
        bad = [f for f in verdict.findings if f.verdict in ("regression", "suspect")]
        for kind in dict.fromkeys(f.kind for f in bad):
            cause = groups.setdefault((software, kind), Cause(software, kind))
            cause.cells.append(result.id)
            cause.machine.update(machine)
            cause.suspects += verdict.verdict == "suspect"
            headline = next((f for f in bad if f.kind == kind and f.metric == THROUGHPUT), None) or next(
                f for f in bad if f.kind == kind)
            if headline.change is not None and kind in ("speed", "memory"):
                cause.changes.append(headline.change)
            if kind == "speed" and headline.grew:
                cause.phases.append(headline.grew[0])
    return sorted(groups.values(), key=lambda c: (-len(c.cells), c.software, c.kind))


def cause_lines(results: Iterable[CellResult], matrix: str | None = None) -> list[str]:
    """``by cause:`` and a line per group, each followed by the commands that measure its cells
    again here (``judge/reproduce.py``: with ``--matrix matrix`` where known), or nothing when no
    cell regressed or is suspect."""
    results = list(results)
    gpu = any(r.env.get("gpu_name") for r in results)
    lines = []
    for cause in group_by_cause(results):
        lines.append(f"  {cause.line()}")
        again = reproduce_lines(" or ".join(cause.cells), matrix, gpu=gpu, env_changes=list(cause.software))
        lines += [f"    {line}" for line in again]
    return ["by cause:", *lines] if lines else []


def change_cause_lines(changes: Iterable[Any]) -> list[str]:
    """The change points of ``changes`` (``judge/changes.Change``) grouped the same way: one line per
    shared software change and figure, ``transformers a -> b: samples/s of 3 cells, -9% to -6%: ...``."""
    groups: dict[tuple[tuple[str, ...], str], list[Any]] = {}
    for change in changes:
        software, _ = split_changes(change.env_changes)
        groups.setdefault((software, change.metric), []).append(change)
    lines = []
    for (software, metric), found in sorted(groups.items(), key=lambda item: -len(item[1])):
        what = what_changed(software, {line for c in found for line in split_changes(c.env_changes)[1]})
        steps = sorted(c.change for c in found)
        cells = sorted({c.cell for c in found})
        spread = f"{steps[0]:+.0%}" if len(steps) == 1 else f"{steps[0]:+.0%} to {steps[-1]:+.0%}"
        lines.append(f"  {what}: {label_of(metric)} of {len(cells)} cell{'s' if len(cells) != 1 else ''} moved "
                     f"{spread}: {cells_text(cells)}")
    return ["by cause:", *lines] if lines else []
