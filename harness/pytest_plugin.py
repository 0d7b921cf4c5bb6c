"""The pytest face of the harness: options, the ``cell`` parametrization, fixtures, summary.

Registered through the ``pytest11`` entry point, so ``pytest benchmarks/`` picks it up
once the package is installed.  It decides nothing itself: the matrix, the runner and the
result files are the library's.

Options::

    --gpu                   the nightly GPU suite; fails at once without a CUDA device
    --matrix NAME_OR_PATH   a matrix file, or NAME for benchmarks/NAME.toml
                            (default: smoke, or nightly with --gpu)
    --results-dir DIR       where runs are written (default: results/ under the rootdir)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .results import CellResult, RunWriter, new_run_id
from .spec import Matrix, SpecError, load_matrix

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "harness_cell: a benchmark cell expanded from the matrix")
    if config.getoption("gpu"):
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(
                "--gpu runs the GPU suite, but no CUDA device is visible to torch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}; "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). "
                "Run without --gpu for the offline CPU suite."
            )
    config.pluginmanager.register(HarnessSession(config), HarnessSession.name)


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

    def run_writer(self) -> RunWriter:
        """The run's folder, made when the first cell finishes (a run of no cell writes nothing)."""
        if self.writer is None:
            from .env import environment

            label = f"{self.matrix.name}-{'gpu' if self.use_cuda else 'cpu'}"
            self.writer = RunWriter(
                self.results_dir(), new_run_id(label), matrix=self.matrix.name, planned=self.planned, env=environment()
            )
        return self.writer

    def record(self, result: CellResult) -> Path:
        self.results.append(result)
        return self.run_writer().add(result)

    # ------------------------------------------------------------ hooks

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "cell" in callspec.params:
                self.planned.append(callspec.params["cell"].id)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.writer is not None:
            self.writer.close(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cell" not in metafunc.fixturenames:
        return
    session: HarnessSession = metafunc.config.pluginmanager.get_plugin(HarnessSession.name)
    matrix = session.matrix
    metafunc.parametrize("cell", list(matrix.cells), ids=matrix.ids)


@pytest.fixture(scope="session")
def harness_session(request: pytest.FixtureRequest) -> HarnessSession:
    return request.config.pluginmanager.get_plugin(HarnessSession.name)


@pytest.fixture
def run_benchmark_cell(harness_session: HarnessSession, benchmark: Any):
    """Run one cell once under pytest-benchmark; keep its result; skip or fail as it ended."""
    from .runner import run_cell

    def run(cell: Any) -> CellResult:
        from .data import glue_dir_from_env

        holder: dict[str, CellResult] = {}

        def once() -> None:
            holder["result"] = run_cell(
                cell,
                run_id=harness_session.run_writer().run_id,
                use_cuda=harness_session.use_cuda,
                glue_dir=glue_dir_from_env(),
            )

        benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
        result = holder["result"]
        path = harness_session.record(result)
        benchmark.extra_info.update(extra_info(result, path))
        if result.status == "skipped":
            pytest.skip(result.reason or "skipped")
        if result.status != "ok":
            pytest.fail(f"{result.id}: {result.status}: {result.reason}", pytrace=False)
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
    }
    info.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) or v is None})
    return info
