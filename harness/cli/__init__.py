"""``python -m harness``'s subcommands, one module each (asv's ``commands/``).

Each module names its command (``NAME``, ``HELP``, optionally ``DESCRIPTION``), declares
its arguments (``setup_arguments(parser)``) and runs it (``run(args) -> exit code``),
printing what the command prints.  ``harness/__main__.py`` builds the parser from
``COMMANDS`` in this order and dispatches.  Nothing below the command layer imports it.

Wherever history is read (``report``, ``changes``, ``compare``, ``merge``), ``--store URL``
reads it from a database instead of a results folder (default: ``$HARNESS_STORE``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMMANDS = ("compare", "report", "calibrate", "accept", "changes", "ingest", "merge", "submit", "ab", "bisect",
            "gpu_kit", "ceilings", "simulate")

STORE_HELP = "read from this database (sqlite:///FILE or postgresql://...) instead of a results folder"
OUTPUT_HELP = "write here instead of standard output"


class UsageError(Exception):
    """A command line the parser accepted that the command cannot use: reported as argparse
    reports its own errors (the usage, then ``python -m harness: error: ...``, exit 2)."""


def commands() -> list[ModuleType]:
    """The subcommand modules, in the order ``--help`` lists them."""
    return [importlib.import_module(f"{__name__}.{name}") for name in COMMANDS]


def normalized(argv: Sequence[str], modules: Sequence[ModuleType]) -> list[str]:
    """``argv`` with a command's older spelling made current, where its module has one
    (``legacy_argv``: ``simulate -- ARGS`` from when simulate parsed its own arguments)."""
    argv = list(argv)
    for module in modules:
        if argv[:1] == [module.NAME] and hasattr(module, "legacy_argv"):
            return [argv[0], *module.legacy_argv(argv[1:])]
    return argv


def write_out(text: str, output: Path | None) -> None:
    """The command's text to ``--output`` (a file), or to standard output."""
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def fail(exc: BaseException) -> int:
    """A harness error as the commands report it: one line on standard error, exit 2."""
    print(f"error: {exc}", file=sys.stderr)
    return 2
