"""The pytest face of the harness: options, the ``cell`` parametrization, fixtures, summary.

Registered through the ``pytest11`` entry point, so ``pytest benchmarks/`` picks it up
once the package is installed.  It decides nothing itself: the matrix, the runner and the
result files are the library's.

Options::

    --gpu                   the nightly GPU suite; fails at once without a CUDA device
    --matrix NAME_OR_PATH   a matrix file, or NAME for benchmarks/NAME.toml
                            (default: smoke, or nightly with --gpu)
    --results-dir DIR       where runs are written (default: results/ under the rootdir)
    --baselines-dir DIR     where baselines live (default: the project's results/baselines)
    --require-baselines     a cell with no baseline fails instead of being skipped as new
    --repeats N             measure each cell N times; the gate uses the median and spread
    --seeds N               run each cell under N seeds (seed, seed+1, ...): quality mean and std
    --confirm K             re-run a cell that crosses a speed or memory threshold K times
    --cell-timeout SECONDS  kill one execution of a cell after this long (default: the
                            matrix's `timeout`, else derived from the cell's steps)
    --max-foreign-load CORES  other processes' mean CPU load past which a cell is `disturbed`
    --update-baselines      write this run's figures as the new baselines (and only then)
    --store URL             also write every cell to a database (sqlite:///FILE or
                            postgresql://...; default $HARNESS_STORE) and read history from it
    --shard I/N             run only shard I of N of the selected cells (balanced by the
                            committed baselines' durations); merge with python -m harness merge
    --night ID              the id a night's shard runs share (default $HARNESS_NIGHT)

Every measured execution (each repeat, confirmation run and max-batch probe) runs in a
fresh child process (``harness.launch``); this process never initializes CUDA.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from .launch.watch import FOREIGN_CORES_PER_CORE, MIN_MAX_FOREIGN_CORES
from .matrix import Matrix, load_matrix
from .results import CellResult, RunWriter
from .session import BenchmarkRun, RunOptions
from .spec import SpecError
from .store import STORE_ENV

DEFAULT_MATRIX = {False: "smoke", True: "nightly"}


class StoreBehind(UserWarning):
    """The database missed cells of this run (they are in the run folder): run ``ingest``."""


class SuspectNight(UserWarning):
    """A cell past its threshold and outside its history's interval, not confirmed: it
    passes tonight; a second such night in the same direction fails."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trainer-bench", "Trainer fine-tune benchmarks")
    group.addoption(
        "--gpu",
        action="store_true",
        default=False,
        help="run the GPU suite (the `nightly` matrix unless --matrix says otherwise) on CUDA; "
        "fails at once where no CUDA device is visible",
    )
    group.addoption(
        "--matrix",
        metavar="NAME_OR_PATH",
        default=None,
        help="matrix to run: a TOML file, or NAME for benchmarks/NAME.toml (default: smoke; nightly with --gpu)",
    )
    group.addoption(
        "--results-dir",
        metavar="DIR",
        default=None,
        help="where each run's results are written, as runs/<run-id>/<cell-id>.json (default: results/)",
    )
    group.addoption(
        "--baselines-dir",
        metavar="DIR",
        default=None,
        help="where baselines live, as <hardware-key>/<cell-id>.json (default: the project's results/baselines, "
        "whatever --results-dir says)",
    )
    group.addoption(
        "--repeats", metavar="N", type=_positive_int, default=1,
        help="measure each cell N times; verdicts use the median and the spread (default: 1)",
    )
    group.addoption(
        "--seeds", metavar="N", type=_positive_int, default=None,
        help="run each cell under N seeds (its seed, seed+1, ...) and record quality mean and std; "
        "with --update-baselines this sets the quality band of cells without a published reference",
    )
    group.addoption(
        "--confirm", metavar="K", type=_non_negative_int, default=2,
        help="re-run a cell that crosses a speed or memory threshold K times before it fails (default: 2)",
    )
    group.addoption(
        "--cell-timeout", metavar="SECONDS", type=_positive_float, default=None,
        help="kill one execution of a cell (its whole process group) after SECONDS and record it as an error "
        "(default: the matrix's per-cell `timeout`, else derived from the cell's steps)",
    )
    group.addoption(
        "--max-foreign-load", metavar="CORES", type=_non_negative_float, default=None,
        help="other processes' mean CPU load (in cores) during a cell past which its speed is not judged "
        f"(verdict `disturbed`; default: {FOREIGN_CORES_PER_CORE:g} x the machine's cores, at least "
        f"{MIN_MAX_FOREIGN_CORES:g}: 0.1 on 2 cores, 0.8 on 16)",
    )
    group.addoption(
        "--find-max-batch-size", action="store_true", default=False,
        help="instead of the cells, search the largest batch that fits for each checkpoint, padding and "
        "precision of the matrix (doubling, then bisection, on short random-weight runs)",
    )
    group.addoption(
        "--trainer-progress", action="store_true", default=False,
        help="show the Trainer's own progress bar for every cell (use with -s, or it is captured)",
    )
    group.addoption(
        "--require-baselines", action="store_true", default=False,
        help="fail a cell that has no baseline for this hardware key instead of skipping it as `new` "
        "(nightly CI: a run must never pass with nothing judged)",
    )
    group.addoption(
        "--update-baselines", action="store_true", default=False,
        help="write this run's figures as the baselines of its cells; nothing else ever writes them",
    )
    group.addoption(
        "--store", metavar="URL", default=os.environ.get(STORE_ENV) or None, type=_store_url,
        help="also write every finished cell and the run manifest to this database (a SQLAlchemy URL: "
        f"sqlite:///FILE or postgresql://USER@HOST/DB), and read the history from it (default: ${STORE_ENV}). "
        "The run folder is still written; a store that fails loses nothing",
    )
    group.addoption(
        "--shard", metavar="I/N", default=None, type=_shard,
        help="run only part I of N of the selected cells (deterministic; balanced by each cell's duration in "
        "the committed baselines, round-robin without); python -m harness merge gives the night one verdict",
    )
    group.addoption(
        "--benchmark-table", action="store_true", default=False,
        help="also print pytest-benchmark's own timing table (off: the harness's summary says more)",
    )
    group.addoption(
        "--night", metavar="ID", default=os.environ.get("HARNESS_NIGHT") or None,
        help="the id a night's shard runs share, kept in each run's manifest (default: $HARNESS_NIGHT)",
    )


def _store_url(text: str) -> str:
    from .store import is_url
    from .store.sql import normalize_url

    if not is_url(text):
        raise ValueError(f"{text!r} is not a database URL (sqlite:///FILE or postgresql://USER@HOST/DB)")
    normalize_url(text)  # refuses what it cannot use, saying what is allowed
    return text


def _shard(text: str) -> tuple[int, int]:
    from .store.shards import parse_shard

    return parse_shard(text)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"{text} is not a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(f"{text} is not a non-negative number")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text} is not a non-negative integer")
    return value


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's, whose table it may quiet
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness_cell: a benchmark cell expanded from the matrix")
    if config.getoption("gpu"):
        seen = _cuda_devices_in_a_child()
        if not seen.get("count"):
            raise pytest.UsageError(
                "--gpu runs the GPU suite, but no CUDA device is visible to torch "
                f"(torch {seen.get('torch')}, CUDA build: {seen.get('cuda') or 'none'}; "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}"
                f"{'; ' + seen['error'] if seen.get('error') else ''}). "
                "Run without --gpu for the offline CPU suite."
            )
    config.pluginmanager.register(HarnessSession(config), HarnessSession.name)
    _stop_cleanly_on_sigterm()
    _quiet_benchmark_table(config)


def _quiet_benchmark_table(config: pytest.Config) -> None:
    """pytest-benchmark's timing table repeats the wall time of each cell's test, which the
    harness's own summary already says better: shown only with --benchmark-table (or when
    pytest-benchmark is asked to compare or draw)."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or config.getoption("benchmark_table"):
        return
    if any(getattr(config.option, name, None) for name in ("benchmark_compare", "benchmark_histogram")):
        return
    session.display = lambda terminalreporter: None


def _cuda_devices_in_a_child() -> dict[str, Any]:
    """Ask a short-lived child how many CUDA devices torch sees: this process never
    initializes CUDA (each cell's child does, from a clean state)."""
    import json
    import subprocess
    import sys

    probe = (
        "import json, torch; print(json.dumps({'count': torch.cuda.device_count() if torch.cuda.is_available() else 0,"
        " 'torch': torch.__version__, 'cuda': torch.version.cuda}))"
    )
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"count": 0, "error": f"the probe failed: {exc}"}


def _stop_cleanly_on_sigterm() -> None:
    """A CI timeout sends SIGTERM: turn it into the KeyboardInterrupt pytest handles, so the
    run's manifest is closed as partial (every finished cell is already on disk)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, interrupt)


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

    def matrix_path(self) -> Path:
        given = self.config.getoption("matrix") or DEFAULT_MATRIX[self.use_cuda]
        path = Path(given)
        if path.suffix == ".toml" or path.exists():
            return path
        folder = self.config.rootpath / "benchmarks"
        candidate = folder / f"{given}.toml"
        if candidate.exists():
            return candidate
        known = sorted(p.stem for p in folder.glob("*.toml"))
        raise pytest.UsageError(f"--matrix {given!r}: no such file, and no {candidate}; known names: {known}")

    @property
    def run(self) -> BenchmarkRun:
        if self._run is None:
            try:
                matrix = load_matrix(self.matrix_path())
            except SpecError as exc:
                raise pytest.UsageError(f"matrix refused: {exc}") from None
            self._run = BenchmarkRun(matrix, self.options(), say=self.progress)
        return self._run

    def matrix_or_none(self) -> Matrix | None:
        """The matrix, or None with the refusal kept: raised as a one-line usage error once
        collection ends, not as a collection error under pytest's internals."""
        try:
            return self.run.matrix
        except pytest.UsageError as exc:
            self.refused = exc
            return None

    @property
    def matrix(self) -> Matrix:
        return self.run.matrix

    def options(self) -> RunOptions:
        from .data import glue_dir_from_env

        get = self.config.getoption
        results = Path(get("results_dir")) if get("results_dir") else self.config.rootpath / "results"
        # The project's own baselines, whatever --results-dir says: a CI job that writes its
        # runs to a scratch folder is still judged against what the project committed.
        baselines = Path(get("baselines_dir")) if get("baselines_dir") else self.config.rootpath / "results" / "baselines"
        return RunOptions(
            results_dir=results, baselines_dir=baselines, use_cuda=self.use_cuda, repeats=get("repeats"),
            seeds=get("seeds"), confirm=get("confirm"), cell_timeout_s=get("cell_timeout"),
            max_foreign_cores=get("max_foreign_load"), update_baselines=bool(get("update_baselines")),
            trainer_progress=bool(get("trainer_progress")), glue_dir=glue_dir_from_env(),
            require_baselines=bool(get("require_baselines")), store=get("store"), shard=get("shard"),
            night=get("night"),
        )

    def run_writer(self) -> RunWriter:
        return self.run.run_writer()

    def progress(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and not self.config.getoption("quiet", 0) > 1:
            reporter.ensure_newline()
            reporter.write_line(text)

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
        from .store.shards import expected_durations, split

        index, count = shard
        cells = {item.nodeid: _cell_id(item) for item in items}
        by_cell = expected_durations(self.options().baselines_dir, gpu=self.use_cuda)
        durations = {node: by_cell.get(cell or "", 0.0) for node, cell in cells.items()}
        mine = set(split([item.nodeid for item in items], count, durations)[index - 1])
        self.run.selection = [cell for cell in cells.values() if cell]
        keep = [item for item in items if item.nodeid in mine]
        drop = [item for item in items if item.nodeid not in mine]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "cell" in callspec.params:
                self.run.planned.append(callspec.params["cell"].id)
            elif callspec is not None and "batch_search_cell" in callspec.params:
                self.run.planned.append(callspec.id)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._run is not None:
            self._run.close(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.searches:
            terminalreporter.section("trainer-bench: largest batch that fits")
            for search in self.searches:
                terminalreporter.write_line(search.line())
        run = self._run
        if run is None or not run.results:
            return
        from .report.tables import summary_table

        tr = terminalreporter
        tr.section("trainer-bench")
        for line in summary_table(run.results).splitlines():
            tr.write_line(line)
        tr.write_line(run.judged_line())
        if run.writer is not None:
            tr.write_line(f"results ({run.writer.manifest['state']}): {run.writer.dir}")
        if run.options.store:
            behind = run.store_behind_line()
            if behind:
                tr.write_line(behind, red=True, bold=True)
                warnings.warn(StoreBehind(behind), stacklevel=1)
            else:
                tr.write_line(f"store: {run.store_location} (every cell written)")
        if run.history_note:
            tr.write_line(run.history_note, yellow=True)
        if run.updated:
            tr.write_line(f"baselines written ({len(run.updated)}): {run.updated[0].parent}")
        if run.refused:
            tr.write_line(f"baselines NOT written ({len(run.refused)}):", yellow=True, bold=True)
            for line in run.refused:
                tr.write_line(f"  {line}", yellow=True)


def _cell_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "cell" in callspec.params:
        return callspec.params["cell"].id
    return None


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
        from .maxbatch import group_key

        groups: dict[str, Any] = {}
        for cell in matrix.cells:
            groups.setdefault(group_key(cell), cell)
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
    keep, drop = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        is_search = "batch_search_cell" in names
        # A matrix that does not opt into the overhead check leaves it out (no empty-set skip).
        not_opted = "overhead_target" in names and (matrix is None or matrix.overhead is None or searching)
        (keep if is_search == searching and not not_opted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def find_max_batch(harness_session: HarnessSession):
    """Search the largest batch that fits for one (checkpoint, padding, precision) group."""
    from .maxbatch import find_max_batch_size

    def search(cell: Any):
        run = harness_session.run
        run.started += 1
        harness_session.progress(f"[group {run.started}/{len(run.planned) or '?'}] largest batch for {cell.id}")
        found = find_max_batch_size(cell, run.execute)
        harness_session.searches.append(found)
        run.run_writer().annotate("max_batch_size", [s.to_dict() for s in harness_session.searches])
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

    def timed(fn: Any) -> None:
        benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)

    def run(cell: Any) -> CellResult:
        result, path, outcome = harness_session.run.run_cell(cell, timed)
        benchmark.extra_info.update(extra_info(result, path))
        if outcome.kind == "skipped":
            pytest.skip(outcome.message)
        if outcome.kind == "failed":
            pytest.fail(outcome.message, pytrace=False)
        if outcome.message:  # a suspect night passes, loudly
            warnings.warn(SuspectNight(outcome.message), stacklevel=1)
        return result

    return run


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
