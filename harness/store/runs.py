"""The run folder: its manifest, who owns a running run, room for its cells, and a rescue.

Layout under a results folder::

    runs/<run_id>/run.json          the run: matrix, planned cells, environment, state, owner
    runs/<run_id>/<cell_id>.json    one document per finished cell (``results.py``)

``RunWriter`` owns one run folder.  The manifest names its owner (pid, host, pid namespace,
process start time): a run still ``running`` whose owner is gone from this host was killed
(``manifest_state``).  A run folder whose file system fills stops the run (``DiskFull``):
before each cell it must have room for the cell's documents and logs
(``HARNESS_MIN_FREE_MIB``), and a document that cannot be written there is kept in a rescue
folder (``rescue_dir``) instead.  ``run_folders`` says what a folder is.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..results import SCHEMA_VERSION, CellResult, DiskFull, ResultsError, utc_now, write_json_atomic


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


# ---------------------------------------------------------------- who owns a running run

def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_started(pid: int | None = None) -> float | None:
    """A process's start time (seconds since the epoch; this process's by default), or None
    when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` and has not ended
    (a zombie has ended: only its exit status is left)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if started and abs(proc.create_time() - started) > 1.0:
            return False  # the pid now names another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def run_owner() -> dict[str, Any]:
    """This process, as a manifest names its owner."""
    return {"pid": os.getpid(), "hostname": socket.gethostname(), "pid_namespace": _pid_namespace(),
            "process_started": process_started()}


def owner_alive(owner: Mapping[str, Any]) -> bool | None:
    """Whether the process a manifest names as its owner still runs: None where this
    process cannot tell (another host or pid namespace, an owner not recorded)."""
    if owner.get("hostname") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    if owner.get("pid_namespace") and owner["pid_namespace"] != _pid_namespace():
        return None
    started = owner.get("process_started")
    return process_alive(owner["pid"], started if isinstance(started, (int, float)) else None)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A run's ``run.json``, its ``state`` as ``manifest_state`` reads it (a ``running`` run
    whose owner is gone is ``killed``); a file that is not a manifest is a ResultsError
    naming it."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc}); a run manifest is written whole or not at all, "
                           "so this one was damaged after it was written") from None
    if not isinstance(manifest, dict) or "run_id" not in manifest:
        raise ResultsError(f"{path}: not a run manifest (no run_id)")
    return {**manifest, "state": manifest_state(manifest)}


def manifest_state(manifest: Mapping[str, Any]) -> str:
    """The state to show for a run: the manifest's ``state`` (``complete``, ``partial``,
    ``running``), except ``killed`` for a ``running`` run whose owner is gone (SIGKILL, the
    OOM killer, a lost machine: nobody closed it).  A run owned on another host, or
    written before manifests named their owner, keeps ``running``: it cannot be checked here."""
    state = manifest.get("state")
    if not isinstance(state, str) or not state:
        return "unknown"
    owner = manifest.get("owner")
    if state == "running" and isinstance(owner, Mapping) and owner_alive(owner) is False:
        return "killed"
    return state


# ---------------------------------------------------------------- room for a run, and a rescue

MIN_FREE_ENV = "HARNESS_MIN_FREE_MIB"
DEFAULT_MIN_FREE_MIB = 16.0  # a cell's documents and logs: tens of KiB to a few MiB, with room to spare
RESCUE_ENV = "HARNESS_RESCUE_DIR"
MIB = 2**20


def min_free_bytes() -> int:
    """The free space a run folder must have before a cell starts: ``HARNESS_MIN_FREE_MIB``
    (MiB, default 16)."""
    raw = os.environ.get(MIN_FREE_ENV)
    try:
        mib = float(raw) if raw else DEFAULT_MIN_FREE_MIB
    except ValueError:
        raise ResultsError(f"{MIN_FREE_ENV}={raw!r} is not a number of MiB") from None
    return max(0, int(mib * MIB))


def free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MIB:.1f} MiB"


def rescue_dir(run_id: str) -> Path:
    """Where a run keeps what its own folder had no room for: ``$HARNESS_RESCUE_DIR/<run>``,
    else ``<temp dir>/harness-rescue/<run>``, else ``~/.cache/trainer-bench/rescue/<run>``:
    the first that can be made and written."""
    roots = [Path(os.environ[RESCUE_ENV])] if os.environ.get(RESCUE_ENV) else []
    roots += [Path(tempfile.gettempdir()) / "harness-rescue", Path.home() / ".cache" / "trainer-bench" / "rescue"]
    tried = []
    for root in roots:
        folder = root / run_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".probe"
            probe.write_bytes(b"x" * 65536)  # room for a document, not only an inode
            probe.unlink()
            return folder
        except OSError as exc:
            tried.append(f"{folder} ({exc.strerror or exc})")
    raise ResultsError("no rescue folder could be written: " + "; ".join(tried))


RESERVE_NAME = ".room-for-run-json"  # freed by close(), so a full folder's manifest can still be closed
RESERVE_BYTES = 64 * 1024


class RunWriter:
    """Owns one run folder: the manifest, and every cell result as soon as it finishes.

    A document that cannot be written (a full disk, a quota, a folder gone read-only) is
    kept in the run's rescue folder (``rescue_dir``) instead, and the run stops: ``add``
    raises ``DiskFull`` with the one line to show, as ``check_room`` does before the next
    cell when the folder has less than ``min_free_bytes()`` free.  The folder keeps a small
    reserve file, freed by ``close``, so that a full folder's manifest can still be closed."""

    def __init__(self, results_dir: str | Path, run_id: str, *, matrix: str, planned: Iterable[str], env: dict[str, Any],
                 extra: dict[str, Any] | None = None):
        runs = Path(results_dir) / "runs"
        try:
            self.dir = claim_run_dir(runs, run_id)
        except OSError as exc:
            raise DiskFull(f"DISK FULL: cannot make a run folder in {runs} ({exc.strerror or exc}): "
                           f"{_mib(free_bytes(runs.parent))} free there, a cell needs {_mib(min_free_bytes())} "
                           f"({MIN_FREE_ENV}); nothing was trained") from None
        self.run_id = run_id = self.dir.name
        self.stopped: str | None = None  # the DiskFull line, once the run has stopped
        self.rescue: Path | None = None  # where documents the run folder could not take are kept
        self.rescued: list[str] = []
        self.lost: list[str] = []  # documents kept nowhere (no rescue folder could be written either)
        self.manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "matrix": matrix,
            "started_at": utc_now(),
            "finished_at": None,
            "state": "running",  # running -> complete | partial; manifest_state() reads a dead owner's as killed
            "owner": run_owner(),
            "planned": list(planned),
            "finished": [],
            "env": env,
            **(extra or {}),  # the night and shard of a sharded run
        }
        self._reserve = self.dir / RESERVE_NAME
        try:
            self._reserve.write_bytes(bytes(RESERVE_BYTES))
        except OSError:
            self._reserve.unlink(missing_ok=True)
        self._save_manifest()

    def _stop(self, name: str, exc: OSError, size: int) -> None:
        """The run stops at its first failed write; the line names a cell's document over
        the manifest (the update made before it) when both failed."""
        if self.stopped is None or (self.stopped.startswith("DISK FULL: could not write run.json") and name != "run.json"):
            self.stopped = (f"DISK FULL: could not write {name} in {self.dir} ({exc.strerror or exc}): "
                            f"{_mib(free_bytes(self.dir))} free there, a cell needs {_mib(max(min_free_bytes(), size))} "
                            f"({MIN_FREE_ENV}); the run stopped, no further cell is trained")
            self.manifest["stopped"] = self.stopped

    def _save_manifest(self) -> None:
        """run.json in the run folder, and a copy in the rescue folder once there is one.
        Never raises: a run is stopped by ``add`` and ``check_room``, never by its manifest
        (``close`` frees the reserve first, so the last manifest finds room)."""
        try:
            write_json_atomic(self.dir / "run.json", self.manifest)
        except OSError as exc:
            self._stop("run.json", exc, 0)
        if self.rescue is not None:  # the rescue folder reads as a run folder of its own
            try:
                write_json_atomic(self.rescue / "run.json", self.manifest)
            except OSError:
                pass

    def _keep_elsewhere(self, name: str, document: Any) -> None:
        try:
            self.rescue = self.rescue or rescue_dir(self.run_id)
            write_json_atomic(self.rescue / name, document)
        except (OSError, ResultsError) as exc:
            self.lost.append(f"{name} ({exc})")
            return
        self.rescued.append(name.removesuffix(".json"))
        self.manifest["rescued"] = {"folder": str(self.rescue), "cells": self.rescued}

    def add(self, result: CellResult) -> Path:
        """Keep a finished cell: its document in the run folder, else in the rescue folder
        and ``DiskFull`` (the run stops).  ``DiskFull`` too, once the cell is kept, when the
        folder has no room left for the next cell."""
        name, document = f"{result.id}.json", result.to_dict()
        path = self.dir / name
        try:
            write_json_atomic(path, document)
            self.manifest["finished"].append(result.id)
        except OSError as exc:
            self._stop(name, exc, len(json.dumps(document, indent=2)))
            self._keep_elsewhere(name, document)
        self._save_manifest()
        if self.stopped is not None:
            raise DiskFull(self.stopped + self._where())
        if set(self.manifest["planned"]) - set(self.manifest["finished"]) or not self.manifest["planned"]:
            self.check_room()  # before the next cell
        return path

    def _where(self) -> str:
        where = f"; what was measured is kept in {self.rescue} ({', '.join(self.rescued)})" if self.rescued else ""
        if self.lost:
            where += f"; LOST, no folder could take it: {'; '.join(self.lost)}"
        if not where:
            where = "; every finished cell is in the run folder" if self.manifest["finished"] else "; no cell was measured"
        return where

    def check_room(self) -> None:
        """``DiskFull`` when no further cell may start: a write has failed, or the folder has
        less than ``min_free_bytes()`` free (checked before each cell)."""
        if self.stopped is None:
            free, need = free_bytes(self.dir), min_free_bytes()
            if free is not None and free < need:
                self.stopped = (f"DISK FULL: {self.dir} has {_mib(free)} free, a cell needs {_mib(need)} for its "
                                f"documents and logs ({MIN_FREE_ENV}); the run stopped before its next cell")
                self.manifest["stopped"] = self.stopped
                self._save_manifest()
        if self.stopped is not None:
            raise DiskFull(self.stopped + self._where())

    def annotate(self, key: str, value: Any) -> None:
        """Keep a run-level figure (the measurement overhead, say) in the manifest."""
        self.manifest[key] = value
        self._save_manifest()

    def close(self, *, interrupted: bool = False) -> None:
        done = set(self.manifest["finished"])
        complete = not interrupted and self.stopped is None and all(cell in done for cell in self.manifest["planned"])
        self.manifest["state"] = "complete" if complete else "partial"
        self.manifest["finished_at"] = utc_now()
        self._reserve.unlink(missing_ok=True)
        self._save_manifest()
