"""``python -m harness bisect PACKAGE --good V1 --bad V2``: the first release of a package that
made the selected cells worse, each step an ``ab`` run (``cli/ab.py``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from . import fail
from .ab import cell_arguments, with_environments

if TYPE_CHECKING:
    from ..upgrade.envs import Sources
    from .ab import Compare, Say

NAME = "bisect"
HELP = "the first release of a package that made the selected cells worse"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package")
    parser.add_argument("--good", required=True, help="a release that is fine")
    parser.add_argument("--bad", required=True, help="a later release that is worse")
    parser.add_argument("--pre", action="store_true", help="include pre-releases")
    cell_arguments(parser)


def run(args: argparse.Namespace) -> int:
    def bisect_releases(compare: Compare, sources: Sources, say: Say) -> int:
        from ..upgrade.bisect import BisectError, bisect

        try:
            found = bisect(args.package, args.good, args.bad, sources=sources, compare=compare, rounds=args.rounds,
                           pre=args.pre, say=say)
        except BisectError as exc:
            return fail(exc)
        print(found.render())
        return 0 if found.first_bad else 1

    return with_environments(args, bisect_releases)
