"""``python -m harness ab SPEC_A SPEC_B``: the same cells in two environments, interleaved.

The selection of cells (``-k``), the package sources and the comparison of two environments
here serve ``bisect`` too (``cli/bisect.py``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..matrix import load_matrix
from ..project import matrix_path, results_dir
from ..spec import CellSpec, SpecError
from . import fail

if TYPE_CHECKING:
    from ..upgrade.ab import ABResult
    from ..upgrade.envs import EnvSpec, Sources

    Compare = Callable[[EnvSpec, EnvSpec, int], ABResult]  # spec A, spec B, rounds
    Say = Callable[[str], None]

NAME = "ab"
HELP = "the same cells in two environments, interleaved, with a verdict that can say 'cannot tell'"


def setup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec_a", metavar="SPEC_A", help='requirements ("transformers==4.46.3"), -r FILE, an '
                        "interpreter, or current")
    parser.add_argument("spec_b", metavar="SPEC_B")
    cell_arguments(parser)
    parser.add_argument("--profile", metavar="STEPS", type=int, nargs="?", const=5, default=0,
                        help="then profile STEPS steps (default 5) of each cell on each side with torch.profiler, "
                             "and name the operators whose time grew from A to B")


def cell_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments ``ab`` and ``bisect`` share: which cells, how often, which package sources."""
    p.add_argument("--matrix", default=None, help="a matrix file, or NAME for benchmarks/NAME.toml (else the shipped one) "
                   "(default: smoke; nightly with --gpu)")
    p.add_argument("-k", dest="select", default=None, help="cells whose id matches, as pytest -k: words, "
                   "and/or/not, parentheses")
    p.add_argument("--rounds", type=int, default=5, help="executions of each cell on each side (default 5; "
                   "at least 5 for a 99%% interval)")
    p.add_argument("--confidence", type=float, default=None, help="of the interval (default 0.99)")
    p.add_argument("--gpu", action="store_true", help="run the cells on CUDA")
    p.add_argument("--results-dir", type=Path, default=results_dir(), help="where results/ab/<run-id> is kept")
    p.add_argument("--index-url", help="a package index to use instead of pip's")
    p.add_argument("--extra-index-url", action="append", default=[], help="another package index (repeatable)")
    p.add_argument("--find-links", action="append", default=[], help="a folder of wheels (repeatable)")


def select(cells: list[CellSpec], expression: str | None) -> list[CellSpec]:
    """pytest's -k on cell ids: words (each a case-insensitive substring test) joined by
    ``and``, ``or``, ``not`` and parentheses; a malformed expression is a SpecError."""
    if not expression:
        return cells
    tokens = re.findall(r"\(|\)|[^\s()]+", expression)
    return [c for c in cells if _KExpression(tokens, expression).matches(c.id.lower())]


class _KExpression:
    """``expr := term ("or" term)*; term := factor ("and" factor)*; factor := "not" factor |
    "(" expr ")" | word`` (pytest's grammar for -k), read afresh for each id."""

    def __init__(self, tokens: list[str], text: str):
        self.tokens, self.text, self.at = tokens, text, 0

    def matches(self, cell_id: str) -> bool:
        self.at = 0
        value = self._expr(cell_id)
        if self.at != len(self.tokens):
            self._fail()
        return value

    def _next(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _expr(self, cell_id: str) -> bool:
        return self._joined("or", self._term, cell_id)

    def _term(self, cell_id: str) -> bool:
        return self._joined("and", self._factor, cell_id)

    def _joined(self, word: str, operand, cell_id: str) -> bool:
        """``operand (word operand)*``; every operand is read, whatever the value so far."""
        values = [operand(cell_id)]
        while self._next() == word:
            self.at += 1
            values.append(operand(cell_id))
        return any(values) if word == "or" else all(values)

    def _factor(self, cell_id: str) -> bool:
        token = self._next()
        if token is None or token in ("and", "or", ")"):
            self._fail()
        self.at += 1
        if token == "not":
            return not self._factor(cell_id)
        if token == "(":
            value = self._expr(cell_id)
            if self._next() != ")":
                self._fail()
            self.at += 1
            return value
        return token.lower() in cell_id

    def _fail(self) -> None:
        raise SpecError(f"-k {self.text!r} is not an expression of words joined by and, or, not and parentheses "
                        "(e.g. -k \"dynamic and (bs8 or bs16)\")")


def _cells(args: argparse.Namespace) -> list[CellSpec]:
    path = matrix_path(args.matrix, use_cuda=args.gpu)
    cells = select(list(load_matrix(path).cells), args.select)
    if not cells:
        raise SpecError(f"no cell of {path} matches -k {args.select!r}")
    return cells


def _sources(args: argparse.Namespace) -> Sources:
    from ..upgrade.envs import pip_sources

    return pip_sources().with_extra(index_url=args.index_url, extra_index_urls=args.extra_index_url,
                                    find_links=args.find_links)


def run(args: argparse.Namespace) -> int:
    from ..upgrade.envs import parse_spec

    def ab(compare: Compare, sources: Sources, say: Say) -> int:
        result = compare(parse_spec(args.spec_a), parse_spec(args.spec_b), args.rounds)
        print(result.render())
        return 1 if result.slower() else 0

    return with_environments(args, ab)


def with_environments(args: argparse.Namespace, command: Callable[[Compare, Sources, Say], int]) -> int:
    """``command`` given the comparison of two environments' specs on the selected cells, the
    package sources and a printer; a bad spec, matrix or environment as one error line."""
    from ..data import glue_dir_from_env
    from ..upgrade.ab import DEFAULT_CONFIDENCE, run_ab
    from ..upgrade.envs import EnvError, build

    say = lambda text: print(text, flush=True)  # noqa: E731
    confidence = args.confidence or DEFAULT_CONFIDENCE
    try:
        cells = _cells(args)
        sources = _sources(args)

        def compare(spec_a: EnvSpec, spec_b: EnvSpec, rounds: int) -> ABResult:
            a, b = build(spec_a, sources, say=say), build(spec_b, sources, say=say)
            return run_ab(cells, a, b, rounds=rounds, results_dir=args.results_dir, use_cuda=args.gpu,
                          glue_dir=glue_dir_from_env(), confidence=confidence, say=say,
                          profile=getattr(args, "profile", 0) or 0)

        return command(compare, sources, say)
    except (EnvError, SpecError, ValueError) as exc:
        return fail(exc)
