"""What is kept: one JSON document per measured cell, written atomically.

Layout under a results folder::

    runs/<run_id>/run.json          the run: matrix, planned cells, environment, state
    runs/<run_id>/<cell_id>.json    one document per finished cell

A document carries ``schema_version``; a file of another version, or one that is not a
result at all, is refused with an error naming the file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge.verdict import Verdict
from .spec import CellSpec, SpecError

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "skipped")


class ResultsError(RuntimeError):
    """A result file is unreadable, malformed or of an unknown schema.  Names the file."""


@dataclass
class CellResult:
    spec: CellSpec
    status: str
    run_id: str
    env: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # where model and data came from
    started_at: str = ""
    finished_at: str = ""
    reason: str | None = None  # why a cell was skipped, or what went wrong
    verdict: Verdict | None = None  # the gate's verdict, when it judged the cell

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def verdict_word(self) -> str:
        """The verdict (``pass``, ``regression``, ...); for a cell the gate never judged, its
        status's word (``skipped``, ``error``), or "" for a finished cell not judged yet."""
        if self.verdict is not None:
            return self.verdict.verdict
        return "skipped" if self.status == "skipped" else "error" if self.status != "ok" else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "spec": self.spec.to_dict(),
            "metrics": _finite(self.metrics),
            "provenance": self.provenance,
            "samples": _finite(self.samples),
            "env": self.env,
            "verdict": self.verdict.to_dict() if self.verdict is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<memory>") -> CellResult:
        if not isinstance(data, dict):
            raise ResultsError(f"{source}: a result is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(
                f"{source}: schema_version {version!r} is not one this harness reads ({SCHEMA_VERSION}); "
                f"re-run the cell or upgrade the harness"
            )
        missing = [k for k in ("status", "run_id", "spec", "env", "metrics") if k not in data]
        if missing:
            raise ResultsError(f"{source}: not a cell result, missing {missing}")
        try:
            spec = CellSpec.from_dict(data["spec"])
            result = cls(
                spec=spec,
                status=data["status"],
                run_id=data["run_id"],
                env=data["env"],
                metrics=data["metrics"],
                samples=data.get("samples", {}),
                provenance=data.get("provenance", {}),
                started_at=data.get("started_at", ""),
                finished_at=data.get("finished_at", ""),
                reason=data.get("reason"),
                verdict=Verdict.from_dict(data["verdict"], spec.id) if data.get("verdict") else None,
            )
        except (SpecError, TypeError, ValueError, KeyError) as exc:
            raise ResultsError(f"{source}: malformed result: {exc}") from None
        if data.get("id") not in (None, result.id):
            raise ResultsError(f"{source}: id {data.get('id')!r} does not match its spec's id {result.id!r}")
        return result


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: Path, document: Any) -> Path:
    """Write to a temporary file in the same folder, then rename: no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_result(result: CellResult, run_dir: Path) -> Path:
    return write_json_atomic(Path(run_dir) / f"{result.id}.json", result.to_dict())


def read_result(path: str | Path) -> CellResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc})") from exc
    return CellResult.from_dict(data, source=str(path))


def read_run(run_dir: str | Path) -> list[CellResult]:
    """Every cell result of one run folder (run.json aside), sorted by id."""
    run_dir = Path(run_dir)
    return sorted(
        (read_result(p) for p in run_dir.glob("*.json") if p.name != "run.json"),
        key=lambda r: r.id,
    )


def runs_root(path: str | Path) -> Path:
    """Where a results folder keeps its runs: its ``runs/`` when it has one, else the folder
    itself (a folder of run folders)."""
    path = Path(path)
    return path / "runs" if (path / "runs").is_dir() else path


def run_folders(path: str | Path) -> list[Path]:
    """The run folders ``path`` names: itself when it holds a ``run.json`` (a run folder),
    else the folders holding one under ``runs_root(path)``, oldest first; none when it names
    none.  The one answer to "is this a run folder, a results folder, or neither"."""
    path = Path(path)
    if (path / "run.json").is_file():
        return [path]
    base = runs_root(path)
    return sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []


def new_run_id(label: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{label}"


def claim_run_dir(runs_dir: Path, run_id: str) -> Path:
    """Make the run's folder, never one that exists: two runs started in the same second
    (a quick re-run, two jobs sharing a results folder) get ``<id>``, ``<id>-2``, ... and
    neither overwrites the other's cells."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = runs_dir / (run_id if n == 1 else f"{run_id}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ResultsError(f"{runs_dir}: could not claim a folder for run {run_id!r}; 999 runs of that id already exist")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunWriter:
    """Owns one run folder: the manifest, and every cell result as soon as it finishes."""

    def __init__(self, results_dir: str | Path, run_id: str, *, matrix: str, planned: Iterable[str], env: dict[str, Any],
                 extra: dict[str, Any] | None = None):
        self.dir = claim_run_dir(Path(results_dir) / "runs", run_id)
        self.run_id = run_id = self.dir.name
        self.manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "matrix": matrix,
            "started_at": utc_now(),
            "finished_at": None,
            "state": "running",  # running -> complete | partial
            "planned": list(planned),
            "finished": [],
            "env": env,
            **(extra or {}),  # the night and shard of a sharded run
        }
        self._save_manifest()

    def _save_manifest(self) -> None:
        write_json_atomic(self.dir / "run.json", self.manifest)

    def add(self, result: CellResult) -> Path:
        path = write_result(result, self.dir)
        self.manifest["finished"].append(result.id)
        self._save_manifest()
        return path

    def annotate(self, key: str, value: Any) -> None:
        """Keep a run-level figure (the measurement overhead, say) in the manifest."""
        self.manifest[key] = value
        self._save_manifest()

    def close(self, *, interrupted: bool = False) -> None:
        done = set(self.manifest["finished"])
        complete = not interrupted and all(cell in done for cell in self.manifest["planned"])
        self.manifest["state"] = "complete" if complete else "partial"
        self.manifest["finished_at"] = utc_now()
        self._save_manifest()
