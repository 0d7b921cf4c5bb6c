"""How long one execution of a cell may run before its process group is killed.

``--cell-timeout`` if given, else the matrix's per-cell ``timeout``, else a default derived
from the cell's steps: start-up plus a generous budget per training and evaluation sample,
there to catch hangs, not slowness.
"""

from __future__ import annotations

import math

from ..spec import CellSpec

# Default timeout: start-up, plus a budget per training sample and per evaluation sample.
STARTUP_S = 300.0
SECONDS_PER_SAMPLE = {False: 0.5, True: 0.05}  # CPU, GPU: generous, to catch hangs, not slowness


def default_timeout_s(spec: CellSpec, *, use_cuda: bool, n_train: int = 3668, n_eval: int = 408) -> float:
    """Derived from the cell's steps: start-up plus a generous per-sample budget."""
    if spec.max_steps > 0:
        train_samples = spec.max_steps * spec.batch_size * spec.nproc
        evals = 1 if spec.evaluate else 0
    else:
        train_samples = math.ceil(spec.num_train_epochs * n_train)
        evals = (math.ceil(spec.num_train_epochs) + 1) if spec.evaluate else 0
    per_sample = SECONDS_PER_SAMPLE[use_cuda]
    return STARTUP_S + per_sample * (train_samples + 0.5 * evals * n_eval)


def cell_timeout_s(spec: CellSpec, *, use_cuda: bool, override: float | None = None) -> tuple[float, str]:
    """The timeout and where it came from: ``--cell-timeout``, the matrix, or the default."""
    if override is not None:
        return float(override), "--cell-timeout"
    if spec.timeout is not None:
        return float(spec.timeout), "the matrix's `timeout`"
    return default_timeout_s(spec, use_cuda=use_cuda), "the default for its steps"
