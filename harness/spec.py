"""What a benchmark cell is, and how a matrix file expands into cells.

A cell is one fine-tune: one task, checkpoint, padding mode, batch size and precision,
plus the recipe (learning rate, steps, seed) and any extra ``TrainingArguments`` fields.
``CellSpec`` is frozen and hashable; its ``id`` (``mrpc-bert-base-uncased-dynamic-bs32-bf16``)
is the pytest id and the result's file name.  Nothing downstream re-reads the matrix.

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
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .judge.thresholds import Threshold, ThresholdError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PADDINGS = ("dynamic", "max_length", "bucketed")
PRECISIONS = ("fp32", "fp16", "bf16")
WEIGHTS = ("pretrained", "random")
TASKS = ("mrpc",)
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")

# TrainingArguments fields the harness sets itself; the matrix says them another way.
RESERVED_TRAINING_ARGS = {
    "output_dir": "the harness uses a scratch folder per cell",
    "per_device_train_batch_size": "use `batch_size`",
    "fp16": "use `precision`",
    "bf16": "use `precision`",
    "group_by_length": "use `padding = \"bucketed\"`",
    "train_sampling_strategy": "use `padding = \"bucketed\"`",
    "eval_strategy": "the harness evaluates once, after training, outside the timed region",
    "evaluation_strategy": "the harness evaluates once, after training, outside the timed region",
    "save_strategy": "timed cells never write checkpoints",
    "push_to_hub": "benchmark cells never push to the hub",
    "do_train": "set by the harness",
    "do_eval": "use `evaluate`",
}

# Cell fields whose value is a list (everywhere else a list means "sweep these").
LIST_FIELDS = ("thresholds", "callbacks")

# Axes that always appear in the id, in this order; other varying axes become suffixes.
_ID_AXES = ("task", "checkpoint", "padding", "batch_size", "precision")


class SpecError(ValueError):
    """A cell or matrix is malformed.  The message names the key and what is allowed."""


@dataclass(frozen=True)
class CellSpec:
    """One benchmark cell.  Frozen, hashable, and serialisable with ``to_dict``."""

    task: str = "mrpc"
    checkpoint: str = "bert-base-uncased"
    padding: str = "dynamic"
    batch_size: int = 32
    precision: str = "fp32"
    # "pretrained" loads the checkpoint's weights; "random" builds the model from its
    # config with fresh weights (as good as pretrained for speed and memory).
    weights: str = "pretrained"
    # Tokenizer to use when it differs from the checkpoint (a hub id, folder or alias).
    tokenizer: str | None = None
    max_length: int = 128
    learning_rate: float = 2e-5
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs, as in TrainingArguments
    weight_decay: float = 0.01
    seed: int = 42
    # Optimizer steps at the start of training left out of every throughput figure.
    timing_warmup_steps: int = 5
    evaluate: bool = True
    # "sdpa", "eager", "flash_attention_2"...; None keeps the library's default.
    attn_implementation: str | None = None
    # Processes (devices) of one node, under torchrun with DDP; batch_size is per device.
    nproc: int = 1
    # Extra TrainingArguments fields, as sorted (name, value) pairs.
    training_args: tuple[tuple[str, Any], ...] = ()
    # Regression thresholds over the defaults, e.g. ("train_samples_per_s:-10%",).
    thresholds: tuple[str, ...] = ()
    # Suffix that tells apart cells whose standard axes are equal (set by the matrix).
    label: str = ""
    # Seconds one execution of the cell may take before its process group is killed and the
    # cell is an error; None: derived from its steps (``launch.default_timeout_s``).
    timeout: float | None = None
    # Trainer callbacks added to the harness's own, as "package.module:ClassName" (each made
    # with no arguments): what a team's training loop adds, measured with it.
    callbacks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("padding", self.padding, PADDINGS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("weights", self.weights, WEIGHTS)
        if not isinstance(self.checkpoint, str) or not self.checkpoint.strip():
            raise SpecError(f"`checkpoint` must be a non-empty string, got {self.checkpoint!r}")
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer):
            raise SpecError(f"`tokenizer` must be a non-empty string when set, got {self.tokenizer!r}")
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("max_length", self.max_length, minimum=8)
        _check_int("max_steps", self.max_steps, minimum=-1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("timing_warmup_steps", self.timing_warmup_steps, minimum=0)
        _check_int("nproc", self.nproc, minimum=1)
        for name in ("learning_rate", "num_train_epochs", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SpecError(f"`{name}` must be a non-negative number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise SpecError("a cell must train: set `max_steps` > 0 or `num_train_epochs` > 0")
        if self.max_steps > 0 and self.max_steps <= self.timing_warmup_steps:
            raise SpecError(
                f"`max_steps` ({self.max_steps}) must exceed `timing_warmup_steps` "
                f"({self.timing_warmup_steps}), or no step is left to time"
            )
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            _check_choice("attn_implementation", self.attn_implementation, ATTENTION)
        if not isinstance(self.evaluate, bool):
            raise SpecError(f"`evaluate` must be true or false, got {self.evaluate!r}")
        if isinstance(self.training_args, Mapping):
            object.__setattr__(self, "training_args", tuple(sorted(self.training_args.items())))
        else:
            object.__setattr__(self, "training_args", tuple(sorted(tuple(p) for p in self.training_args)))
        for key, value in self.training_args:
            if key in RESERVED_TRAINING_ARGS:
                raise SpecError(f"`{key}` is set by the harness: {RESERVED_TRAINING_ARGS[key]}")
            if key not in training_argument_names():
                raise SpecError(_unknown_key_message(key))
            if isinstance(value, (list, dict)):
                raise SpecError(f"`{key}` must be a single value in a cell (hashable), got {value!r}")
        if isinstance(self.thresholds, str) or not isinstance(self.thresholds, (list, tuple)):
            raise SpecError(f"`thresholds` must be a list of expressions, got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(self.thresholds))
        for text in self.thresholds:
            try:
                Threshold.parse(text)
            except ThresholdError as exc:
                raise SpecError(f"`thresholds`: {exc}") from None
        if isinstance(self.callbacks, str) or not isinstance(self.callbacks, (list, tuple)):
            raise SpecError(f"`callbacks` must be a list of \"module:Class\" paths, got {self.callbacks!r}")
        object.__setattr__(self, "callbacks", tuple(self.callbacks))
        for path in self.callbacks:
            if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", path):
                raise SpecError(f"`callbacks`: {path!r} is not a \"package.module:ClassName\" path")
        if not isinstance(self.label, str):
            raise SpecError(f"`label` must be a string, got {self.label!r}")
        if self.timeout is not None:
            if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
                raise SpecError(f"`timeout` must be a positive number of seconds, got {self.timeout!r}")
            object.__setattr__(self, "timeout", float(self.timeout))

    @property
    def full_finetune(self) -> bool:
        """Pretrained weights trained for whole epochs and evaluated: a quality claim."""
        return self.weights == "pretrained" and self.max_steps < 0 and self.evaluate

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint's last path component: ``google/electra-small`` -> ``electra-small``."""
        return self.checkpoint.rstrip("/").split("/")[-1]

    @property
    def id(self) -> str:
        parts = [
            self.task,
            self.checkpoint_name,
            self.padding,
            f"bs{self.batch_size}",
            self.precision,
        ]
        if self.label:
            parts.append(self.label)
        return _safe_id("-".join(parts))

    @property
    def extra_training_args(self) -> dict[str, Any]:
        return dict(self.training_args)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["training_args"] = dict(self.training_args)
        data["thresholds"] = list(self.thresholds)
        data["callbacks"] = list(self.callbacks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown cell field(s) {unknown}; allowed: {sorted(known)}")
        data = dict(data)
        data["thresholds"] = tuple(data.get("thresholds", ()))
        data["callbacks"] = tuple(data.get("callbacks", ()))
        return cls(**data)


# Fields that say how a cell is judged or run, not what it measures: changing them keeps a
# baseline comparable.  Every other field is part of the recipe.
JUDGING_FIELDS = ("thresholds", "timeout")


def recipe_changes(old: CellSpec, new: CellSpec) -> list[str]:
    """What differs in the recipe of two specs of one cell, as ``max_steps 30 -> 50`` lines.

    Cell ids name the checkpoint, padding, batch size, precision and label, not every field,
    so a matrix edit (more steps, another max length) keeps the id: figures measured under
    another recipe must not be held against each other unnoticed.
    """
    a, b = old.to_dict(), new.to_dict()
    return [f"{key} {a[key]!r} -> {b.get(key)!r}" for key in a if key not in JUDGING_FIELDS and a[key] != b.get(key)]


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

    def __len__(self) -> int:
        return len(self.cells)

    @property
    def ids(self) -> list[str]:
        return [cell.id for cell in self.cells]


# ---------------------------------------------------------------- loading


SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(CellSpec) if f.name not in ("training_args",))
_SECTIONS = ("matrix", "gate", "defaults", "axes", "exclude", "override", "cells")


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

    defaults = _table(data, "defaults")
    for key, value in defaults.items():
        _check_key(f"[defaults] {key}", key)
        if isinstance(value, list) and key not in LIST_FIELDS:
            raise SpecError(f"[defaults] `{key}` is a list; lists of values to sweep belong in [axes]")

    axes = _table(data, "axes")
    for key, values in axes.items():
        _check_key(f"[axes] {key}", key)
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
            _check_key(f"[[override]] #{i + 1} {key}", key)

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
            _check_key(f"[[cells]] #{i + 1} {key}", key)
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
                  window=window, confidence=float(confidence), overhead=overhead_cell)


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


def _safe_id(text: str) -> str:
    out = []
    for ch in text:
        out.append(ch if ch.isalnum() or ch in "-_." else "_")
    return "".join(out)


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


def _check_key(where: str, key: str) -> None:
    if key == "training_args":
        raise SpecError(f"{where}: write TrainingArguments fields directly, not under `training_args`")
    if key in SPEC_FIELDS:
        return
    if key in RESERVED_TRAINING_ARGS:
        raise SpecError(f"{where}: `{key}` is set by the harness: {RESERVED_TRAINING_ARGS[key]}")
    if key not in training_argument_names():
        raise SpecError(f"{where}: {_unknown_key_message(key)}")


def _unknown_key_message(key: str) -> str:
    import difflib

    candidates = list(SPEC_FIELDS) + sorted(training_argument_names() - set(RESERVED_TRAINING_ARGS))
    close = difflib.get_close_matches(key, candidates, n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (
        f"unknown key `{key}`{hint}. Allowed: the cell fields {list(SPEC_FIELDS)} "
        f"or any field of transformers.TrainingArguments ({_transformers_version()})."
    )


def _check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        import difflib

        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"`{name}` = {value!r} is not allowed{hint}; allowed: {list(allowed)}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"`{name}` must be an integer >= {minimum}, got {value!r}")


_TA_NAMES: frozenset[str] | None = None


def training_argument_names() -> frozenset[str]:
    """Field names of the installed transformers' TrainingArguments."""
    global _TA_NAMES
    if _TA_NAMES is None:
        from transformers import TrainingArguments

        _TA_NAMES = frozenset(f.name for f in dataclasses.fields(TrainingArguments))
    return _TA_NAMES


def _transformers_version() -> str:
    import transformers

    return f"transformers {transformers.__version__}"


__all__ = [
    "CellSpec",
    "Matrix",
    "PADDINGS",
    "PRECISIONS",
    "SpecError",
    "WEIGHTS",
    "load_matrix",
    "parse_matrix",
]
