"""The measurement-overhead check (``harness/bench/test_overhead.py``), for ``pytest benchmarks/``."""

from harness.bench.test_overhead import test_measurement_overhead  # noqa: F401
