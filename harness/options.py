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
from .measure.profile import DEFAULT_STEPS
from .project import matrix_path as find_matrix
from .project import project_root
from .session import RunOptions
from .spec import SpecError
from .store import STORE_ENV

OPTIONS_FILE = Path(__file__).with_name("options.toml")


def add_options(parser: pytest.Parser) -> None:
    """Register the options declared in ``options.toml`` on ``parser``, in its group
    "trainer-bench" (``pytest --help``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    fill = {"foreign_per_core": f"{FOREIGN_CORES_PER_CORE:g}", "foreign_minimum": f"{MIN_MAX_FOREIGN_CORES:g}",
            "store_env": STORE_ENV}
    group = parser.getgroup("trainer-bench", "Trainer fine-tune benchmarks")
    for option in tomllib.loads(OPTIONS_FILE.read_text(encoding="utf-8"))["option"]:
        kwargs = {k: v for k, v in option.items() if k not in ("flag", "type", "default_env", "help")}
        kwargs["help"] = option["help"].format(**fill)
        if "type" in option:
            kwargs["type"] = VALUE_TYPES[option["type"]]
        if "default_env" in option:
            kwargs["default"] = os.environ.get(option["default_env"]) or None
        kwargs.setdefault("default", None)
        group.addoption(option["flag"], **kwargs)


def _store_url(text: str) -> str:
    """A URL the store can use, else argparse's one-line error with the store's reason
    (``pytest: error: argument --store: store URL 'mysql://h/db': 'mysql' is not supported; ...``)."""
    import argparse

    from .store import StoreError, is_url
    from .store.sql_connect import normalize_url

    if not is_url(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a database URL (sqlite:///FILE or postgresql://USER@HOST/DB)")
    try:
        normalize_url(text)  # refuses what it cannot use, saying what is allowed
    except StoreError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _shard(text: str) -> tuple[int, int]:
    import argparse

    from .store.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:  # argparse would hide it behind "invalid _shard value"
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(convert: type, minimum: float, strict: bool, what: str):
    """A value check for argparse whose refusal says what was given and what is allowed
    (``argument --repeats: '0' is not a positive integer``)."""
    import argparse

    def check(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not (value > minimum if strict else value >= minimum):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {what}")
        return value

    return check


VALUE_TYPES = {
    "positive_int": _number(int, 0, True, "positive integer"),
    "non_negative_int": _number(int, 0, False, "non-negative integer"),
    "positive_float": _number(float, 0, True, "positive number"),
    "non_negative_float": _number(float, 0, False, "non-negative number"),
    "store_url": _store_url,
    "shard": _shard,
}


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


def project_of(config: pytest.Config) -> Path:
    """The project root (``project.py``): the same rule as every ``python -m harness`` command,
    from the folder pytest was started in, whatever its rootdir."""
    return project_root(config.invocation_params.dir)


def matrix_path(config: pytest.Config, *, use_cuda: bool) -> Path:
    """``--matrix``: a TOML file, or NAME for the project's ``benchmarks/NAME.toml``, else the
    shipped matrix of that name (default: smoke, or nightly with ``--gpu``)."""
    try:
        return find_matrix(config.getoption("matrix"), use_cuda=use_cuda, root=project_of(config))
    except SpecError as exc:
        raise pytest.UsageError(f"--{exc}") from None


def run_options(config: pytest.Config, *, use_cuda: bool) -> RunOptions:
    """The parsed options as the library's ``RunOptions`` (``session.BenchmarkRun``)."""
    from .data import glue_dir_from_env

    get = config.getoption
    root = project_of(config)
    results = Path(get("results_dir")) if get("results_dir") else root / "results"
    # The project's own baselines, whatever --results-dir says: a CI job that writes its
    # runs to a scratch folder is still judged against what the project committed.
    baselines = Path(get("baselines_dir")) if get("baselines_dir") else root / "results" / "baselines"
    return RunOptions(
        results_dir=results, baselines_dir=baselines, use_cuda=use_cuda, repeats=get("repeats"),
        seeds=get("seeds"), confirm=get("confirm"), cell_timeout_s=get("cell_timeout"),
        max_foreign_cores=get("max_foreign_load"), update_baselines=bool(get("update_baselines")),
        trainer_progress=bool(get("trainer_progress")), glue_dir=glue_dir_from_env(),
        require_baselines=bool(get("require_baselines")), store=get("store"), shard=get("shard"),
        night=get("night"), disturbed_retries=get("disturbed_retries"), quiet_wait_s=get("quiet_wait"),
        profile=get("profile") is not None, profile_steps=get("profile") or DEFAULT_STEPS,
    )
