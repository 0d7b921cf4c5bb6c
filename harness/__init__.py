"""Benchmark and regression harness for Hugging Face Trainer fine-tunes.

The library works without pytest: ``load_matrix`` expands a matrix file into cells,
``harness.session.BenchmarkRun`` measures each in a child process, judges and keeps it
(``run_cell``), ``harness.runner.run_cell`` fine-tunes one in this process (what the child
runs), and ``RunWriter`` keeps results.  ``harness.pytest_plugin`` is the thin pytest face
over it, ``python -m harness`` (``harness/cli/``) the commands.  These names are exported
here; the rest is imported from its room (docs/results.md has the map).
"""

from .matrix import Matrix, load_matrix, parse_matrix
from .results import SCHEMA_VERSION, CellResult, ResultsError, read_result, read_run
from .spec import CellSpec, SpecError
from .store.runs import RunWriter

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
