"""The benchmark tests, shipped with the package: one test per matrix cell (``test_mrpc``) and
the measurement-overhead check (``test_overhead``).

In this repository ``benchmarks/`` holds them (``pytest benchmarks/``); from an installed
harness, in a repository of one's own, ``pytest --pyargs harness.bench --matrix nightly``
runs the same tests, with results in that repository's ``results/`` (``project.py``).
"""
