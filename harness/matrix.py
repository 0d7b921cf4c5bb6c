"""How a matrix file expands into cells (``CellSpec``, ``spec.py``).

A matrix is a TOML file::

    [matrix]
    name = "smoke"
    description = "..."

    [defaults]            # any CellSpec field or TrainingArguments field
    max_steps = 30

    [axes]                # cartesian product; each value a non-empty list
    padding = ["dynamic", "max_length"]
    batch_size = [8, 16]

    [[exclude]]           # drop cells matching every key (a value may be a list)
    padding = "max_length"
    batch_size = 16

    [[override]]          # change fields of the cells matching `where`
    where = { batch_size = 8 }
    set = { learning_rate = 3e-5 }

    [[cells]]             # extra cells outside the product (defaults apply)
    checkpoint = "all-MiniLM-L6-v2"

Everything is checked before anything runs; errors name the file, the key and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import SPEC_FIELDS, CellSpec, SpecError, check_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# Cell fields whose value is a list (everywhere else a list means "sweep these").
LIST_FIELDS = ("thresholds", "callbacks")

# Axes that always appear in the id, in this order; other varying axes become suffixes.
_ID_AXES = ("task", "checkpoint", "padding", "batch_size", "precision")


@dataclass(frozen=True)
class Matrix:
    name: str
    cells: tuple[CellSpec, ...]
    description: str = ""
    source: str = "<memory>"
    # [gate]: how history judges the matrix's cells (``window.py``).
    window: int = 20  # the last N good runs under the same recipe form the baseline
    confidence: float = 0.99  # two-sided Student-t prediction interval of the window
    # [matrix] overhead = true | "CELL_ID": the cell whose bare-Trainer overhead check runs
    # (benchmarks/test_overhead.py); None: the matrix does not opt in.
    overhead: str | None = None
    # [sources]: repository (or short name) -> revision, moving a pin of ``sources.PINS``
    sources: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def ids(self) -> list[str]:
        return [cell.id for cell in self.cells]


_SECTIONS = ("matrix", "gate", "sources", "defaults", "axes", "exclude", "override", "cells")


def load_matrix(path: str | Path) -> Matrix:
    """Read and expand a matrix file, refusing anything malformed before a cell runs."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read matrix file ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from exc
    return parse_matrix(data, source=str(path), default_name=path.stem)


def parse_matrix(data: Mapping[str, Any], *, source: str = "<memory>", default_name: str = "matrix") -> Matrix:
    try:
        return _parse_matrix(data, source, default_name)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def _parse_matrix(data: Mapping[str, Any], source: str, default_name: str) -> Matrix:
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise SpecError(f"unknown section(s) {unknown}; allowed: {list(_SECTIONS)}")
    meta = _table(data, "matrix")
    bad_meta = sorted(set(meta) - {"name", "description", "overhead"})
    if bad_meta:
        raise SpecError(f"[matrix]: unknown key(s) {bad_meta}; allowed: ['name', 'description', 'overhead']")
    overhead = meta.get("overhead", False)
    if not isinstance(overhead, (bool, str)):
        raise SpecError(f"[matrix] `overhead` must be true (the first cell) or a cell id, got {overhead!r}")
    name = meta.get("name", default_name)
    description = meta.get("description", "")
    gate = _table(data, "gate")
    bad_gate = sorted(set(gate) - {"window", "confidence"})
    if bad_gate:
        raise SpecError(f"[gate]: unknown key(s) {bad_gate}; allowed: ['window', 'confidence']")
    window = gate.get("window", 20)
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise SpecError(f"[gate] `window` must be a whole number of runs, 2 or more, got {window!r}")
    confidence = gate.get("confidence", 0.99)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 <= confidence < 1:
        raise SpecError(f"[gate] `confidence` must be a probability in [0.5, 1), e.g. 0.99, got {confidence!r}")

    pins = _table(data, "sources")
    for repo, revision in pins.items():
        if not isinstance(revision, str) or not revision.strip():
            raise SpecError(f"[sources] `{repo}` must be a revision (a commit, branch or tag) as a string, got {revision!r}")

    defaults = _table(data, "defaults")
    for key, value in defaults.items():
        check_key(f"[defaults] {key}", key)
        if isinstance(value, list) and key not in LIST_FIELDS:
            raise SpecError(f"[defaults] `{key}` is a list; lists of values to sweep belong in [axes]")

    axes = _table(data, "axes")
    for key, values in axes.items():
        check_key(f"[axes] {key}", key)
        if key in ("label", *LIST_FIELDS):
            raise SpecError(f"[axes] `{key}` cannot be swept; set it in [defaults], [[override]] or [[cells]]")
        if not isinstance(values, list) or not values:
            raise SpecError(f"[axes] `{key}` must be a non-empty list of values, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise SpecError(f"[axes] `{key}` repeats a value: {values!r}")

    excludes = _list_of_tables(data, "exclude")
    for i, rule in enumerate(excludes):
        for key in rule:
            if key not in axes:
                raise SpecError(f"[[exclude]] #{i + 1}: `{key}` is not an axis; axes: {sorted(axes)}")

    overrides = _list_of_tables(data, "override")
    for i, rule in enumerate(overrides):
        bad = sorted(set(rule) - {"where", "set"})
        if bad or not isinstance(rule.get("set"), dict):
            raise SpecError(f"[[override]] #{i + 1}: needs `where = {{...}}` and `set = {{...}}`, got keys {sorted(rule)}")
        where = rule.get("where", {})
        if not isinstance(where, dict):
            raise SpecError(f"[[override]] #{i + 1}: `where` must be a table")
        for key in [*where, *rule["set"]]:
            check_key(f"[[override]] #{i + 1} {key}", key)

    extra_cells = _list_of_tables(data, "cells")
    if not axes and not extra_cells:
        raise SpecError("the matrix has no [axes] and no [[cells]]: nothing to run")

    # Axes that vary and are not part of the standard id become id suffixes.
    suffix_axes = [k for k, v in axes.items() if len(v) > 1 and k not in _ID_AXES]

    raw_cells: list[dict[str, Any]] = []
    if axes:
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            point = dict(zip(keys, combo))
            if any(_matches(rule, point) for rule in excludes):
                continue
            cell = {**defaults, **point}
            label = "-".join(_suffix(k, point[k]) for k in suffix_axes)
            if label:
                cell.setdefault("label", label)
            raw_cells.append(cell)
    for i, extra in enumerate(extra_cells):
        for key, value in extra.items():
            check_key(f"[[cells]] #{i + 1} {key}", key)
            if isinstance(value, list) and key not in LIST_FIELDS:
                raise SpecError(f"[[cells]] #{i + 1}: `{key}` is a list; a cell takes single values")
        raw_cells.append({**defaults, **extra})

    cells: list[CellSpec] = []
    for raw in raw_cells:
        for rule in overrides:
            if _matches(rule.get("where", {}), raw):
                raw = {**raw, **rule["set"]}
        cells.append(_build_cell(raw))

    if not cells:
        raise SpecError("every cell was excluded: nothing to run")
    seen: dict[str, CellSpec] = {}
    for cell in cells:
        if cell.id in seen:
            raise SpecError(
                f"two cells share the id {cell.id!r}; give one a distinct `label`, "
                f"or sweep the differing field in [axes] so it becomes part of the id"
            )
        seen[cell.id] = cell
    if isinstance(overhead, str) and overhead not in seen:
        raise SpecError(f"[matrix] `overhead` names {overhead!r}, which is not a cell of the matrix; "
                        f"its cells: {sorted(seen)[:8]}{' ...' if len(seen) > 8 else ''}")
    overhead_cell = (cells[0].id if overhead is True else overhead) or None
    return Matrix(name=str(name), description=str(description), cells=tuple(cells), source=source,
                  window=window, confidence=float(confidence), overhead=overhead_cell,
                  sources=tuple(sorted((str(k), str(v)) for k, v in pins.items())))


def _build_cell(raw: Mapping[str, Any]) -> CellSpec:
    spec_kwargs = {k: v for k, v in raw.items() if k in SPEC_FIELDS}
    extra = {k: v for k, v in raw.items() if k not in SPEC_FIELDS}
    where = ", ".join(f"{k}={raw[k]!r}" for k in _ID_AXES if k in raw)
    try:
        return CellSpec(**spec_kwargs, training_args=tuple(sorted(extra.items())))
    except SpecError as exc:
        raise SpecError(f"cell ({where}): {exc}") from None
    except TypeError as exc:  # wrong types reaching dataclass machinery
        raise SpecError(f"cell ({where}): {exc}") from None


def _matches(rule: Mapping[str, Any], point: Mapping[str, Any]) -> bool:
    for key, wanted in rule.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if point.get(key, _default_of(key)) not in allowed:
            return False
    return True


def _default_of(key: str) -> Any:
    for f in dataclasses.fields(CellSpec):
        if f.name == key:
            return f.default
    return None


def _suffix(key: str, value: Any) -> str:
    short = {
        "learning_rate": "lr",
        "max_length": "len",
        "weights": "",
        "seed": "seed",
        "checkpoint": "",
    }.get(key, key)
    if isinstance(value, bool):
        return f"{short}{'on' if value else 'off'}" if short else str(value).lower()
    return f"{short}{value}"


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"[{key}] must be a table, got {type(value).__name__}")
    return value


def _list_of_tables(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SpecError(f"[[{key}]] must be an array of tables (write each as [[{key}]])")
    return value


__all__ = ["Matrix", "load_matrix", "parse_matrix"]
