"""One pytest test per matrix cell: `pytest benchmarks/ [-k ID] [--gpu] [--matrix NAME]`.

The tests live in the package (``harness/bench/test_mrpc.py``), so that an installed harness
runs them too (``pytest --pyargs harness.bench``); a matrix NAME is ``benchmarks/NAME.toml``
when this folder has one, else the shipped ``harness/matrices/NAME.toml``.
"""

from harness.bench.test_mrpc import test_cell, test_max_batch_size  # noqa: F401
