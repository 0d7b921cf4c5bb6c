"""The options of ``pytest benchmarks/``: declared once, checked, and turned into a run's.

``add_options`` declares each option's name, value type, default and help
(``pytest_plugin.pytest_addoption`` registers them; ``pytest --help`` lists them in the group
"trainer-bench").  A value that cannot be used is refused before anything runs: a
malformed number, shard or store URL when pytest parses its command line, ``--gpu`` where
torch sees no CUDA device at configure time.  ``run_options`` and ``matrix_path`` turn
the parsed options into the library's ``RunOptions`` and the matrix file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .launch.watch import FOREIGN_CORES_PER_CORE, MIN_MAX_FOREIGN_CORES
from .session import RunOptions
from .store import STORE_ENV

DEFAULT_MATRIX = {False: "smoke", True: "nightly"}


def add_options(parser: pytest.Parser) -> None:
    """Register the options on ``parser``, in its group "trainer-bench" (``pytest --help``)."""
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


def refuse_gpu_without_cuda(config: pytest.Config) -> None:
    """``--gpu`` where torch sees no CUDA device: a usage error at once.  A short-lived child
    is asked (``measure.env.cuda_devices_in_a_child``): this process never initializes CUDA."""
    if not config.getoption("gpu"):
        return
    from .measure.env import cuda_devices_in_a_child

    seen = cuda_devices_in_a_child()
    if not seen.get("count"):
        raise pytest.UsageError(
            "--gpu runs the GPU suite, but no CUDA device is visible to torch "
            f"(torch {seen.get('torch')}, CUDA build: {seen.get('cuda') or 'none'}; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}"
            f"{'; ' + seen['error'] if seen.get('error') else ''}). "
            "Run without --gpu for the offline CPU suite."
        )


def matrix_path(config: pytest.Config, *, use_cuda: bool) -> Path:
    """``--matrix``: a TOML file, or NAME for ``benchmarks/NAME.toml`` (default: smoke, or
    nightly with ``--gpu``)."""
    given = config.getoption("matrix") or DEFAULT_MATRIX[use_cuda]
    path = Path(given)
    if path.suffix == ".toml" or path.exists():
        return path
    folder = config.rootpath / "benchmarks"
    candidate = folder / f"{given}.toml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in folder.glob("*.toml"))
    raise pytest.UsageError(f"--matrix {given!r}: no such file, and no {candidate}; known names: {known}")


def run_options(config: pytest.Config, *, use_cuda: bool) -> RunOptions:
    """The parsed options as the library's ``RunOptions`` (``session.BenchmarkRun``)."""
    from .data import glue_dir_from_env

    get = config.getoption
    results = Path(get("results_dir")) if get("results_dir") else config.rootpath / "results"
    # The project's own baselines, whatever --results-dir says: a CI job that writes its
    # runs to a scratch folder is still judged against what the project committed.
    baselines = Path(get("baselines_dir")) if get("baselines_dir") else config.rootpath / "results" / "baselines"
    return RunOptions(
        results_dir=results, baselines_dir=baselines, use_cuda=use_cuda, repeats=get("repeats"),
        seeds=get("seeds"), confirm=get("confirm"), cell_timeout_s=get("cell_timeout"),
        max_foreign_cores=get("max_foreign_load"), update_baselines=bool(get("update_baselines")),
        trainer_progress=bool(get("trainer_progress")), glue_dir=glue_dir_from_env(),
        require_baselines=bool(get("require_baselines")), store=get("store"), shard=get("shard"),
        night=get("night"),
    )
