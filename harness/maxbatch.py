"""The largest batch that fits, per checkpoint, padding and precision.

Doubling from a start size until a run goes out of memory, then bisection between the
last size that fit and the first that did not.  Each probe is a short random-weight run
(weights do not change memory).  With ``max_length`` padding every batch has the same
shape, so a probe is exact; with dynamic padding the answer holds for the batches the
probe drew, and a longer probe is safer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .results import CellResult
from .spec import CellSpec


@dataclass
class Search:
    group: str
    max_batch_size: int | None = None  # None: even the start size did not fit
    first_oom: int | None = None  # None: the limit was reached without running out
    tried: dict[int, str] = field(default_factory=dict)  # batch size -> status
    error: str | None = None

    def to_dict(self) -> dict:
        return {"group": self.group, "max_batch_size": self.max_batch_size, "first_oom": self.first_oom,
                "tried": {str(k): v for k, v in sorted(self.tried.items())}, "error": self.error}

    def line(self) -> str:
        if self.error:
            return f"{self.group}: error: {self.error}"
        tried = ", ".join(f"{k}:{v}" for k, v in sorted(self.tried.items()))
        bound = f"first out of memory at {self.first_oom}" if self.first_oom else "no out of memory up to the limit"
        return f"{self.group}: max batch size {self.max_batch_size} ({bound}; tried {tried})"


def group_key(cell: CellSpec) -> str:
    return f"{cell.task}-{cell.checkpoint_name}-{cell.padding}-{cell.precision}"


def search_groups(cells: Iterable[CellSpec]) -> dict[str, CellSpec]:
    """One search per (task, checkpoint, padding, precision): the group's first cell, by its key."""
    groups: dict[str, CellSpec] = {}
    for cell in cells:
        groups.setdefault(group_key(cell), cell)
    return groups


def probe_cell(cell: CellSpec, steps: int) -> CellSpec:
    return replace(cell, weights="random", max_steps=steps + 1, timing_warmup_steps=1, evaluate=False, label="maxbatch")


def find_max_batch_size(
    cell: CellSpec,
    run: Callable[[CellSpec], CellResult],
    *,
    start: int = 8,
    limit: int = 4096,
    steps: int = 3,
    resolution: float = 0.0,
) -> Search:
    """``resolution``: stop bisecting once the first size out of memory is within this
    fraction of the largest that fit (0: to one sample; 0.05 saves about half the probes
    at the sizes a large GPU fits)."""
    search = Search(group_key(cell))
    probe = probe_cell(cell, steps)

    def fits(batch_size: int) -> bool | None:
        result = run(replace(probe, batch_size=batch_size))
        search.tried[batch_size] = result.status
        if result.status == "ok":
            return True
        if result.status == "oom":
            return False
        search.error = f"batch size {batch_size}: {result.status}: {(result.reason or '').splitlines()[0]}"
        return None

    size, good, bad = start, None, None
    while size <= limit:
        ok = fits(size)
        if ok is None:
            return search
        if not ok:
            bad = size
            break
        good, size = size, size * 2
    if good is None:
        search.first_oom = bad
        return search
    if bad is not None:
        while bad - good > max(1, int(resolution * good)):
            mid = (good + bad) // 2
            ok = fits(mid)
            if ok is None:
                return search
            good, bad = (mid, bad) if ok else (good, mid)
    search.max_batch_size, search.first_oom = good, bad
    return search


def search_and_record(run: Any, cell: CellSpec, searches: list[Search], say: Callable[[str], None]) -> Search:
    """One group's search in a run (``session.BenchmarkRun``): said, measured with the run's
    own launcher, and every answer so far kept in the run's manifest."""
    run.started += 1
    say(f"[group {run.started}/{len(run.planned) or '?'}] largest batch for {cell.id}")
    found = find_max_batch_size(cell, run.execute)
    searches.append(found)
    run.run_writer().annotate("max_batch_size", [s.to_dict() for s in searches])
    return found
