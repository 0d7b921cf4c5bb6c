"""The pytest face of the harness: options, the ``cell`` parametrization, fixtures.

Registered through the ``pytest11`` entry point, so ``pytest benchmarks/`` picks it up
once the package is installed.  It decides nothing itself: the matrix (``matrix.py``), the
run (``session.BenchmarkRun``), the shards (``store/shards.py``) and the summary
(``report/summary.py``) are the library's.  Its options are in ``pytest --help``, group
"trainer-bench".  Every measured execution runs in a fresh child process
(``harness.launch``); this process never initializes CUDA.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import pytest

from .matrix import Matrix, load_matrix
from .options import add_options, matrix_path, refuse_gpu_without_cuda, run_options
from .report.benchmark_json import extra_info, quiet_benchmark_table, record_step_times
from .report.live import Live
from .results import CellResult, DiskFull
from .session import BenchmarkRun, RunOptions
from .spec import SpecError
from .store.runs import RunWriter


class StoreBehind(UserWarning):
    """The database missed cells of this run (they are in the run folder): run ``ingest``."""


class SuspectNight(UserWarning):
    """A cell past its threshold and outside its history's interval, not confirmed: it
    passes tonight; a second such night in the same direction fails."""


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's, whose table it may quiet
def pytest_configure(config: pytest.Config) -> None:
    from .launch.process import stop_cleanly_on_sigterm

    config.addinivalue_line("markers", "harness_cell: a benchmark cell expanded from the matrix")
    refuse_gpu_without_cuda(config)
    config.pluginmanager.register(HarnessSession(config), HarnessSession.name)
    stop_cleanly_on_sigterm()
    quiet_benchmark_table(config)


class HarnessSession:
    """Per pytest session: the options turned into a ``BenchmarkRun`` (the library's), and
    the hooks that feed it the selected cells and print its summary."""

    name = "trainer-bench-session"

    def __init__(self, config: pytest.Config):
        self.config = config
        self.use_cuda = bool(config.getoption("gpu"))
        self._run: BenchmarkRun | None = None
        self.searches: list[Any] = []  # --find-max-batch-size answers
        self.refused: pytest.UsageError | None = None  # a matrix that could not be read
        self._live: Live | None = None  # where the run's progress lines go

    @property
    def run(self) -> BenchmarkRun:
        if self._run is None:
            try:
                matrix = load_matrix(matrix_path(self.config, use_cuda=self.use_cuda))
            except SpecError as exc:
                raise pytest.UsageError(f"matrix refused: {exc}") from None
            self._run = BenchmarkRun(matrix, self.options(), say=self.progress, passing=self.passing)
        return self._run

    def matrix_or_none(self) -> Matrix | None:
        """The matrix, or None with the refusal kept: raised as a one-line usage error once
        collection ends, not as a collection error under pytest's internals."""
        try:
            return self.run.matrix
        except pytest.UsageError as exc:
            self.refused = exc
            return None

    def options(self) -> RunOptions:
        return run_options(self.config, use_cuda=self.use_cuda)

    def run_writer(self) -> RunWriter:
        return self.run.run_writer()

    def progress(self, text: str) -> None:
        """A line that stays: written as it happens, past pytest's capture of the test's output."""
        self.live.line(text)

    def passing(self, text: str) -> None:
        """A line a terminal overwrites with the next (a plain line in a log)."""
        self.live.passing(text)

    @property
    def live(self) -> Live:
        if self._live is None:
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            self._live = Live(self._write, tty=bool(getattr(reporter, "isatty", False)))
        return self._live

    def _write(self, text: str, newline: bool) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.config.getoption("quiet", 0) > 1:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            if newline:
                reporter.write_line(text)
            else:
                reporter.write(text, flush=True)

    # ------------------------------------------------------------ hooks

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """A refused matrix ends the run with its one-line reason; --shard I/N keeps part I of
        the selection (after -k and the other filters)."""
        if self.refused is not None:
            raise self.refused
        shard = config.getoption("shard")
        if not shard:
            return
        from .store.shards import shard_nodes

        nodes = [(item.nodeid, _cell_id(item)) for item in items]
        mine = shard_nodes(nodes, shard, self.options().baselines_dir, gpu=self.use_cuda)
        self.run.selection = [cell for cell in dict(nodes).values() if cell]
        _deselect(config, items, keep=lambda item: item.nodeid in mine)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        shard = self.config.getoption("shard")
        if shard and self.run.selection and not session.items:  # more shards than cells: an empty part
            self.progress(f"shard {shard[0]}/{shard[1]} holds none of the {len(self.run.selection)} selected cells: "
                          f"an empty run is written, so the night still merges ({self.run_writer().dir})")
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "cell" in callspec.params:
                self.run.planned.append(callspec.params["cell"].id)
            elif callspec is not None and "batch_search_cell" in callspec.params:
                self.run.planned.append(callspec.id)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        """A full results folder stops the run at once, in one line (``results.DiskFull``)."""
        try:
            return (yield)
        except DiskFull as exc:
            if "harness_session" not in getattr(item, "fixturenames", ()):
                raise
            pytest.exit(str(exc), returncode=pytest.ExitCode.TESTS_FAILED)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._run is not None:
            self._run.close(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
            # A store still behind at the end fails the run; the summary's STORE BEHIND line says why.
            if self._run.mirror.behind and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and self.config.getoption("shard") and self._run.writer:
                session.exitstatus = pytest.ExitCode.OK  # an empty shard's run is written and merges

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .report.summary import summary_sections

        for title, lines in summary_sections(self._run, self.searches):
            terminalreporter.section(title)
            for line, markup in lines:
                terminalreporter.write_line(line, **markup)
        run = self._run
        behind = (run.mirror.behind_line(run.writer.dir if run.writer else None)
                  if run is not None and run.results and run.options.store else None)
        if behind:
            warnings.warn(StoreBehind(behind), stacklevel=1)


def _cell_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "cell" in callspec.params:
        return callspec.params["cell"].id
    return None


def _deselect(config: pytest.Config, items: list[pytest.Item], keep: Any) -> None:
    drop = [item for item in items if not keep(item)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if keep(item)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session: HarnessSession = metafunc.config.pluginmanager.get_plugin(HarnessSession.name)
    wanted = {"cell", "batch_search_cell", "overhead_target"} & set(metafunc.fixturenames)
    if not wanted:
        return
    matrix = session.matrix_or_none()
    if matrix is None:  # refused: raised as a usage error once collection ends
        for name in wanted:
            metafunc.parametrize(name, [], ids=[])
        return
    if "cell" in wanted:
        metafunc.parametrize("cell", list(matrix.cells), ids=matrix.ids)
    elif "batch_search_cell" in wanted:
        from .maxbatch import search_groups

        groups = search_groups(matrix.cells)
        metafunc.parametrize("batch_search_cell", list(groups.values()), ids=list(groups))
    else:  # the overhead check, on the cell the matrix opts in with ([matrix] overhead)
        chosen = [c for c in matrix.cells if c.id == matrix.overhead]
        metafunc.parametrize("overhead_target", chosen, ids=[c.id for c in chosen])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--find-max-batch-size runs only the batch-size searches; otherwise they are left out."""
    searching = config.getoption("find_max_batch_size")
    session: HarnessSession | None = config.pluginmanager.get_plugin(HarnessSession.name)
    matrix = session.matrix_or_none() if session is not None and any(
        "overhead_target" in getattr(i, "fixturenames", ()) for i in items) else None

    def keep(item: pytest.Item) -> bool:
        names = getattr(item, "fixturenames", ())
        # A matrix that does not opt into the overhead check leaves it out (no empty-set skip).
        not_opted = "overhead_target" in names and (matrix is None or matrix.overhead is None or searching)
        return ("batch_search_cell" in names) == searching and not not_opted

    _deselect(config, items, keep)


@pytest.fixture
def find_max_batch(harness_session: HarnessSession):
    """Search the largest batch that fits for one (checkpoint, padding, precision) group."""
    from .maxbatch import search_and_record

    def search(cell: Any):
        found = search_and_record(harness_session.run, cell, harness_session.searches, harness_session.progress)
        if found.error:
            pytest.fail(found.line(), pytrace=False)
        return found

    return search


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest) -> HarnessSession:
    return request.config.pluginmanager.get_plugin(HarnessSession.name)


@pytest.fixture
def run_benchmark_cell(harness_session: HarnessSession, benchmark: Any):
    """Measure one cell (repeats, seeds), judge it against its baseline and references,
    keep the result, and skip or fail the test as the verdict says."""

    def run(cell: Any) -> CellResult:
        result, path, outcome = harness_session.run.run_cell(cell)
        record_step_times(benchmark, result)
        benchmark.extra_info.update(extra_info(result, path))
        if outcome.kind == "skipped":
            pytest.skip(outcome.message)
        if outcome.kind == "failed":
            pytest.fail(outcome.message, pytrace=False)
        if outcome.message:  # a suspect night passes, loudly
            warnings.warn(SuspectNight(outcome.message), stacklevel=1)
        return result

    return run
