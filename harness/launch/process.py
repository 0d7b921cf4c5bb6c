"""How a cell is started: a fresh child process per measured execution.

Every repeat, confirmation run and max-batch probe runs in its own interpreter
(``python -m harness.worker``, or ``torchrun ... -m harness.worker`` for ``nproc > 1``),
in a process group of its own.  The parent passes the cell in as a file and reads the
result document back; it never imports CUDA.  While the child runs, the parent

* reads the child's progress (phase and last finished step) from a memory-mapped file,
* watches the machine (``watch.py``: foreign CPU load, other GPU processes, clocks),
* kills the child's whole process group once the cell's timeout (``timeouts.py``) has passed,

and turns a child that died (a signal, a non-zero exit, the OOM killer, a hang) into an
``error`` result that names the signal or exit code, the step it reached and the last
lines of its output (``childio.py``).  The next cell starts in a clean process whatever
happened.  A single-process child is forked from a warm zygote (``zygote_client.py``).
Every child dies with this process, and ends itself a little past its timeout should
nobody be left to end it (``lifeline.py``).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..results import CellResult, ResultsError, utc_now
from ..spec import CellSpec
from ..store.runs import rescue_dir
from . import boot
from . import progress as progress_file
from .childio import TAIL_LINES, ChildOutcome, follow_log, pump_output
from .lifeline import DEADLINE_MARGIN_S, launcher_env
from .timeouts import default_timeout_s
from .watch import Watch
from .zygote_client import ZygoteError, use_zygote, zygote_for

KILL_GRACE_S = 10.0  # between SIGTERM and SIGKILL to a timed-out process group
POLL_S = 0.25
WATCH_EVERY_S = 1.0

# What a child runs (``python -m WORKER``), and what its zygote imports once for every child:
# named here, not imported, so that launching sits below the cell it launches.
WORKER = "harness.worker"
ZYGOTE_PRELOAD = ("harness.runner",)  # torch and the Trainer: about 5 s a fresh interpreter pays


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(pid: int) -> tuple[int | None, int | None]:
    """Non-blocking wait4: (returncode like Popen's, max RSS in bytes) or (None, None)."""
    try:
        done, status, usage = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return -1, None
    if done == 0:
        return None, None
    return os.waitstatus_to_exitcode(status), int(usage.ru_maxrss) * 1024  # Linux reports KiB


class _Child:
    """A started child: its pid (also its process group) and how to wait for it."""

    def __init__(self, pid: int, poll: Any, finish: Any, starter: int | None = None):
        self.pid, self.poll, self.finish, self.starter = pid, poll, finish, starter


def _start(command: list[str], worker_argv: list[str], env: dict[str, str], log_path: Path,
           tail: collections.deque, echo: bool, forked: bool) -> _Child:
    if forked:
        log_path.touch()
        zygote = zygote_for(env, command[0], entry=WORKER, preload=ZYGOTE_PRELOAD)
        stop = threading.Event()
        follower = threading.Thread(target=follow_log, args=(log_path, tail, echo, stop, POLL_S / 2), daemon=True)
        follower.start()
        try:
            pid = zygote.fork(worker_argv, env, log_path)
        except ZygoteError:
            stop.set()
            raise

        def finish() -> None:
            stop.set()
            follower.join(timeout=5)

        return _Child(pid, lambda: zygote.poll(pid), finish, starter=zygote.proc.pid)
    log = log_path.open("wb")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )
    pump = threading.Thread(target=pump_output, args=(proc.stdout, log, tail, echo), daemon=True)
    pump.start()

    def poll() -> tuple[int | None, int | None]:
        returncode, max_rss = _wait(proc.pid)
        if returncode is not None:
            proc.returncode = returncode
        return returncode, max_rss

    def finish_spawned() -> None:
        pump.join(timeout=5)
        log.close()

    return _Child(proc.pid, poll, finish_spawned)


def stop_cleanly_on_sigterm() -> None:
    """A CI timeout sends SIGTERM: turn it into the KeyboardInterrupt pytest handles, so the
    running child's group is ended (``run_child``'s ``finally``) and the run's manifest is
    closed as partial (every finished cell is already on disk)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, interrupt)


def run_child(
    args: list[str],
    *,
    scratch: Path,
    timeout_s: float,
    nproc: int = 1,
    use_cuda: bool = False,
    env: dict[str, str] | None = None,
    echo: bool = False,
    max_foreign_cores: float | None = None,  # None: scaled with the machine's cores (watch.default_max_foreign_cores)
    python: str | None = None,
) -> ChildOutcome:
    """Run ``harness.worker`` with ``args`` in a new process group and watch it.

    The worker gets ``--out``, ``--progress`` and ``--env-out`` in ``scratch``.  With
    ``nproc > 1`` it runs under torchrun, one process per device, in a new interpreter;
    otherwise it is forked from the warm zygote (``HARNESS_LAUNCH=spawn``: a new interpreter).
    """
    out, board, env_out, log_path = (scratch / n for n in ("result.json", "progress", "env.json", "child.log"))
    progress_file.create(board)
    worker_argv = [*args, "--out", str(out), "--progress", str(board), "--env-out", str(env_out)]
    python = python or sys.executable  # another environment's interpreter, for an A/B run
    if nproc > 1:  # torchrun, started so that it ends its ranks when this process dies; each rank bound too
        command = boot.command(python, "harness.launch.lifeline", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={nproc}", boot.BOOT, WORKER, *worker_argv)
    else:
        command = boot.command(python, WORKER, *worker_argv)
    child_env = dict(os.environ if env is None else env)
    child_env.update(launcher_env(deadline_s=timeout_s + KILL_GRACE_S + DEADLINE_MARGIN_S))
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    if nproc > 1:
        child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))

    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    started = time.monotonic()
    returncode = max_rss = None
    timed_out = False
    forked = nproc == 1 and use_zygote()
    try:
        child = _start(command, worker_argv, child_env, log_path, tail, echo, forked)
    except ZygoteError:
        forked = False  # a zygote that cannot start costs speed, never the cell
        child = _start(command, worker_argv, child_env, log_path, tail, echo, forked)
    watch = Watch(child.pid, use_cuda=use_cuda, max_foreign_cores=max_foreign_cores,
                  starters=(child.starter,) if child.starter else ())
    last_watch = started
    try:
        while True:
            returncode, max_rss = child.poll()
            if returncode is not None:
                break
            now = time.monotonic()
            if now - started > timeout_s:
                timed_out = True
                break
            if now - last_watch >= WATCH_EVERY_S:
                watch.sample()
                last_watch = now
            time.sleep(POLL_S)
        if returncode is not None and returncode < 0 and time.monotonic() - started > timeout_s:
            timed_out = True  # it ended itself past its timeout (lifeline.py) while this process could not act
        watched = watch.summary()
    finally:
        # Whatever ended the wait (the child's exit, its timeout, a SIGTERM to us), nothing
        # of the child's group outlives it: dataloader workers, torchrun's ranks, a hang.
        if returncode is None:
            _kill_group(child.pid, signal.SIGTERM)
            deadline = time.monotonic() + KILL_GRACE_S
            while returncode is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
                returncode, max_rss = child.poll()
            _kill_group(child.pid, signal.SIGKILL)
            while returncode is None:
                time.sleep(POLL_S / 5)
                returncode, max_rss = child.poll()
        else:
            _kill_group(child.pid, signal.SIGKILL)
        child.finish()
    wall = time.monotonic() - started
    if forked:
        watched["started_by"] = "zygote fork"

    document = env_doc = None
    if out.exists() and not timed_out:
        try:
            document = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            document = None
    if env_out.exists():
        try:
            env_doc = json.loads(env_out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            env_doc = None
    return ChildOutcome(
        document=document, returncode=returncode, timed_out=timed_out, timeout_s=timeout_s,
        progress=progress_file.read(board), output_tail=list(tail), log=log_path, wall_s=wall,
        max_rss_bytes=max_rss, watch=watched, env=env_doc,
    )


def launch_cell(
    spec: CellSpec,
    *,
    run_id: str,
    use_cuda: bool,
    glue_dir: str | None = None,
    timeout_s: float | None = None,
    show_progress: bool = False,
    keep_logs_in: Path | None = None,
    log_name: str | None = None,
    max_foreign_cores: float | None = None,
    env: dict[str, Any] | None = None,
    python: str | None = None,
    child_env: dict[str, str] | None = None,
) -> CellResult:
    """Fine-tune ``spec`` in a fresh child process; a ``CellResult`` whatever happens.

    A dead or timed-out child gives an ``error`` result whose ``samples["failure"]`` says
    how it died; its whole output is copied to ``keep_logs_in/<log_name>.log``.  ``env`` is
    the environment to record when the child died before it could say its own; ``child_env``
    adds variables to the child's (the sources fetched for it, ``sources.Prefetch``).
    """
    started = utc_now()
    timeout = timeout_s if timeout_s is not None else default_timeout_s(spec, use_cuda=use_cuda)
    with tempfile.TemporaryDirectory(prefix=f"harness-{spec.id}-") as scratch_name:
        scratch = Path(scratch_name)
        spec_file = scratch / "spec.json"
        spec_file.write_text(json.dumps(spec.to_dict()))
        args = ["--spec", str(spec_file), "--run-id", run_id]
        if use_cuda:
            args.append("--cuda")
        if show_progress:
            args.append("--show-progress")
        variables = {**os.environ, **(child_env or {})}
        if glue_dir:
            variables["GLUE_DIR"] = str(glue_dir)
        outcome = run_child(
            args, scratch=scratch, timeout_s=timeout, nproc=spec.nproc, use_cuda=use_cuda, env=variables,
            echo=show_progress, max_foreign_cores=max_foreign_cores, python=python,
        )
        launch = {
            "child_wall_s": outcome.wall_s, "returncode": outcome.returncode, "timeout_s": timeout,
            "max_rss_bytes": outcome.max_rss_bytes, "machine": outcome.watch,
        }
        if outcome.document is not None:
            try:
                result = read_result_document(outcome.document, source=f"{spec.id} child output")
            except ResultsError as exc:
                return _error(spec, run_id, started, outcome, launch, f"its result document is unreadable: {exc}")
            result.samples["launch"] = launch
            if outcome.max_rss_bytes is not None and result.ok:
                result.metrics["process_max_rss_bytes"] = outcome.max_rss_bytes
            disturbed = (outcome.watch or {}).get("disturbed")
            if disturbed and result.ok:
                result.metrics["disturbed"] = disturbed
            return result
        error = _error(spec, run_id, started, outcome, launch, None, fallback_env=env)
        if keep_logs_in is not None:
            error.samples["failure"].update(_keep_log(outcome.log, keep_logs_in, f"{log_name or spec.id}.log", run_id))
        return error


def _keep_log(log: Path, folder: Path, name: str, run_id: str) -> dict[str, str]:
    """Copy a dead child's output into the run folder; where that folder has no room, into
    the run's rescue folder (``results.rescue_dir``), and say so."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return {"log": str(shutil.copyfile(log, folder / name))}
    except OSError as exc:
        (folder / name).unlink(missing_ok=True)
        why = f"could not keep its log in {folder} ({exc.strerror or exc})"
        try:
            return {"log": str(shutil.copyfile(log, rescue_dir(run_id) / name)), "log_note": why}
        except (OSError, ResultsError) as again:
            return {"log_note": f"{why}, nor in a rescue folder ({again})"}


def read_result_document(document: dict[str, Any], *, source: str) -> CellResult:
    return CellResult.from_dict(document, source=source)


def _error(
    spec: CellSpec, run_id: str, started: str, outcome: ChildOutcome, launch: dict[str, Any], reason: str | None,
    *, fallback_env: dict[str, Any] | None = None,
) -> CellResult:
    failure = outcome.failure()
    if reason is not None:
        failure["reason"] = reason
    return CellResult(
        spec=spec, status="error", run_id=run_id, env=outcome.env or fallback_env or {},
        started_at=started, finished_at=utc_now(), reason=failure["reason"],
        samples={"failure": failure, "launch": launch},
    )


__all__ = ["launch_cell", "run_child"]
