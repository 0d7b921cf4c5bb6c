"""Task data: GLUE MRPC from a GLUE_DIR folder or from the hub, tokenized once per key.

With ``GLUE_DIR`` set (the variable the BERT repository used), the task is read from the
GLUE download script's layout (``$GLUE_DIR/MRPC/train.tsv``, ``dev.tsv``) and the hub is
never touched.  Otherwise its parquet files come from ``nyu-mll/glue`` at the pinned
revision (``sources.py``), through the hub's cache.

The MSR text has unbalanced double quotes, so the TSV files are read with quoting off;
a CSV reader with default quoting silently merges rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class DataError(RuntimeError):
    """Task data is missing or malformed.  The message names the file and the problem."""


@dataclass(frozen=True)
class Task:
    name: str
    glue_folder: str
    hub_path: str
    hub_config: str
    num_labels: int
    # (train file, eval file) in the GLUE layout, and the hub's split names.
    glue_files: tuple[str, str]
    hub_splits: tuple[str, str] = ("train", "validation")
    # Expected row counts, to catch a truncated or mis-parsed file.
    expected_rows: tuple[int, int] | None = None


TASKS: dict[str, Task] = {
    "mrpc": Task(
        name="mrpc",
        glue_folder="MRPC",
        hub_path="nyu-mll/glue",
        hub_config="mrpc",
        num_labels=2,
        glue_files=("train.tsv", "dev.tsv"),
        expected_rows=(3668, 408),
    ),
}


@dataclass(frozen=True)
class Pair:
    text_a: str
    text_b: str
    label: int


@dataclass(frozen=True)
class TaskData:
    task: str
    source: str  # where the rows came from, recorded in every result
    train: tuple[Pair, ...]
    validation: tuple[Pair, ...]
    fingerprint: str = ""  # a hash of the data files (or the hub's fingerprint): the token cache's key

    @property
    def majority_rate(self) -> float:
        """Accuracy of always answering the validation split's most common label."""
        counts: dict[int, int] = {}
        for pair in self.validation:
            counts[pair.label] = counts.get(pair.label, 0) + 1
        return max(counts.values()) / len(self.validation)


_LOADED: dict[tuple[str, str | None], TaskData] = {}


def glue_dir_from_env() -> str | None:
    value = os.environ.get("GLUE_DIR")
    return value or None


def load_task(task: str, glue_dir: str | os.PathLike[str] | None = None) -> TaskData:
    """Load a task's train and validation pairs, memoized per (task, source)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; known tasks: {sorted(TASKS)}")
    glue_dir = glue_dir if glue_dir is not None else glue_dir_from_env()
    key = (task, str(glue_dir) if glue_dir else None)
    if key not in _LOADED:
        spec = TASKS[task]
        _LOADED[key] = _load_glue_dir(spec, Path(glue_dir)) if glue_dir else _load_hub(spec)
    return _LOADED[key]


def read_glue_pairs(path: Path) -> list[Pair]:
    """Read one GLUE MRPC-style TSV: ``Quality  #1 ID  #2 ID  #1 String  #2 String``."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    pairs = []
    with handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or len(header) != 5 or header[0] != "Quality":
            raise DataError(f"{path}: expected the header 'Quality, #1 ID, #2 ID, #1 String, #2 String', got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if len(row) != 5:
                raise DataError(f"{path}:{lineno}: expected 5 tab-separated columns, got {len(row)}")
            try:
                label = int(row[0])
            except ValueError:
                raise DataError(f"{path}:{lineno}: label {row[0]!r} is not 0 or 1") from None
            if label not in (0, 1):
                raise DataError(f"{path}:{lineno}: label {label} is not 0 or 1")
            pairs.append(Pair(row[3], row[4], label))
    return pairs


def _load_glue_dir(spec: Task, glue_dir: Path) -> TaskData:
    folder = glue_dir / spec.glue_folder
    if not folder.is_dir():
        raise DataError(
            f"GLUE_DIR={glue_dir}: no {spec.glue_folder}/ folder inside it; expected the GLUE "
            f"download script's layout ({spec.glue_folder}/{spec.glue_files[0]}, {spec.glue_folder}/{spec.glue_files[1]})"
        )
    train = read_glue_pairs(folder / spec.glue_files[0])
    validation = read_glue_pairs(folder / spec.glue_files[1])
    digest = hashlib.sha256()
    for name in spec.glue_files:
        digest.update((folder / name).read_bytes())
    if spec.expected_rows and (len(train), len(validation)) != spec.expected_rows:
        raise DataError(
            f"{folder}: read {len(train)} train and {len(validation)} validation rows, expected "
            f"{spec.expected_rows[0]} and {spec.expected_rows[1]}; the files are truncated or were "
            f"written with quoting that merged rows"
        )
    return TaskData(spec.name, f"GLUE_DIR:{folder}", tuple(train), tuple(validation), digest.hexdigest())


def _load_hub(spec: Task) -> TaskData:
    """The task's parquet files from its dataset repository at the pinned revision (``sources.py``),
    read directly: the source names the resolved commit, and the row counts are checked as for
    ``GLUE_DIR``."""
    from .sources import SourceError, fetch_dataset

    try:
        fetched = fetch_dataset(spec.hub_path, spec.hub_config)
    except SourceError as exc:
        raise DataError(f"task {spec.name!r}: {exc}. Offline, set GLUE_DIR to a GLUE download folder, or fill "
                        f"the hub cache once online (docs/offline.md).") from None
    folder = Path(fetched.folder) / spec.hub_config
    splits, digest = [], hashlib.sha256()
    for split in spec.hub_splits:
        files = sorted(folder.glob(f"{split}-*.parquet"))
        if not files:
            raise DataError(f"{folder}: no {split}-*.parquet files in {fetched.label}; the repository's layout changed?")
        rows: list[Pair] = []
        for path in files:
            digest.update(path.read_bytes())
            rows += _parquet_pairs(path)
        splits.append(tuple(rows))
    label = f"{fetched.label}/{spec.hub_config}"
    if spec.expected_rows and (len(splits[0]), len(splits[1])) != spec.expected_rows:
        raise DataError(f"{label}: read {len(splits[0])} train and {len(splits[1])} validation rows, expected "
                        f"{spec.expected_rows[0]} and {spec.expected_rows[1]}: not the split this harness measures")
    return TaskData(spec.name, label, splits[0], splits[1], digest.hexdigest())


def _parquet_pairs(path: Path) -> list[Pair]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading the hub's parquet files needs pyarrow (pip install pyarrow), "
                        "or set GLUE_DIR to a GLUE download folder") from None
    try:
        table = pq.read_table(path, columns=["sentence1", "sentence2", "label"]).to_pydict()
    except Exception as exc:  # a damaged or foreign file
        raise DataError(f"{path}: not the task's parquet file ({type(exc).__name__}: {exc})") from None
    pairs = []
    for a, b, y in zip(table["sentence1"], table["sentence2"], table["label"]):
        if y not in (0, 1):
            raise DataError(f"{path}: label {y!r} is not 0 or 1")
        pairs.append(Pair(a, b, int(y)))
    return pairs


# ---------------------------------------------------------------- tokenization


class FeatureDataset(torch.utils.data.Dataset):
    """Tokenized examples as plain dicts; the Trainer takes any map-style dataset."""

    def __init__(self, features: Sequence[dict[str, Any]]):
        self.features = list(features)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.features[index]

    @property
    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.features]


@dataclass(frozen=True)
class TokenizedTask:
    train: FeatureDataset
    validation: FeatureDataset


_TOKENIZED: dict[tuple[Any, ...], TokenizedTask] = {}


def tokenize_task(data: TaskData, tokenizer: Any, *, pad_to_max_length: bool, max_length: int) -> TokenizedTask:
    """Tokenize both splits; memoized per (task source, tokenizer, padding, max length),
    and cached on disk (``token_cache_dir``), since every cell runs in a fresh process.

    ``dynamic`` and ``bucketed`` share the unpadded encoding; ``max_length`` pads here so
    every example carries ``max_length`` positions.
    """
    key = (data.source, data.task, _tokenizer_key(tokenizer), pad_to_max_length, max_length)
    if key not in _TOKENIZED:
        disk = _disk_key(data, tokenizer, pad_to_max_length, max_length)
        cached = _read_cache(disk) if disk else None
        if cached is None:
            cached = TokenizedTask(
                train=_encode(data.train, tokenizer, pad_to_max_length, max_length),
                validation=_encode(data.validation, tokenizer, pad_to_max_length, max_length),
            )
            if disk:
                _write_cache(disk, cached)
        _TOKENIZED[key] = cached
    return _TOKENIZED[key]


def token_cache_dir() -> Path | None:
    """``HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/trainer-bench``, else ``~/.cache/trainer-bench``;
    ``HARNESS_CACHE_DIR=off`` turns the disk cache off."""
    given = os.environ.get("HARNESS_CACHE_DIR")
    if given == "off":
        return None
    if given:
        return Path(given) / "tokenized"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainer-bench" / "tokenized"


def _disk_key(data: TaskData, tokenizer: Any, pad: bool, max_length: int) -> str | None:
    """Tokenizer (its full serialized definition), task, padding, max length, the data files'
    hash and the tokenizer libraries' versions; None when the data has no fingerprint."""
    if not data.fingerprint or token_cache_dir() is None:
        return None
    import importlib.metadata

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:  # a slow tokenizer: its vocabulary and settings
        definition = repr(sorted(tokenizer.get_vocab().items())) + repr(getattr(tokenizer, "init_kwargs", {}))
    versions = []
    for dist in ("transformers", "tokenizers"):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("-")
    parts = [data.task, data.fingerprint, type(tokenizer).__name__, definition, str(pad), str(max_length), *versions]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


CACHE_FORMAT = 1  # the token cache's JSON layout: {"format", "train", "validation"}, features as lists of ints


def _read_cache(key: str) -> TokenizedTask | None:
    """The cached encoding, read as data (JSON of integers: a restored CI cache cannot run
    code the way a pickle could); anything else in its place is ignored and rewritten."""
    path = token_cache_dir() / f"{key}.json"
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            return None
        splits = [_features(data["train"]), _features(data["validation"])]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or unreadable: tokenize again and rewrite it
    return TokenizedTask(FeatureDataset(splits[0]), FeatureDataset(splits[1]))


def _features(rows: Any) -> list[dict[str, Any]]:
    """Rows as the encoder makes them: token-id lists and an integer label, nothing else."""
    ok = isinstance(rows, list) and all(
        isinstance(row, dict) and all(
            (isinstance(v, list) and all(type(x) is int for x in v)) if k != "labels" else type(v) is int
            for k, v in row.items())
        for row in rows)
    if not ok:
        raise ValueError("not a token cache")
    return rows


def _write_cache(key: str, tokenized: TokenizedTask) -> None:
    folder = token_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"format": CACHE_FORMAT, "train": tokenized.train.features,
                       "validation": tokenized.validation.features}, handle, separators=(",", ":"))
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only home: the cache is only a speed-up


def _encode(pairs: Sequence[Pair], tokenizer: Any, pad: bool, max_length: int) -> FeatureDataset:
    enc = tokenizer(
        [p.text_a for p in pairs],
        [p.text_b for p in pairs],
        truncation=True,
        max_length=max_length,
        padding="max_length" if pad else False,
    )
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} | {"labels": pairs[i].label} for i in range(len(pairs))]
    return FeatureDataset(features)


def _tokenizer_key(tokenizer: Any) -> tuple[str, int, str]:
    return (str(getattr(tokenizer, "name_or_path", "")), len(tokenizer), type(tokenizer).__name__)


def clear_caches() -> None:
    _LOADED.clear()
    _TOKENIZED.clear()
