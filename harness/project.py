"""Where a project is: one rule for ``pytest benchmarks/`` and every ``python -m harness`` command.

The project root is the folder the run was started in, or the nearest folder above it that
holds a ``results/`` or ``benchmarks/`` folder (else a ``.git`` or ``pyproject.toml``);
``HARNESS_PROJECT_DIR`` names it outright.  Results default to ``<root>/results`` and the
baselines to ``<root>/results/baselines``, whichever command asks and wherever pytest puts
its rootdir (``pytest --pyargs harness.bench`` collects inside the installed package).

A matrix NAME is ``<root>/benchmarks/NAME.toml`` where the project has one, else the
standard matrix of that name shipped with the package (``harness/matrices/``): ``--matrix
nightly`` works from an installed harness in a repository of one's own.
"""

from __future__ import annotations

import os
from pathlib import Path

from .spec import SpecError

PROJECT_ENV = "HARNESS_PROJECT_DIR"
SHIPPED = Path(__file__).resolve().with_name("matrices")  # the standard matrices
DEFAULT_MATRIX = {False: "smoke", True: "nightly"}  # without and with --gpu


def project_root(start: str | Path | None = None) -> Path:
    """The project root seen from ``start`` (default: the current folder)."""
    given = os.environ.get(PROJECT_ENV)
    if given:
        return Path(given).expanduser().resolve()
    start = Path(start or Path.cwd()).resolve()
    folders = (start, *start.parents)
    for markers in (("results", "benchmarks"), (".git", "pyproject.toml")):
        for folder in folders:
            if any((folder / marker).exists() for marker in markers):
                return folder
    return start


def results_dir(start: str | Path | None = None) -> Path:
    return project_root(start) / "results"


def baselines_dir(start: str | Path | None = None) -> Path:
    return project_root(start) / "results" / "baselines"


def matrix_folders(root: Path | None = None) -> list[Path]:
    """Where a matrix NAME is looked for, in order: the project's ``benchmarks/``, then the package's."""
    return [(root or project_root()) / "benchmarks", SHIPPED]


def known_matrices(root: Path | None = None) -> list[str]:
    return sorted({p.stem for folder in matrix_folders(root) for p in folder.glob("*.toml")})


def matrix_path(given: str | Path | None, *, use_cuda: bool = False, root: Path | None = None,
                must_exist: bool = True) -> Path:
    """A matrix file: ``given`` as a path (``*.toml``, or any file that exists), or a NAME
    looked for in the project's ``benchmarks/`` and then among the shipped matrices."""
    given = given or DEFAULT_MATRIX[use_cuda]
    path = Path(given)
    if path.suffix == ".toml" or path.exists():
        return path
    folders = matrix_folders(root)
    for folder in folders:
        if (folder / f"{given}.toml").is_file():
            return folder / f"{given}.toml"
    if not must_exist:
        return folders[0] / f"{given}.toml"
    raise SpecError(f"matrix {str(given)!r}: no such file, nor {given}.toml in {folders[0]} or among the shipped "
                    f"matrices; known names: {known_matrices(root)}")
