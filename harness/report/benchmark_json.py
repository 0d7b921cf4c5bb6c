"""What pytest-benchmark holds for a cell: its statistics and its JSON (``--benchmark-json``).

pytest-benchmark's statistics for a cell are the cell's own timed optimizer steps (the
headline repeat's, warmup left out), one round a step: its min, median, mean and stddev
are the document's ``step_time_*`` figures and its ops are steps per second, so its table,
``--benchmark-json``, ``--benchmark-compare`` and ``pytest-benchmark compare`` mean what
they say.  (Timing the test function instead would time child start-up, every repeat and
the evaluation.)  Each cell's figures go to the benchmark's ``extra_info`` too: the cell
id, status, result file, hardware key, library versions, spec and verdict, and every
numeric metric; ``compare`` reads a file of them back (``extra_info.cell_id`` and
``result_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results import CellResult

MODE = "the harness: the cell's timed optimizer steps"


def timed_steps(result: CellResult) -> list[float]:
    """The seconds of each timed optimizer step of the headline repeat (warmup left out)."""
    steps = result.samples.get("step_seconds") or []
    return [float(s) for s in steps[result.spec.timing_warmup_steps:]] if result.ok else []


def record_step_times(benchmark: Any, result: CellResult) -> None:
    """Give pytest-benchmark the cell's timed steps as its rounds.

    pytest-benchmark has no public call for times measured elsewhere; this does what its
    ``pedantic`` does with each round's duration (``_make_stats``, then ``update``), and
    marks the fixture used.  A cell with no timed steps (skipped, failed) records nothing."""
    if not hasattr(benchmark, "_make_stats"):
        raise RuntimeError(f"this pytest-benchmark ({type(benchmark).__module__}) has no _make_stats: the harness "
                           "cannot give it the cell's step times; install pytest-benchmark 4 or 5")
    benchmark._mode = MODE  # the fixture counts as used, once
    steps = timed_steps(result)
    if not steps:
        return
    stats = benchmark._make_stats(1)
    for seconds in steps:
        stats.update(seconds)


def extra_info(result: CellResult, path: Path) -> dict[str, Any]:
    """The figures for pytest-benchmark's JSON: flat, numbers and short strings."""
    env = result.env
    info: dict[str, Any] = {
        "cell_id": result.id,
        "status": result.status,
        "result_file": str(path),
        "hardware_key": env.get("hardware_key"),
        "torch": env.get("libraries", {}).get("torch"),
        "transformers": env.get("libraries", {}).get("transformers"),
        "spec": result.spec.to_dict(),
        "verdict": result.verdict.verdict if result.verdict is not None else None,
    }
    info.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) or v is None})
    return info


def quiet_benchmark_table(config: Any) -> None:
    """pytest-benchmark's own table (each cell's timed steps) beside the harness's summary,
    which says more: shown only with --benchmark-table (or when pytest-benchmark is asked to
    compare or draw).  Its JSON is written either way."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or config.getoption("benchmark_table"):
        return
    if any(getattr(config.option, name, None) for name in ("benchmark_compare", "benchmark_histogram")):
        return
    session.display = lambda terminalreporter: None
