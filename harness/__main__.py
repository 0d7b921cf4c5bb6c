"""``python -m harness COMMAND ...``: the parser built from ``harness/cli/`` (one module per
subcommand, see its docstring), the dispatch, and the harness's own errors as one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli import UsageError, commands, fail, normalized
from .results import ResultsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description="Trainer fine-tune benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in commands():
        sub_parser = sub.add_parser(command.NAME, help=command.HELP, description=getattr(command, "DESCRIPTION", None))
        command.setup_arguments(sub_parser)
        sub_parser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalized(sys.argv[1:] if argv is None else argv, commands()))
    try:
        return args.run(args)
    except UsageError as exc:
        parser.error(str(exc))
    except ResultsError as exc:
        return fail(exc)


if __name__ == "__main__":
    raise SystemExit(main())
