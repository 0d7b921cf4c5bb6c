"""A night you can watch: each cell as it starts and ends, the night's elapsed time and what is left.

``NightClock`` makes the lines: ``[3/54] CELL: started`` and ``[3/54] CELL: pass, 612.3
samples/s, 2.8 GiB (reserved), acc 0.841 f1 0.889, in 1:05 | night 13:39, about 39:00 left``.
What is left is the sum, over the cells not yet run, of each cell's recorded duration in its
baseline (its executions' child wall time, times this run's executions per cell), and for
a cell without a baseline, the mean duration of the cells run so far tonight; before the
first cell ends there is no estimate, and the line says so.

``Live`` writes them: plain lines in a CI log (each line once, in order), and in a terminal
the passing lines of a cell (``run 1/3``) are rewritten in place and the end line stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..measure.vocabulary import THROUGHPUT
from .tables import human_bytes, peak_memory, quality_cells


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Live:
    """Lines to a terminal or a log: ``line`` stays; ``passing`` is replaced by the next
    write in a terminal, and is a plain line in a log."""

    CLEAR = "\r\x1b[K"

    def __init__(self, write: Callable[[str, bool], None], *, tty: bool):
        self.write = write  # (text, newline)
        self.tty = tty
        self.showing = False  # a passing line is on the screen

    def line(self, text: str) -> None:
        self.write((self.CLEAR if self.showing else "") + text, True)
        self.showing = False

    def passing(self, text: str) -> None:
        if not self.tty:
            self.write(text, True)
            return
        self.write(self.CLEAR + text, False)
        self.showing = True


class NightClock:
    """The night's count, elapsed time and estimate."""

    def __init__(self, planned: list[str], recorded_s: Callable[[str], float | None],
                 now: Callable[[], float] = time.monotonic):
        self.planned = planned
        self.recorded_s = recorded_s  # a cell's duration as its baseline recorded it, or None
        self.now = now
        self.started = now()
        self.done: dict[str, float] = {}  # cell id -> seconds it took tonight
        self.current: tuple[str, float] | None = None

    def index(self, cell_id: str) -> str:
        total = len(self.planned) or "?"
        position = self.planned.index(cell_id) + 1 if cell_id in self.planned else len(self.done) + 1
        return f"[{position}/{total}]"

    def left_s(self) -> float | None:
        if not self.done:
            return None
        mean = sum(self.done.values()) / len(self.done)
        rest = [c for c in self.planned if c not in self.done and (self.current is None or c != self.current[0])]
        estimate = sum((self.recorded_s(c) or mean) for c in rest)
        if self.current is not None:  # the cell running now: what is left of it
            expected = self.recorded_s(self.current[0]) or mean
            estimate += max(0.0, expected - (self.now() - self.current[1]))
        return estimate

    def tail(self) -> str:
        left = self.left_s()
        return f"night {clock(self.now() - self.started)}, " + (
            f"about {clock(left)} left" if left is not None else "an estimate once a cell has ended")

    def begin(self, cell_id: str) -> str:
        self.current = (cell_id, self.now())
        recorded = self.recorded_s(cell_id)
        expected = f" (its baseline took {clock(recorded)})" if recorded else ""
        return f"{self.index(cell_id)} {cell_id}: started{expected} | {self.tail()}"

    def end(self, result: Any) -> str:
        cell_id = result.id
        started = self.current[1] if self.current and self.current[0] == cell_id else self.now()
        took = self.now() - started
        self.done[cell_id] = took
        self.current = None
        return f"{self.index(cell_id)} {cell_id}: {figures(result)}, in {clock(took)} | {self.tail()}"


def figures(result: Any) -> str:
    """The verdict and headline figures of a finished cell, in one phrase."""
    if result.status != "ok":
        reason = (result.reason or "").splitlines()[0][:100] if result.reason else ""
        return f"{result.status}" + (f" ({reason})" if reason else "")
    verdict = result.verdict.verdict if result.verdict is not None else "measured"
    parts = [verdict]
    speed = result.metrics.get(THROUGHPUT)
    if speed is not None:
        parts.append(f"{speed:.1f} samples/s")
    kind, memory = peak_memory(result)
    if memory is not None:
        parts.append(f"{human_bytes(memory)} ({kind})")
    accuracy, f1 = quality_cells(result)
    if accuracy not in ("-", "chance"):  # random weights answer at chance: no quality to show
        parts.append(f"acc {accuracy} f1 {f1}")
    return ", ".join(parts)


def recorded_duration(baseline: Any, executions: int) -> float | None:
    """A cell's duration from its baseline: the child's wall seconds per execution, times
    the executions tonight (the baseline's own repeats are not tonight's)."""
    if baseline is None:
        return None
    wall = ((baseline.samples or {}).get("launch") or {}).get("child_wall_s")
    return float(wall) * executions if isinstance(wall, (int, float)) and wall > 0 else None
