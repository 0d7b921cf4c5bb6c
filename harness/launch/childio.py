"""What the parent sees of a child: its output as it comes, and what it saw in the end.

A spawned child's stdout and stderr come through a pipe (``pump_output``); a child forked
from the zygote writes its log file directly, which the parent follows as it grows
(``follow_log``).  Either way the whole output lands in the log and its last lines in a
tail, for the error a dead child becomes (``ChildOutcome.failure``).
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import progress as progress_file

TAIL_LINES = 30  # lines of a dead child's output kept in its error


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class ChildOutcome:
    """What the parent saw of one child."""

    document: dict[str, Any] | None  # what the child wrote to its output file, if anything
    returncode: int | None  # negative: killed by that signal
    timed_out: bool
    timeout_s: float
    progress: progress_file.Progress
    output_tail: list[str]
    log: Path  # the child's whole output (stdout and stderr), in the scratch folder
    wall_s: float
    max_rss_bytes: int | None
    watch: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None  # written by the child as soon as it started

    @property
    def died(self) -> bool:
        return self.document is None

    def failure(self, what: str = "the cell's child process") -> dict[str, Any]:
        """Kind, exit code or signal, step reached and output tail; for the error document."""
        code = self.returncode
        info: dict[str, Any] = {
            "returncode": code,
            "signal": signal_name(-code) if code is not None and code < 0 else None,
            "timed_out": self.timed_out,
            "timeout_s": self.timeout_s,
            "phase": self.progress.phase,
            "last_step": self.progress.step,
            "wall_s": self.wall_s,
            "max_rss_bytes": self.max_rss_bytes,
            "output_tail": self.output_tail,
        }
        where = self.progress.text()
        if self.timed_out:
            info["kind"] = "timeout"
            reason = (f"timeout after {self.timeout_s:g} s {where}: {what} was still running, "
                      "so its process group was killed")
        elif code is not None and code < 0:
            info["kind"] = "signal"
            reason = f"{info['signal']}: {what} died of {info['signal']} {where}"
            if -code == signal.SIGKILL:
                rss = f" (its peak RSS was {self.max_rss_bytes / 2**30:.1f} GiB)" if self.max_rss_bytes else ""
                reason += f"; the harness did not send it: the kernel's OOM killer sends SIGKILL when memory runs out{rss}"
        else:
            info["kind"] = "exit"
            reason = f"exit code {code}: {what} exited {where} without writing a result"
        text = "\n".join(self.output_tail)
        if "CUDA error" in text or "CUBLAS_STATUS" in text or "cudaError" in text:
            info["kind"] += "+cuda"
            reason += "; a CUDA error is in its output"
        tail = "\n".join(self.output_tail[-12:])
        info["reason"] = f"{reason}. Its output ends:\n{tail}" if tail else f"{reason}; it printed nothing"
        return info


def pump_output(stream: Any, log: Any, tail: collections.deque, echo: bool) -> None:
    """Copy a spawned child's output from its pipe into its log and tail, until it closes."""
    for raw in iter(stream.readline, b""):
        log.write(raw)
        log.flush()
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        tail.append(line)
        if echo:
            sys.__stderr__.write(line + "\n")
    stream.close()


def follow_log(path: Path, tail: collections.deque, echo: bool, stop: threading.Event, poll_s: float) -> None:
    """Read the child's log file as it grows (a forked child writes it directly)."""
    with path.open("rb") as handle:
        pending = b""
        while True:
            chunk = handle.read(1 << 16)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", errors="replace")
                    tail.append(line)
                    if echo:
                        sys.__stderr__.write(line + "\n")
                continue
            if stop.is_set():
                if pending:
                    tail.append(pending.decode("utf-8", errors="replace"))
                return
            time.sleep(poll_s)
