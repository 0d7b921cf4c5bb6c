"""One run of a matrix: measure each cell in child processes, judge it, keep it.

This is what ``pytest benchmarks/`` does, without pytest: the plugin (``pytest_plugin.py``)
turns its options into ``RunOptions``, hands each cell to ``BenchmarkRun.run_cell`` and
maps the ``Outcome`` it gets back onto passed, skipped or failed.  Everything a verdict
depends on lives here and in the modules it calls (``launch`` starts the children,
``stats`` folds repeats, ``judge/evidence`` gathers what a cell is held against and
``judge/policy`` decides, ``results`` keeps the run folder and ``store/mirror`` the database).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .judge.evidence import gather
from .judge.numerics import LOWER_PRECISIONS, precision_figures
from .judge.ops import profile_line
from .judge.policy import Evidence, decide
from .judge.reproduce import matrix_argument, reproduce_lines
from .judge.stats import fold
from .judge.verdict import Verdict
from .launch import cell_timeout_s, launch_cell
from .launch.quiet import QUIET_WINDOW_S, wait_for_quiet
from .matrix import Matrix
from .measure.profile import DEFAULT_STEPS, STEPS_VARIABLE
from .outcome import Outcome, confirmed_slower, outcome
from .report.live import NightClock, recorded_duration
from .report.summary import judged_summary
from .results import CellResult, ResultsError
from .sources import Prefetch
from .spec import CellSpec
from .store.baselines import load_baseline, write_baseline
from .store.mirror import StoreMirror
from .store.runs import RunWriter, new_run_id


@dataclass(frozen=True)
class RunOptions:
    results_dir: Path
    baselines_dir: Path
    use_cuda: bool = False
    repeats: int = 1
    seeds: int | None = None  # None: every repeat at the cell's own seed
    confirm: int = 2
    cell_timeout_s: float | None = None  # None: the matrix's `timeout`, else derived from the steps
    max_foreign_cores: float | None = None  # None: scaled with the machine's cores
    update_baselines: bool = False
    trainer_progress: bool = False
    glue_dir: str | None = None
    require_baselines: bool = False  # a cell left unjudged (no baseline, still disturbed) fails instead of skipping
    history_dir: Path | None = None  # whose runs form the history (default: results_dir)
    store: str | None = None  # a database URL every cell is also written to, and the history is read from
    shard: tuple[int, int] | None = None  # (I, N): this run is shard I of N of its night's selection
    night: str | None = None  # the id shared by a night's shard runs
    disturbed_retries: int = 2  # how many times a disturbed execution is measured again
    quiet_wait_s: float = 300.0  # the run's whole wait for a quiet machine, over every cell
    profile: bool = False  # a profile execution after every cell (else only after a confirmed speed regression)
    profile_steps: int = DEFAULT_STEPS


class BenchmarkRun:
    """The matrix, the run folder, and every cell result so far."""

    def __init__(self, matrix: Matrix, options: RunOptions, *, say: Callable[[str], None] = lambda text: None,
                 passing: Callable[[str], None] | None = None):
        self.matrix = matrix
        self.options = options
        self.say = say  # lines that stay: each cell's end, its figures and verdict; what went wrong
        self.passing = passing or say  # lines a terminal may overwrite: a cell's start, each execution
        self.clock: NightClock | None = None  # the night's count, elapsed time and estimate
        self._durations: dict[tuple[str, str], float | None] = {}  # (hardware key, cell) -> its baseline's seconds
        self.writer: RunWriter | None = None
        self.results: list[CellResult] = []
        self.planned: list[str] = []  # ids of the cells selected to run, in order
        self.selection: list[str] = []  # with --shard: the whole night's selection, every shard's cells
        # the --store database beside the run folder, and where history is read
        self.mirror = StoreMirror(options.store, options.results_dir, options.history_dir or options.results_dir, say)
        self.updated: list[Path] = []  # baselines written by --update-baselines
        self.refused: list[str] = []  # why --update-baselines wrote no baseline for a cell (one line each)
        self.started = 0  # cells started, for the progress line
        self.quiet_waited = 0.0  # seconds this run has waited for a quiet machine
        self.prefetch: Prefetch | None = None  # the hub's data and weights, fetched before the first cell

    # ------------------------------------------------------------ keeping

    def run_writer(self) -> RunWriter:
        """The run's folder, made when the first cell starts (a run of no cell writes nothing).
        Its environment is the first child's: this process never looks at the GPU."""
        if self.writer is None:
            label = f"{self.matrix.name}-{'gpu' if self.options.use_cuda else 'cpu'}"
            extra: dict = {"matrix_sha256": self.matrix_sha256} if self.matrix_sha256 else {}
            if self.options.night:
                extra["night"] = self.options.night
            if self.options.shard:
                index, count = self.options.shard
                label += f"-shard{index}of{count}"
                extra["shard"] = {"index": index, "count": count, "selection": list(self.selection or self.planned)}
            self.writer = RunWriter(
                self.options.results_dir, new_run_id(label), matrix=self.matrix.name, planned=self.planned, env={},
                extra=extra,
            )
            self.mirror.keep("run", lambda store: store.put_run(self.writer.manifest), self.writer.dir)
            self.writer.check_room()  # room for the first cell (``add`` checks before each next one)
        elif self.writer.stopped:  # the folder filled: no further execution (DiskFull)
            self.writer.check_room()
        return self.writer

    def record(self, result: CellResult) -> Path:
        self.results.append(result)
        if result.env and self.matrix_sha256:
            result.env["matrix_sha256"] = self.matrix_sha256
        writer = self.run_writer()
        if not writer.manifest["env"] and result.env:
            writer.annotate("env", result.env)
        try:
            path = writer.add(result)  # DiskFull: kept in a rescue folder, and the run stops
        finally:
            self.mirror.keep(result.id, lambda store: store.put_cell(result), writer.dir)
            self.mirror.keep("run", lambda store: store.put_run(writer.manifest), writer.dir)
        return path

    def close(self, *, interrupted: bool) -> None:
        if self.writer is None:
            return
        self.writer.close(interrupted=interrupted)
        if not self.options.store:
            return
        self.mirror.catch_up(self.writer.run_id, self.writer.dir)  # from the run folder, which has everything
        self.writer.annotate("store", self.mirror.state())
        self.mirror.keep("run", lambda store: store.put_run(self.writer.manifest), self.writer.dir)
        self.mirror.close()

    @property
    def matrix_sha256(self) -> str | None:
        return matrix_sha256(self.matrix)

    # ------------------------------------------------------------ measuring

    def execute(self, cell: CellSpec, log_name: str | None = None) -> CellResult:
        """One measured execution of ``cell``, in a fresh child process; a disturbed one is
        measured again once the machine has quietened (``launch/quiet.py``), a few times at
        most and within the run's wait budget."""
        log_name = log_name or cell.id
        result = self._launch(cell, log_name)
        reruns = 0
        while result.ok and result.metrics.get("disturbed") and reruns < self.options.disturbed_retries:
            left = self.options.quiet_wait_s - self.quiet_waited
            if left < QUIET_WINDOW_S:
                self.say(f"{cell.id}: disturbed ({result.metrics['disturbed']}); the run's wait for a quiet machine "
                         f"({self.options.quiet_wait_s:g} s) is spent: it stays disturbed")
                break
            self.say(f"{cell.id}: disturbed ({result.metrics['disturbed']}); waiting up to {left:.0f} s for a quiet "
                     f"machine, then measuring it again ({reruns + 1}/{self.options.disturbed_retries})")
            quiet, waited, why = wait_for_quiet(self.options.max_foreign_cores, left, use_cuda=self.options.use_cuda)
            self.quiet_waited += waited
            if not quiet:
                self.say(f"{cell.id}: the machine did not quieten in {waited:.0f} s ({why}): it stays disturbed")
                break
            reruns += 1
            result = self._launch(cell, f"{log_name}.quiet-{reruns}")
        if result.ok and result.metrics.get("disturbed") and self.options.disturbed_retries or reruns:
            result.metrics["disturbed_reruns"] = reruns  # 0: the machine never quietened for one
        return result

    def profile(self, cell: CellSpec, result: CellResult, verdict: Verdict, evidence: Evidence) -> Verdict:
        """A profile execution of the cell (``measure/profile.py``), kept in ``result.samples``; a
        slower verdict names the operators that grew against the other side's profile."""
        self.passing(f"{cell.id}: profiling {self.options.profile_steps} steps in an execution of its own")
        profiled = self._launch(cell, f"{cell.id}.profile", {STEPS_VARIABLE: str(self.options.profile_steps)})
        table = profiled.samples.get("profile") if profiled.ok else None
        if table is None:
            result.samples["profile_error"] = profiled.reason or "no profile came back"
            self.say(f"{cell.id}: the profile execution failed: {result.samples['profile_error']}")
            return verdict
        result.samples["profile"] = table
        other, theirs = "the baseline", (evidence.baseline.samples.get("profile") if evidence.baseline else None)
        recent = next((r for r in reversed(evidence.window.runs if evidence.window else []) if r.samples.get("profile")),
                      None)
        if recent is not None:  # judged against history: its newest profiled run
            other, theirs = f"the history's run {recent.run_id}", recent.samples["profile"]
        if not confirmed_slower(verdict) and not verdict.failed:
            return verdict
        line = profile_line(theirs, table, other)
        return replace(verdict, note=(verdict.note + "; " if verdict.note else "") + line)

    def sources(self, cell: CellSpec) -> Prefetch:
        """Before the first cell: fetch what every planned cell needs from the hub, once."""
        if self.prefetch is None:
            planned = set(self.planned)
            cells = [c for c in self.matrix.cells if c.id in planned] or [cell]
            self.prefetch = Prefetch(cells, glue_dir=self.options.glue_dir, overrides=dict(self.matrix.sources),
                                     say=self.say)
        return self.prefetch

    def _launch(self, cell: CellSpec, log_name: str, extra_env: dict[str, str] | None = None) -> CellResult:
        child_env = {**self.sources(cell).env_for(cell), **(extra_env or {})}
        writer = self.run_writer()
        timeout, _ = cell_timeout_s(cell, use_cuda=self.options.use_cuda, override=self.options.cell_timeout_s)
        last_env = next((r.env for r in reversed(self.results) if r.env), None)
        return launch_cell(
            cell, run_id=writer.run_id, use_cuda=self.options.use_cuda, glue_dir=self.options.glue_dir,
            timeout_s=timeout, show_progress=self.options.trainer_progress, keep_logs_in=writer.dir,
            log_name=log_name, max_foreign_cores=self.options.max_foreign_cores, env=last_env, child_env=child_env,
        )

    def measure(self, cell: CellSpec, count: int, *, vary_seed: bool, what: str = "run") -> CellResult:
        """``count`` executions (stopping at the first that fails), folded into one result."""
        runs = []
        for i in range(count):
            seeded = replace(cell, seed=cell.seed + i) if vary_seed else cell
            seed_note = f", seed {seeded.seed}" if vary_seed else ""
            self.passing(f"[cell {self.started}/{len(self.planned) or '?'}] {cell.id}: {what} {i + 1}/{count}{seed_note}")
            runs.append(self.execute(seeded, log_name=f"{cell.id}.{what}-{i + 1}"))
            if not runs[-1].ok:
                break
        return fold(runs)

    def measure_and_judge(self, cell: CellSpec) -> tuple[CellResult, Verdict, str | None]:
        """Measure the cell, then judge it by the policy (``judge/policy``): against its
        history or baseline, confirming a crossing with re-runs."""
        seeds = self.options.seeds
        count = max(self.options.repeats, seeds or 1)
        self.started += 1
        result = self.measure(cell, count, vary_seed=bool(seeds))
        if result.ok and result.spec.nproc > 1:
            self.add_scaling_efficiency(result)
        if result.ok and result.spec.precision in LOWER_PRECISIONS:
            self.add_precision_deviation(result)
        evidence, baseline_error = gather(
            result, baselines_dir=self.options.baselines_dir, history_of=self.mirror.cell_history,
            history_dir=self.mirror.history_dir, window_size=self.matrix.window, confidence=self.matrix.confidence)
        # --update-baselines writes what it measured: confirming a crossing of the old level is wasted work
        confirm = 0 if self.options.update_baselines else self.options.confirm
        verdict = decide(result, evidence, confirm=confirm, say=self.say,
                         remeasure=lambda n: self.measure(cell, n, vary_seed=False, what="confirmation"))
        if baseline_error:
            verdict = Verdict(result.id, "error", verdict.findings, note=baseline_error)
        elif result.ok and (self.options.profile or confirmed_slower(verdict)):
            verdict = self.profile(cell, result, verdict, evidence)
        result.verdict = verdict
        return result, verdict, baseline_error

    def run_cell(self, cell: CellSpec) -> tuple[CellResult, Path, Outcome]:
        """Measure, judge and keep one cell; what its test should do with it."""
        if self.clock is None:
            self.clock = NightClock(self.planned, self.recorded_s)
        self.passing(self.clock.begin(cell.id))
        result, verdict, baseline_error = self.measure_and_judge(cell)
        path = self.record(result)
        self.say(self.clock.end(result))
        updating = self.options.update_baselines
        if updating and result.ok:
            try:
                self.updated.append(write_baseline(result, self.options.baselines_dir))
            except ValueError as exc:  # a disturbed cell: said, and the other cells' baselines still written
                self.refused.append(str(exc))
                self.say(f"BASELINE NOT WRITTEN: {exc}")
                return result, path, Outcome("skipped", f"baseline not written: {exc}")
        reproduce = reproduce_lines(result.id, matrix_argument(self.matrix.source, self.matrix.name),
                                    gpu=self.options.use_cuda, env_changes=verdict.env_changes)
        return result, path, outcome(result, verdict, baseline_error, updating=updating,
                                     baselines_dir=self.options.baselines_dir,
                                     require_baselines=self.options.require_baselines, reproduce=reproduce)

    def recorded_s(self, cell_id: str) -> float | None:
        """How long the cell took when its baseline was measured (for the night's estimate);
        the hardware key is the last child's (this process never looks at the GPU)."""
        key = next((r.env.get("hardware_key") for r in reversed(self.results) if r.env), None)
        if key is None:
            return None
        if (key, cell_id) not in self._durations:
            try:
                baseline, _ = load_baseline(self.options.baselines_dir, key, cell_id)
            except (ResultsError, ValueError, OSError):  # an unusable baseline is the gate's to say
                baseline = None
            self._durations[(key, cell_id)] = recorded_duration(baseline, max(self.options.repeats,
                                                                              self.options.seeds or 1))
        return self._durations[(key, cell_id)]

    def judged_line(self) -> str:
        """One line: how many cells were judged, how many were not, and why."""
        return judged_summary(self.results)

    def twin_of(self, spec: CellSpec, **differs) -> CellResult | None:
        """The good result measured earlier in this run of the cell ``spec`` with ``differs``
        changed (labels aside): the fp32 twin of an fp16 cell, the single-device twin of a DDP one."""
        twin = replace(spec, label="", **differs)
        return next((r for r in self.results if r.ok and replace(r.spec, label="") == twin), None)

    def add_precision_deviation(self, result: CellResult) -> None:
        """Against the fp32 twin measured earlier this night, when there is one: how far the
        lower precision's loss curve departs from fp32's (``judge/numerics.py``)."""
        single = self.twin_of(result.spec, precision="fp32")
        if single is not None:
            result.metrics.update(precision_figures(result, single))

    def add_scaling_efficiency(self, result: CellResult) -> None:
        """Against the single-device twin measured earlier in this run, when there is one."""
        from .distributed import scaling_efficiency

        single = self.twin_of(result.spec, nproc=1)
        if single is not None:
            result.metrics["scaling_efficiency"] = scaling_efficiency(result, single)
            result.metrics["scaling_reference_cell"] = single.id


def matrix_sha256(matrix: Matrix) -> str | None:
    """The matrix file's hash, kept in every result's environment (None for a matrix made in memory)."""
    import hashlib

    path = Path(matrix.source)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    except OSError:
        return None
