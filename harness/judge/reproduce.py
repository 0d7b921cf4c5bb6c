"""The command that re-measures a regression here, ending every regression message.

``pytest benchmarks/ --matrix smoke -k CELL --repeats 3`` measures the cell again on this
machine; where the environment changed in a package, ``python -m harness ab`` puts the two
versions side by side, interleaved (``docs/upgrades.md``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

# env_changes lines that are not a package's versions (the machine, the harness, the data); a
# package is named canonically (``canonical_name``: no dots, no underscores), while the
# machine's settings are ``gpu_name``, ``cpu.microcode``, ``gpu0.power_limit_w``...
NOT_PACKAGES = ("python", "platform", "harness", "matrix", "data", "checkpoint", "tokenizer")
_CHANGE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*) (\S+) -> (\S+)$")
MOST_AB = 3  # A/B commands shown at most (one per package that moved)


def matrix_argument(source: str | None, name: str) -> str:
    """``--matrix``'s value: the name where it finds this very file, else the file's path."""
    from ..project import matrix_path
    from ..spec import SpecError

    if not source or not Path(source).is_file():
        return name
    try:
        if matrix_path(name).resolve() == Path(source).resolve():
            return name
    except SpecError:
        pass
    return source


def reproduce_lines(cell_id: str, matrix: str | None, *, gpu: bool, env_changes: list[str]) -> list[str]:
    """The commands for ``cell_id`` (a cell, or a ``-k`` expression over several); without
    ``matrix`` (not known where the results came from) they leave ``--matrix`` out."""
    where = (f"--matrix {shlex.quote(matrix)} " if matrix else "") + f"-k {shlex.quote(cell_id)}"
    lines = [f"reproduce here: pytest benchmarks/ {where} --repeats 3{' --gpu' if gpu else ''}"]
    for change in env_changes:
        found = _CHANGE.match(change)
        name = found.group(1) if found else ""
        if not found or name in NOT_PACKAGES or "." in name or "_" in name or "(none)" in found.groups()[1:]:
            continue
        name, old, new = found.groups()
        if len(lines) > MOST_AB:
            break
        lines.append(f"the upgrade side by side: python -m harness ab {shlex.quote(f'{name}=={old}')} "
                     f"{shlex.quote(f'{name}=={new}')} {where}{' --gpu' if gpu else ''}")
    return lines
