"""What a benchmark cell is: one fine-tune, frozen, with its id.

A cell is one fine-tune: one task, checkpoint, padding mode, batch size and precision,
plus the recipe (learning rate, steps, seed) and any extra ``TrainingArguments`` fields.
``CellSpec`` is frozen and hashable; its ``id`` (``mrpc-bert-base-uncased-dynamic-bs32-bf16``)
is the pytest id and the result's file name.  Nothing downstream re-reads the matrix
(``matrix.py``, the TOML file that expands into cells).

Every field is checked when a cell is made; errors name the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .judge.thresholds import Threshold, ThresholdError

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


class SpecError(ValueError):
    """A cell or matrix is malformed.  The message names the key and what is allowed."""


# A cell id names its result file (``<id>.json``), its logs (``<id>.run-1.log``) and its
# database rows: file names stop at 255 bytes.
MAX_ID_BYTES = 200


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
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SpecError(f"`{name}` must be a finite non-negative number, got {value!r}")
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
        from .compat import training_argument_fields  # transformers, on first use only

        for key, value in self.training_args:
            if key in RESERVED_TRAINING_ARGS:
                raise SpecError(f"`{key}` is set by the harness: {RESERVED_TRAINING_ARGS[key]}")
            if key not in training_argument_fields():
                raise SpecError(_unknown_key_message(key))
            if isinstance(value, (list, dict)):
                raise SpecError(f"`{key}` must be a single value in a cell (hashable), got {value!r}")
            if isinstance(value, float) and math.isnan(value):
                raise SpecError(f"`{key}` is NaN: a matrix may not hold NaN (inf is kept where TrainingArguments "
                                "takes it, e.g. max_grad_norm = inf)")
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
            timeout = self.timeout
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
                    or timeout <= 0:
                raise SpecError(f"`timeout` must be a positive number of seconds (finite), got {timeout!r}")
            object.__setattr__(self, "timeout", float(timeout))
        if len(self.id.encode()) > MAX_ID_BYTES:
            raise SpecError(f"cell id {self.id[:60]!r}... is {len(self.id.encode())} bytes; an id names the cell's files "
                            f"and database rows (at most {MAX_ID_BYTES} bytes): shorten its `label` or checkpoint name")

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


SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(CellSpec) if f.name not in ("training_args",))


def _safe_id(text: str) -> str:
    out = []
    for ch in text:
        out.append(ch if ch.isalnum() or ch in "-_." else "_")
    return "".join(out)


def check_key(where: str, key: str) -> None:
    """A key a matrix may set: a cell field, or a TrainingArguments field the harness leaves alone."""
    if key == "training_args":
        raise SpecError(f"{where}: write TrainingArguments fields directly, not under `training_args`")
    if key in SPEC_FIELDS:
        return
    if key in RESERVED_TRAINING_ARGS:
        raise SpecError(f"{where}: `{key}` is set by the harness: {RESERVED_TRAINING_ARGS[key]}")
    from .compat import training_argument_fields

    if key not in training_argument_fields():
        raise SpecError(f"{where}: {_unknown_key_message(key)}")


def _unknown_key_message(key: str) -> str:
    import difflib

    from .compat import training_argument_fields

    candidates = list(SPEC_FIELDS) + sorted(training_argument_fields() - set(RESERVED_TRAINING_ARGS))
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


def _transformers_version() -> str:
    import transformers

    return f"transformers {transformers.__version__}"


__all__ = [
    "CellSpec",
    "PADDINGS",
    "PRECISIONS",
    "SpecError",
    "WEIGHTS",
]
