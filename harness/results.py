"""What is kept of a cell: one JSON document per measured cell, written atomically.

A document carries ``schema_version``; a file of another version, or one that is not a
result at all, is refused with an error naming the file.  The run folder that holds the
documents, its manifest and its writer are ``store/runs.py``'s.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge.verdict import Verdict
from .spec import CellSpec, SpecError

SCHEMA_VERSION = 1
STATUSES = ("ok", "oom", "error", "skipped")


class ResultsError(RuntimeError):
    """A result file is unreadable, malformed or of an unknown schema.  Names the file."""


class DiskFull(ResultsError):
    """The run folder cannot take the run's next cell: the run stops, in one line (the
    message) that names the folder, the space needed and where what was measured is kept."""


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
            # JSON has no inf or NaN: a measured figure that is not finite is stored as null
            # (missing); anywhere else (a spec's max_grad_norm = inf, a verdict's change) as
            # {"$float": "inf"}, which from_dict reads back as the float it was.
            "spec": encode_floats(self.spec.to_dict()),
            "metrics": _finite(self.metrics),
            "provenance": encode_floats(self.provenance),
            "samples": _finite(self.samples),
            "env": encode_floats(self.env),
            "verdict": encode_floats(self.verdict.to_dict()) if self.verdict is not None else None,
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
            spec = CellSpec.from_dict(decode_floats(data["spec"]))
            result = cls(
                spec=spec,
                status=data["status"],
                run_id=data["run_id"],
                env=decode_floats(data["env"]),
                metrics=data["metrics"],
                samples=data.get("samples", {}),
                provenance=decode_floats(data.get("provenance", {})),
                started_at=data.get("started_at", ""),
                finished_at=data.get("finished_at", ""),
                reason=data.get("reason"),
                verdict=Verdict.from_dict(decode_floats(data["verdict"]), spec.id) if data.get("verdict") else None,
            )
        except (SpecError, TypeError, ValueError, KeyError) as exc:
            raise ResultsError(f"{source}: malformed result: {exc}") from None
        if data.get("id") not in (None, result.id):
            raise ResultsError(f"{source}: id {data.get('id')!r} does not match its spec's id {result.id!r}")
        return result


NONFINITE = "$float"  # {"$float": "inf" | "-inf" | "nan"}: a float JSON cannot hold


def encode_floats(value: Any) -> Any:
    """``value`` with every infinite or NaN float as ``{"$float": "inf"}`` (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {NONFINITE: repr(value)}
    if isinstance(value, dict):
        return {k: encode_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_floats(v) for v in value]
    return value


def decode_floats(value: Any) -> Any:
    """``encode_floats`` undone."""
    if isinstance(value, dict):
        if len(value) == 1 and NONFINITE in value and value[NONFINITE] in ("inf", "-inf", "nan"):
            return float(value[NONFINITE])
        return {k: decode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_floats(v) for v in value]
    return value


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


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
