"""The harness's measurement must not slow training down (target: within 2%).

Runs when the matrix opts in (``[matrix] overhead = true`` for its first cell, or a cell
id): that cell as a short random-weight fine-tune, bare Trainer against instrumented
harness, and records the ratio of their training throughput.  A cell that cannot run
here (fp16 on a CPU) is skipped with its reason.
"""

import pytest

from harness.data import glue_dir_from_env
from harness.overhead import measure_overhead, overhead_cell
from harness.prepare import precision_unsupported

TARGET = 0.98  # harness throughput / bare throughput


def test_measurement_overhead(harness_session, overhead_target, benchmark):
    steps, repeats = (200, 2) if harness_session.use_cuda else (30, 5)  # ABBA: 2 a side, 5 children on a GPU
    cell = overhead_cell(overhead_target, steps)
    # On a GPU run the child finds out (this process never initializes CUDA); on the CPU, say it here.
    tf32 = bool(cell.extra_training_args.get("tf32"))
    why_not = None if harness_session.use_cuda else precision_unsupported(cell.precision, use_cuda=False, tf32=tf32)
    if why_not:
        pytest.skip(f"overhead check on {cell.id}: {why_not}")
    holder = {}

    def once():
        holder["r"] = measure_overhead(
            cell, repeats=repeats, use_cuda=harness_session.use_cuda, glue_dir=glue_dir_from_env()
        )

    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    r = holder["r"]
    benchmark.extra_info.update(r.to_dict())
    harness_session.run_writer().annotate("overhead", r.to_dict())
    # A failure needs a cost beyond both the target and what a rerun alone moves.
    if r.ratio < TARGET - r.noise:
        pytest.fail(
            f"the harness trains at {r.ratio:.3f}x the bare Trainer's throughput on {r.cell_id} "
            f"(target >= {TARGET}, bare-run noise {r.noise:.1%}); "
            f"bare walls {r.bare_wall_s}, harness walls {r.harness_wall_s}"
        )
