"""Children import exactly the harness their parent imported.

``python -m harness.worker`` puts the current folder first on ``sys.path``: run from a clone
while the parent runs an installed harness (or the other way round), the child would run
other code than the parent, and the record would say the parent's.  Every child therefore
starts as ``python <this file> MODULE ARGS...``: a script path puts only this file's folder
on ``sys.path`` (removed here), the ``harness`` package is bound to the folder this file
lies in before anything imports it, and MODULE then runs as ``python -m MODULE`` would.  The
current folder goes last on ``sys.path`` (a matrix's callbacks may live there); it can no
longer shadow the harness.

This file imports nothing from the harness at its top: it is what binds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

BOOT = str(Path(__file__).resolve())
PACKAGE = Path(__file__).resolve().parents[1]  # the harness package this file belongs to


def command(python: str, module: str, *args: str) -> list[str]:
    """The argv that runs ``python -m module args`` with this harness bound."""
    return [python, BOOT, module, *args]


def _bind_harness() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        PACKAGE.name, PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE.name] = module
    spec.loader.exec_module(module)


def main() -> None:
    import os
    import runpy

    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    if len(sys.argv) < 2:
        raise SystemExit(f"usage: python {BOOT} MODULE [ARGS...]")
    _bind_harness()
    sys.path.append(os.getcwd())
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
