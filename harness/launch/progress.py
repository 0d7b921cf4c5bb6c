"""A child's progress, seen by its parent without any I/O in the timed loop.

The child maps a small file into memory and writes two integers into it: the phase it is
in and the last optimizer step it finished.  A step end is one memory write (no system
call, no device synchronization); the parent reads the file whenever it wants to know, and
after the child is gone, what it last wrote.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

PHASES = ("starting", "loading", "training", "evaluating", "writing", "done")
_FORMAT = "<qq"  # phase index, last finished optimizer step
_SIZE = struct.calcsize(_FORMAT)


@dataclass(frozen=True)
class Progress:
    phase: str
    step: int  # last finished optimizer step (0: none yet)

    def text(self) -> str:
        if self.phase == "training":
            return f"in training step {self.step + 1} (last finished step: {self.step})"
        if self.phase in ("evaluating", "writing", "done"):
            return f"while {self.phase} (after {self.step} training steps)"
        return f"while {self.phase} (before the first training step)"


def create(path: Path) -> Path:
    """The parent makes the file before it starts the child."""
    path.write_bytes(struct.pack(_FORMAT, 0, 0))
    return path


def read(path: Path) -> Progress:
    try:
        data = path.read_bytes()[:_SIZE]
        phase, step = struct.unpack(_FORMAT, data)
    except (OSError, struct.error):
        return Progress("starting", 0)
    return Progress(PHASES[phase] if 0 <= phase < len(PHASES) else "starting", int(step))


class Board:
    """The child's side: ``phase("training")``, ``step(n)``."""

    def __init__(self, path: str | os.PathLike[str] | None):
        self._map = None
        if path:
            with open(path, "r+b") as handle:
                self._map = mmap.mmap(handle.fileno(), _SIZE)

    def phase(self, name: str) -> None:
        if self._map is not None:
            struct.pack_into("<q", self._map, 0, PHASES.index(name))

    def step(self, number: int) -> None:
        if self._map is not None:
            struct.pack_into("<q", self._map, 8, number)


NO_BOARD = Board(None)
