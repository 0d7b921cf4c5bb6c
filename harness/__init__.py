"""Benchmark and regression harness for Hugging Face Trainer fine-tunes.

The library works without pytest: ``load_matrix`` expands a matrix file into cells,
``run_cell`` fine-tunes one and returns its ``CellResult``, and ``RunWriter`` keeps the
results.  ``harness.pytest_plugin`` is the thin pytest face over it.
"""

from .matrix import Matrix, load_matrix, parse_matrix
from .results import SCHEMA_VERSION, CellResult, ResultsError, RunWriter, read_result, read_run
from .spec import CellSpec, SpecError

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "CellResult",
    "CellSpec",
    "Matrix",
    "ResultsError",
    "RunWriter",
    "SpecError",
    "load_matrix",
    "parse_matrix",
    "read_result",
    "read_run",
]
