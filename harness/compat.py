"""One place for the differences between transformers 4.4x and 5.x.

* ``evaluation_strategy`` became ``eval_strategy`` (4.41), and the old name was removed.
* ``Trainer(tokenizer=...)`` became ``Trainer(processing_class=...)`` (4.46).
* ``group_by_length=True`` became ``train_sampling_strategy="group_by_length"`` (5.x).
* ``no_cuda`` became ``use_cpu`` (4.34).
* ``from_pretrained(torch_dtype=...)`` became ``dtype=...`` (4.56), and 5.x loads a checkpoint
  in the dtype it was saved in (``dtype="auto"``) where 4.x loaded float32.

Callers write the new names; the shim maps them to what the installed version takes.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import transformers

_RENAMES_NEW_TO_OLD = {
    "eval_strategy": "evaluation_strategy",
    "use_cpu": "no_cuda",
}


@functools.cache
def training_argument_fields() -> frozenset[str]:
    """Field names of the installed transformers' TrainingArguments."""
    return frozenset(f.name for f in dataclasses.fields(transformers.TrainingArguments))


def translate_training_kwargs(kwargs: dict[str, Any], fields: frozenset[str] | None = None) -> dict[str, Any]:
    """Map new-style names onto the installed TrainingArguments; refuse what it lacks."""
    fields = training_argument_fields() if fields is None else fields
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "group_by_length":
            if "group_by_length" in fields:
                out["group_by_length"] = bool(value)
            elif value:
                out["train_sampling_strategy"] = "group_by_length"
            continue
        if key not in fields and key in _RENAMES_NEW_TO_OLD and _RENAMES_NEW_TO_OLD[key] in fields:
            key = _RENAMES_NEW_TO_OLD[key]
        if key not in fields:
            raise TypeError(
                f"TrainingArguments of transformers {transformers.__version__} has no field {key!r}"
            )
        out[key] = value
    return out


def training_arguments(**kwargs: Any) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(**translate_training_kwargs(kwargs))


def model_dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``dtype=`` on 4.56 and newer, ``torch_dtype=`` before: the dtype the weights load in."""
    from packaging.version import Version

    name = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    return {name: dtype}


def trainer_processing_kwargs(tokenizer: Any) -> dict[str, Any]:
    """``processing_class=`` on 4.46 and newer, ``tokenizer=`` before."""
    params = inspect.signature(transformers.Trainer.__init__).parameters
    return {"processing_class": tokenizer} if "processing_class" in params else {"tokenizer": tokenizer}
