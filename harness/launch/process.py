"""How a cell is started: a fresh child process per measured execution.

Every repeat, confirmation run and max-batch probe runs in its own interpreter
(``python -m harness.worker``, or ``torchrun ... -m harness.worker`` for ``nproc > 1``),
in a process group of its own.  The parent passes the cell in as a file and reads the
result document back; it never imports CUDA.  While the child runs, the parent

* reads the child's progress (phase and last finished step) from a memory-mapped file,
* watches the machine (``watch.py``: foreign CPU load, other GPU processes, clocks),
* kills the child's whole process group once the cell's timeout has passed,

and turns a child that died (a signal, a non-zero exit, the OOM killer, a hang) into an
``error`` result that names the signal or exit code, the step it reached and the last
lines of its output.  The next cell starts in a clean process whatever happened.
"""

from __future__ import annotations

import atexit
import collections
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ..results import CellResult, ResultsError, utc_now
from ..spec import CellSpec
from . import progress as progress_file
from .watch import Watch

TAIL_LINES = 30  # lines of a dead child's output kept in its error
KILL_GRACE_S = 10.0  # between SIGTERM and SIGKILL to a timed-out process group
POLL_S = 0.25
WATCH_EVERY_S = 1.0

# Default timeout: start-up, plus a budget per training sample and per evaluation sample.
STARTUP_S = 300.0
SECONDS_PER_SAMPLE = {False: 0.5, True: 0.05}  # CPU, GPU: generous, to catch hangs, not slowness


def default_timeout_s(spec: CellSpec, *, use_cuda: bool, n_train: int = 3668, n_eval: int = 408) -> float:
    """Derived from the cell's steps: start-up plus a generous per-sample budget."""
    if spec.max_steps > 0:
        train_samples = spec.max_steps * spec.batch_size * spec.nproc
        evals = 1 if spec.evaluate else 0
    else:
        train_samples = math.ceil(spec.num_train_epochs * n_train)
        evals = (math.ceil(spec.num_train_epochs) + 1) if spec.evaluate else 0
    per_sample = SECONDS_PER_SAMPLE[use_cuda]
    return STARTUP_S + per_sample * (train_samples + 0.5 * evals * n_eval)


def cell_timeout_s(spec: CellSpec, *, use_cuda: bool, override: float | None = None) -> tuple[float, str]:
    """The timeout and where it came from: ``--cell-timeout``, the matrix, or the default."""
    if override is not None:
        return float(override), "--cell-timeout"
    if spec.timeout is not None:
        return float(spec.timeout), "the matrix's `timeout`"
    return default_timeout_s(spec, use_cuda=use_cuda), "the default for its steps"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@dataclass
class ChildOutcome:
    """What the parent saw of one child."""

    document: dict[str, Any] | None  # what the child wrote to its output file, if anything
    returncode: int | None  # negative: killed by that signal
    timed_out: bool
    timeout_s: float
    progress: progress_file.Progress
    output_tail: list[str]
    log: Path  # the child's whole output (stdout and stderr), in the scratch folder
    wall_s: float
    max_rss_bytes: int | None
    watch: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None  # written by the child as soon as it started

    @property
    def died(self) -> bool:
        return self.document is None

    def failure(self, what: str = "the cell's child process") -> dict[str, Any]:
        """Kind, exit code or signal, step reached and output tail; for the error document."""
        code = self.returncode
        info: dict[str, Any] = {
            "returncode": code,
            "signal": signal_name(-code) if code is not None and code < 0 else None,
            "timed_out": self.timed_out,
            "timeout_s": self.timeout_s,
            "phase": self.progress.phase,
            "last_step": self.progress.step,
            "wall_s": self.wall_s,
            "max_rss_bytes": self.max_rss_bytes,
            "output_tail": self.output_tail,
        }
        where = self.progress.text()
        if self.timed_out:
            info["kind"] = "timeout"
            reason = (f"timeout after {self.timeout_s:g} s {where}: {what} was still running, "
                      "so its process group was killed")
        elif code is not None and code < 0:
            info["kind"] = "signal"
            reason = f"{info['signal']}: {what} died of {info['signal']} {where}"
            if -code == signal.SIGKILL:
                rss = f" (its peak RSS was {self.max_rss_bytes / 2**30:.1f} GiB)" if self.max_rss_bytes else ""
                reason += f"; the harness did not send it: the kernel's OOM killer sends SIGKILL when memory runs out{rss}"
        else:
            info["kind"] = "exit"
            reason = f"exit code {code}: {what} exited {where} without writing a result"
        text = "\n".join(self.output_tail)
        if "CUDA error" in text or "CUBLAS_STATUS" in text or "cudaError" in text:
            info["kind"] += "+cuda"
            reason += "; a CUDA error is in its output"
        tail = "\n".join(self.output_tail[-12:])
        info["reason"] = f"{reason}. Its output ends:\n{tail}" if tail else f"{reason}; it printed nothing"
        return info


def _pump(stream: Any, log: Any, tail: collections.deque, echo: bool) -> None:
    for raw in iter(stream.readline, b""):
        log.write(raw)
        log.flush()
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        tail.append(line)
        if echo:
            sys.__stderr__.write(line + "\n")
    stream.close()


def _follow(path: Path, tail: collections.deque, echo: bool, stop: threading.Event) -> None:
    """Read the child's log file as it grows (a forked child writes it directly)."""
    with path.open("rb") as handle:
        pending = b""
        while True:
            chunk = handle.read(1 << 16)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", errors="replace")
                    tail.append(line)
                    if echo:
                        sys.__stderr__.write(line + "\n")
                continue
            if stop.is_set():
                if pending:
                    tail.append(pending.decode("utf-8", errors="replace"))
                return
            time.sleep(POLL_S / 2)


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


# ---------------------------------------------------------------- how the child is started


def use_zygote() -> bool:
    """Single-process cells fork from a warm zygote (``zygote.py``) unless
    ``HARNESS_LAUNCH=spawn`` asks for a new interpreter per execution."""
    return os.environ.get("HARNESS_LAUNCH", "zygote") != "spawn"


# Variables that change from test to test or call to call and that nothing reads at import
# time: they do not call for a new zygote (the child gets the request's environment anyway).
_VOLATILE_ENV = ("PYTEST_CURRENT_TEST", "HARNESS_TEST_FAULT_ONCE", "GLUE_DIR", "PYTHONUNBUFFERED")


class ZygoteError(RuntimeError):
    pass


class Zygote:
    """The launcher's side of ``python -m harness.launch.zygote``."""

    def __init__(self, env: dict[str, str], python: str | None = None):
        self.key = zygote_key(env, python)
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "harness.launch.zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env,
        )
        self._lock = threading.Lock()
        self._next = 0
        self._started: dict[int, int] = {}
        self._ended: dict[int, tuple[int, int | None]] = {}
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(120) or self.proc.poll() is not None:
            self.close()
            raise ZygoteError("the zygote did not start (its imports failed or took over 120 s)")

    def _read(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                if "ready" in message:
                    self._ready.set()
                elif "started" in message:
                    self._started[message["started"]] = message["pid"]
                elif "ended" in message:
                    self._ended[message["ended"]] = (message["returncode"], message.get("max_rss_bytes"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, argv: list[str], env: dict[str, str], log: Path) -> int:
        with self._lock:
            self._next += 1
            request_id = self._next
        request = {"id": request_id, "argv": argv, "env": env, "log": str(log)}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise ZygoteError(f"the zygote is gone ({exc})") from None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self._lock:
                if request_id in self._started:
                    return self._started.pop(request_id)
            if not self.alive():
                raise ZygoteError(f"the zygote exited ({self.proc.returncode}) before it forked the child")
            time.sleep(0.01)
        raise ZygoteError("the zygote did not fork the child within 60 s")

    def poll(self, pid: int) -> tuple[int | None, int | None]:
        with self._lock:
            if pid in self._ended:
                return self._ended.pop(pid)
        if not self.alive():  # the zygote died: its children are orphans we cannot wait for
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return None, None
            except psutil.Error:
                pass
            return -1, None  # gone, or a zombie nobody will report: its exit status is lost
        return None, None

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def zygote_key(env: dict[str, str], python: str | None = None) -> str:
    return json.dumps([python or sys.executable, sorted((k, v) for k, v in env.items() if k not in _VOLATILE_ENV)])


_ZYGOTES: dict[str, Zygote] = {}
MAX_ZYGOTES = 2  # an A/B run alternates two interpreters; both stay warm (an idle zygote uses no CPU)


def zygote_for(env: dict[str, str], python: str | None = None) -> Zygote:
    """The warm zygote for this interpreter and environment; at most two (the least recently
    used retires first)."""
    key = zygote_key(env, python)
    found = _ZYGOTES.pop(key, None)
    if found is not None and not found.alive():
        found.close()
        found = None
    if found is None:
        while len(_ZYGOTES) >= MAX_ZYGOTES:
            _ZYGOTES.pop(next(iter(_ZYGOTES))).close()
        found = Zygote(env, python)
    _ZYGOTES[key] = found  # most recently used last
    return found


@atexit.register
def _close_zygote() -> None:
    while _ZYGOTES:
        _ZYGOTES.pop(next(iter(_ZYGOTES))).close()


class _Child:
    """A started child: its pid (also its process group) and how to wait for it."""

    def __init__(self, pid: int, poll: Any, finish: Any, starter: int | None = None):
        self.pid, self.poll, self.finish, self.starter = pid, poll, finish, starter


def _start(command: list[str], worker_argv: list[str], env: dict[str, str], log_path: Path,
           tail: collections.deque, echo: bool, forked: bool) -> _Child:
    if forked:
        log_path.touch()
        zygote = zygote_for(env, command[0])
        stop = threading.Event()
        follower = threading.Thread(target=_follow, args=(log_path, tail, echo, stop), daemon=True)
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
    pump = threading.Thread(target=_pump, args=(proc.stdout, log, tail, echo), daemon=True)
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
    worker = ["-m", "harness.worker", *worker_argv]
    python = python or sys.executable  # another environment's interpreter, for an A/B run
    if nproc > 1:
        command = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]
    else:
        command = [python, *worker]
    child_env = dict(os.environ if env is None else env)
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
) -> CellResult:
    """Fine-tune ``spec`` in a fresh child process; a ``CellResult`` whatever happens.

    A dead or timed-out child gives an ``error`` result whose ``samples["failure"]`` says
    how it died; its whole output is copied to ``keep_logs_in/<log_name>.log``.  ``env`` is
    the environment to record when the child died before it could say its own.
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
        child_env = dict(os.environ)
        if glue_dir:
            child_env["GLUE_DIR"] = str(glue_dir)
        outcome = run_child(
            args, scratch=scratch, timeout_s=timeout, nproc=spec.nproc, use_cuda=use_cuda, env=child_env,
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
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            kept = keep_logs_in / f"{log_name or spec.id}.log"
            shutil.copyfile(outcome.log, kept)
            error.samples["failure"]["log"] = str(kept)
        return error


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


__all__ = ["ChildOutcome", "cell_timeout_s", "default_timeout_s", "launch_cell", "run_child"]
