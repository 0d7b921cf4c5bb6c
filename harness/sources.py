"""Where the hub's data and weights come from: real repositories, pinned revisions, fetched once.

A short name resolves to its real repository (``all-MiniLM-L6-v2`` is
``sentence-transformers/all-MiniLM-L6-v2``), and every repository the standard matrices use
is pinned to a commit (``PINS``; a matrix moves a pin in its ``[sources]`` table, and
``HARNESS_REVISIONS='{"repo": "rev"}'`` does too).  A fetch goes through the hub's own cache
(``huggingface_hub.snapshot_download``), so ``HF_HUB_OFFLINE=1`` reads what an earlier online
run left there; the resolved commit is the snapshot's folder name and is recorded with every
result (``provenance``, ``env["sources"]``), so a moved revision reads as an environment change.

The run fetches everything its cells need once, in the parent, before the first cell
(``fetch_for``), and hands the children the folders in ``HARNESS_SOURCES`` with the hub
offline: a hub hiccup costs no cell, and a cold download never counts against a cell's timeout.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SOURCES_ENV = "HARNESS_SOURCES"  # what the parent fetched: {"model:<name>" | "dataset:<repo>": Fetched}
REVISIONS_ENV = "HARNESS_REVISIONS"

# short names (and the legacy ids the hub redirects) -> the repository they are on the hub
HUB_IDS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "bert-large-uncased": "google-bert/bert-large-uncased",
    "distilbert-base-uncased": "distilbert/distilbert-base-uncased",
    "roberta-base": "FacebookAI/roberta-base",
}
# Commits seen in many independent hub caches and pins (docs/offline.md says how to move one).
PINS = {
    "sentence-transformers/all-MiniLM-L6-v2": "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
    "google-bert/bert-base-uncased": "86b5e0934494bd15c9632b12f734a8a67f723594",
    "distilbert/distilbert-base-uncased": "12040accade4e8a0f71eabdb258fecc2e7e948be",
    "FacebookAI/roberta-base": "e2da8e2f811d1448a5b465c236feacd80ffbac7b",
    "nyu-mll/glue": "bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c",
}
# What a cell loads from a model repository: config, tokenizer, PyTorch weights (not the
# ONNX, OpenVINO or TensorFlow copies some repositories also hold).
MODEL_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
MODEL_FILES_LEGACY = ["*.json", "*.txt", "*.model", "pytorch_model.bin"]
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class SourceError(RuntimeError):
    """A repository cannot be fetched or found in the cache."""


@dataclass(frozen=True)
class Fetched:
    repo: str
    revision: str  # what was asked: a commit, a branch or a tag
    commit: str | None  # what it resolved to: the snapshot's commit
    folder: str

    @property
    def label(self) -> str:
        return f"hub:{self.repo}@{self.commit or self.revision}"


def hub_id(name: str) -> str:
    return HUB_IDS.get(name, name)


def revision(repo: str, overrides: dict[str, str] | None = None) -> str:
    """The revision to fetch: the matrix's or ``HARNESS_REVISIONS``'s, else the pin, else main."""
    given = {**_env_revisions(), **(overrides or {})}
    for name in (repo, *[short for short, full in HUB_IDS.items() if full == repo]):
        if name in given:
            return str(given[name])
    return PINS.get(repo, "main")


def _env_revisions() -> dict[str, str]:
    text = os.environ.get(REVISIONS_ENV)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise SourceError(f"{REVISIONS_ENV} is not JSON: {text!r}; give it as '{{\"repo\": \"revision\"}}'") from None
    if not isinstance(value, dict):
        raise SourceError(f"{REVISIONS_ENV} must be a JSON object of repository -> revision, got {text!r}")
    return value


def _snapshot(repo: str, rev: str, *, repo_type: str | None, patterns: list[str]) -> Fetched:
    import huggingface_hub

    folder = huggingface_hub.snapshot_download(repo, revision=rev, repo_type=repo_type, allow_patterns=patterns)
    commit = Path(folder).name
    return Fetched(repo, rev, commit if _COMMIT.match(commit) else None, str(folder))


def fetch_model(name: str, overrides: dict[str, str] | None = None) -> Fetched:
    """A model repository's config, tokenizer and weights at its pinned revision: from the
    hub cache, else (online) the hub.  Offline, a cache under the legacy id is found too."""
    handed = handed_down().get(f"model:{name}")
    if handed:
        return handed
    repo = hub_id(name)
    rev = revision(repo, overrides)
    errors = []
    for candidate in dict.fromkeys((repo, name)):
        try:
            fetched = _snapshot(candidate, rev, repo_type=None, patterns=MODEL_FILES)
            if not any(Path(fetched.folder).glob("*.safetensors")):
                fetched = _snapshot(candidate, rev, repo_type=None, patterns=MODEL_FILES_LEGACY)
            return fetched
        except Exception as exc:  # the hub's errors differ offline, online, by version
            errors.append(f"{candidate}@{rev}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise SourceError(f"model {name!r} not found on the hub or in its cache ({'; '.join(errors)})")


def fetch_dataset(repo: str, folder: str, overrides: dict[str, str] | None = None) -> Fetched:
    """One configuration's files (``mrpc/*.parquet``) of a dataset repository."""
    handed = handed_down().get(f"dataset:{repo}")
    if handed:
        return handed
    rev = revision(repo, overrides)
    try:
        return _snapshot(repo, rev, repo_type="dataset", patterns=[f"{folder}/*"])
    except Exception as exc:
        raise SourceError(f"dataset {repo}@{rev} ({folder}/) not found on the hub or in its cache: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc


def handed_down() -> dict[str, Fetched]:
    """What the parent fetched for this child (``HARNESS_SOURCES``)."""
    text = os.environ.get(SOURCES_ENV)
    if not text:
        return {}
    return {key: Fetched(**value) for key, value in json.loads(text).items()}


def hand_down(fetched: dict[str, Fetched]) -> dict[str, str]:
    """The child environment that uses ``fetched`` and keeps the hub offline."""
    if not fetched:
        return {}
    return {SOURCES_ENV: json.dumps({k: asdict(v) for k, v in fetched.items()}), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def needed(cell: Any, *, glue_dir: str | None, overrides: dict[str, str] | None = None
           ) -> dict[str, Callable[[], Fetched]]:
    """The hub repositories one cell needs, each with the call that fetches it: a pretrained
    checkpoint (or a config the harness does not carry), its tokenizer, and the task data
    when there is no ``GLUE_DIR``.  Local folders and the offline packages need nothing."""
    from .data import TASKS
    from .models import needs_hub

    wanted: dict[str, Callable[[], Fetched]] = {}
    for name, weights in ((cell.tokenizer or cell.checkpoint, "pretrained"), (cell.checkpoint, cell.weights)):
        if needs_hub(name, weights):
            wanted.setdefault(f"model:{name}", lambda name=name: fetch_model(name, overrides))
    task = TASKS.get(cell.task)
    if not glue_dir and task is not None:
        wanted[f"dataset:{task.hub_path}"] = lambda: fetch_dataset(task.hub_path, task.hub_config, overrides)
    return wanted


class Prefetch:
    """Everything a run's cells need from the hub, fetched once in the parent before the
    first cell (``say`` shows each fetch and where it resolved); then each cell's child gets
    what it needs handed down with the hub offline.  A repository that cannot be fetched is
    said once, and the cells that need it try for themselves (and fail with its name)."""

    def __init__(self, cells: Iterable[Any], *, glue_dir: str | None, overrides: dict[str, str] | None = None,
                 say: Callable[[str], None] = print):
        import time

        self.glue_dir, self.overrides = glue_dir, dict(overrides or {})
        self.fetched: dict[str, Fetched] = {}
        self.errors: dict[str, str] = {}
        wanted: dict[str, Callable[[], Fetched]] = {}
        for cell in cells:
            for key, fetch in needed(cell, glue_dir=glue_dir, overrides=self.overrides).items():
                wanted.setdefault(key, fetch)
        for key, fetch in wanted.items():
            started, what = time.monotonic(), key.partition(":")[2]
            say(f"sources: fetching {what} (once, for every cell that needs it) ...")
            try:
                self.fetched[key] = fetch()
            except Exception as exc:  # the hub's own errors too: said, and left to the cells that need it
                self.errors[key] = str(exc)
                say(f"sources: {what} could not be fetched: {exc}")
                continue
            say(f"sources: {what} is {self.fetched[key].label} ({time.monotonic() - started:.1f} s)")

    def env_for(self, cell: Any) -> dict[str, str]:
        """The child environment of ``cell``: the revisions asked, what was fetched for it, and
        the hub offline when everything it needs was fetched."""
        env = {REVISIONS_ENV: json.dumps(self.overrides)} if self.overrides else {}
        keys = list(needed(cell, glue_dir=self.glue_dir, overrides=self.overrides))
        got = {k: self.fetched[k] for k in keys if k in self.fetched}
        if got and len(got) == len(keys):
            env.update(hand_down(got))
        elif got:
            env[SOURCES_ENV] = json.dumps({k: asdict(v) for k, v in got.items()})
        return env
