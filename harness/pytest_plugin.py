"""The pytest face of the harness: options, the ``cell`` parametrization, fixtures, summary.

Registered through the ``pytest11`` entry point, so ``pytest benchmarks/`` picks it up
once the package is installed.  It decides nothing itself: the matrix, the runner and the
result files are the library's.

Options::

    --gpu                   the nightly GPU suite; fails at once without a CUDA device
    --matrix NAME_OR_PATH   a matrix file, or NAME for benchmarks/NAME.toml
                            (default: smoke, or nightly with --gpu)
    --results-dir DIR       where runs are written (default: results/ under the rootdir)
    --baselines-dir DIR     where baselines live (default: <results-dir>/baselines)
    --repeats N             measure each cell N times; the gate uses the median and spread
    --seeds N               run each cell under N seeds (seed, seed+1, ...): quality mean and std
    --confirm K             re-run a cell that crosses a speed or memory threshold K times
    --cell-timeout SECONDS  kill one execution of a cell after this long (default: the
                            matrix's `timeout`, else derived from the cell's steps)
    --max-foreign-load CORES  other processes' mean CPU load past which a cell is `disturbed`
    --update-baselines      write this run's figures as the new baselines (and only then)

Every measured execution (each repeat, confirmation run and max-batch probe) runs in a
fresh child process (``harness.launch``); this process never initializes CUDA.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from .baselines import load_baseline, write_baseline
from .gate import Verdict, confirm_verdict, judge, needs_confirmation
from .launch import cell_timeout_s, launch_cell
from .launch.watch import DEFAULT_MAX_FOREIGN_CORES
from .results import CellResult, ResultsError, RunWriter, new_run_id
from .spec import Matrix, SpecError, load_matrix
from .stats import fold

DEFAULT_MATRIX = {False: "smoke", True: "nightly"}


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
        help="where baselines live, as <hardware-key>/<cell-id>.json (default: <results-dir>/baselines)",
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
        "--max-foreign-load", metavar="CORES", type=_non_negative_float, default=DEFAULT_MAX_FOREIGN_CORES,
        help="other processes' mean CPU load (in cores) during a cell past which its speed is not judged "
        f"(verdict `disturbed`; default: {DEFAULT_MAX_FOREIGN_CORES})",
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
        "--update-baselines", action="store_true", default=False,
        help="write this run's figures as the baselines of its cells; nothing else ever writes them",
    )


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
    """Per pytest session: the matrix, the run folder, and every cell result so far."""

    name = "trainer-bench-session"

    def __init__(self, config: pytest.Config):
        self.config = config
        self.use_cuda = bool(config.getoption("gpu"))
        self._matrix: Matrix | None = None
        self.writer: RunWriter | None = None
        self.results: list[CellResult] = []
        self.planned: list[str] = []  # ids of the cells selected to run, in order
        self.updated: list[Path] = []  # baselines written by --update-baselines
        self.started = 0  # cells started, for the progress line
        self.searches: list[Any] = []  # --find-max-batch-size answers

    # ------------------------------------------------------------ matrix

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
    def matrix(self) -> Matrix:
        if self._matrix is None:
            try:
                self._matrix = load_matrix(self.matrix_path())
            except SpecError as exc:
                raise pytest.UsageError(f"matrix refused: {exc}") from None
        return self._matrix

    # ------------------------------------------------------------ results

    def results_dir(self) -> Path:
        given = self.config.getoption("results_dir")
        return Path(given) if given else self.config.rootpath / "results"

    def baselines_dir(self) -> Path:
        given = self.config.getoption("baselines_dir")
        return Path(given) if given else self.results_dir() / "baselines"

    def run_writer(self) -> RunWriter:
        """The run's folder, made when the first cell starts (a run of no cell writes nothing).
        Its environment is the first child's: this process never looks at the GPU."""
        if self.writer is None:
            label = f"{self.matrix.name}-{'gpu' if self.use_cuda else 'cpu'}"
            self.writer = RunWriter(
                self.results_dir(), new_run_id(label), matrix=self.matrix.name, planned=self.planned, env={}
            )
        return self.writer

    def record(self, result: CellResult) -> Path:
        self.results.append(result)
        writer = self.run_writer()
        if not writer.manifest["env"] and result.env:
            writer.annotate("env", result.env)
        return writer.add(result)

    # ------------------------------------------------------------ measuring and judging

    def _run(self, cell: Any, log_name: str | None = None) -> CellResult:
        """One measured execution of ``cell``, in a fresh child process."""
        from .data import glue_dir_from_env

        writer = self.run_writer()
        timeout, _ = cell_timeout_s(cell, use_cuda=self.use_cuda, override=self.config.getoption("cell_timeout"))
        last_env = next((r.env for r in reversed(self.results) if r.env), None)
        return launch_cell(
            cell, run_id=writer.run_id, use_cuda=self.use_cuda, glue_dir=glue_dir_from_env(), timeout_s=timeout,
            show_progress=bool(self.config.getoption("trainer_progress")), keep_logs_in=writer.dir,
            log_name=log_name or cell.id, max_foreign_cores=self.config.getoption("max_foreign_load"), env=last_env,
        )

    def progress(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and not self.config.getoption("quiet", 0) > 1:
            reporter.ensure_newline()
            reporter.write_line(text)

    def measure(self, cell: Any, count: int, *, vary_seed: bool, what: str = "run") -> CellResult:
        runs = []
        for i in range(count):
            seeded = replace(cell, seed=cell.seed + i) if vary_seed else cell
            seed_note = f", seed {seeded.seed}" if vary_seed else ""
            self.progress(f"[cell {self.started}/{len(self.planned) or '?'}] {cell.id}: {what} {i + 1}/{count}{seed_note}")
            runs.append(self._run(seeded, log_name=f"{cell.id}.{what}-{i + 1}"))
            if not runs[-1].ok:
                break
        return fold(runs)

    def measure_and_judge(self, cell: Any, benchmark: Any) -> tuple[CellResult, Verdict, str | None]:
        seeds = self.config.getoption("seeds")
        count = max(self.config.getoption("repeats"), seeds or 1)
        holder: dict[str, CellResult] = {}

        self.started += 1

        def once() -> None:
            holder["result"] = self.measure(cell, count, vary_seed=bool(seeds))

        benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
        result = holder["result"]
        if result.ok and result.spec.nproc > 1:
            self.add_scaling_efficiency(result)
        baseline, baseline_error, source = None, None, None
        if result.ok:
            try:
                baseline, path = load_baseline(
                    self.baselines_dir(), result.env["hardware_key"], result.id, recipe=result.spec
                )
                source = str(path) if baseline is not None else None
            except ResultsError as exc:
                baseline_error = f"{exc} (fix or delete it, or rewrite it with --update-baselines)"
        verdict = judge(result, baseline, baseline_source=source)
        confirm = self.config.getoption("confirm")
        if needs_confirmation(verdict) and confirm > 0:
            self.progress(f"{cell.id}: {verdict.regressions()[0].line()}; confirming with {confirm} re-runs")
            confirmed = self.measure(cell, confirm, vary_seed=False, what="confirmation")
            verdict = confirm_verdict(verdict, result, confirmed, baseline, baseline_source=source)
        if baseline_error:
            verdict = Verdict(result.id, "error", verdict.findings, note=baseline_error)
        result.verdict = verdict.to_dict()
        return result, verdict, baseline_error

    def add_scaling_efficiency(self, result: CellResult) -> None:
        """Against the single-device twin measured earlier in this run, when there is one."""
        from .distributed import scaling_efficiency

        twin = replace(result.spec, nproc=1, label="")
        for single in self.results:
            if single.ok and replace(single.spec, label="") == twin:
                result.metrics["scaling_efficiency"] = scaling_efficiency(result, single)
                result.metrics["scaling_reference_cell"] = single.id
                return

    # ------------------------------------------------------------ hooks

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "cell" in callspec.params:
                self.planned.append(callspec.params["cell"].id)
            elif callspec is not None and "batch_search_cell" in callspec.params:
                self.planned.append(callspec.id)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.writer is not None:
            self.writer.close(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.searches:
            terminalreporter.section("trainer-bench: largest batch that fits")
            for search in self.searches:
                terminalreporter.write_line(search.line())
        if not self.results:
            return
        from .report import summary_table

        tr = terminalreporter
        tr.section("trainer-bench")
        for line in summary_table(self.results).splitlines():
            tr.write_line(line)
        if self.writer is not None:
            state = self.writer.manifest["state"]
            tr.write_line(f"results ({state}): {self.writer.dir}")
        if self.updated:
            tr.write_line(f"baselines written ({len(self.updated)}): {self.updated[0].parent}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session: HarnessSession = metafunc.config.pluginmanager.get_plugin(HarnessSession.name)
    if "cell" in metafunc.fixturenames:
        matrix = session.matrix
        metafunc.parametrize("cell", list(matrix.cells), ids=matrix.ids)
    elif "batch_search_cell" in metafunc.fixturenames:
        from .maxbatch import group_key

        groups: dict[str, Any] = {}
        for cell in session.matrix.cells:
            groups.setdefault(group_key(cell), cell)
        metafunc.parametrize("batch_search_cell", list(groups.values()), ids=list(groups))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--find-max-batch-size runs only the batch-size searches; otherwise they are left out."""
    searching = config.getoption("find_max_batch_size")
    keep, drop = [], []
    for item in items:
        is_search = "batch_search_cell" in getattr(item, "fixturenames", ())
        (keep if is_search == searching else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def find_max_batch(harness_session: HarnessSession):
    """Search the largest batch that fits for one (checkpoint, padding, precision) group."""
    from .maxbatch import find_max_batch_size

    def search(cell: Any):
        harness_session.started += 1
        harness_session.progress(f"[group {harness_session.started}/{len(harness_session.planned) or '?'}] "
                                 f"largest batch for {cell.id}")
        found = find_max_batch_size(cell, harness_session._run)
        harness_session.searches.append(found)
        writer = harness_session.run_writer()
        writer.annotate("max_batch_size", [s.to_dict() for s in harness_session.searches])
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
        result, verdict, baseline_error = harness_session.measure_and_judge(cell, benchmark)
        path = harness_session.record(result)
        benchmark.extra_info.update(extra_info(result, path))
        if harness_session.config.getoption("update_baselines") and result.ok:
            written = write_baseline(result, harness_session.baselines_dir())
            harness_session.updated.append(written)
        if result.status == "skipped":
            pytest.skip(result.reason or "skipped")
        if result.status != "ok":
            pytest.fail(f"{result.id}: {result.status}: {result.reason}", pytrace=False)
        if baseline_error and not harness_session.config.getoption("update_baselines"):  # else just rewritten
            pytest.fail(f"{result.id}: baseline unusable: {baseline_error}", pytrace=False)
        if verdict.failed and not harness_session.config.getoption("update_baselines"):
            pytest.fail(verdict.message(), pytrace=False)
        if verdict.verdict == "disturbed" and not harness_session.config.getoption("update_baselines"):
            pytest.skip(f"{result.id}: {verdict.note}; figures recorded")
        if verdict.verdict == "new" and not harness_session.config.getoption("update_baselines"):
            pytest.skip(
                f"new: no baseline for {result.id} on {result.env['hardware_key']} "
                f"(in {harness_session.baselines_dir()}); figures recorded, nothing judged. "
                f"Write one deliberately with --update-baselines."
            )
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
        "verdict": (result.verdict or {}).get("verdict"),
    }
    info.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) or v is None})
    return info
