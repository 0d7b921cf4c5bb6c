"""``python -m harness ab SPEC_A SPEC_B``: the same cells in two environments, interleaved.

Each round runs every selected cell once on each side, in a fresh process, alternating
the order (A B, B A, A B, ...), so whatever the machine does over the run (a neighbour,
thermal drift, a cache warming) falls on both sides alike.  Per cell and metric the
verdict comes from all the rounds' samples:

* the change is the Hodges-Lehmann estimate of B/A: the median of the ratios of every
  (A, B) pair of samples;
* its interval is the distribution-free one that goes with the Mann-Whitney U test
  (Moses): the k-th smallest and largest pairwise ratios, k from the exact null
  distribution of U, so it covers the true ratio with at least the stated confidence for
  any distribution of the samples, even with four rounds a side;
* ``slower``/``faster`` (``more memory``/``less memory``) when the whole interval lies past
  the cell's threshold, ``unchanged`` when it lies inside it, ``inconclusive`` otherwise
  ("cannot tell": the machine was too noisy, or the rounds too few, to say on which side
  of the threshold the change is).  The Mann-Whitney p-value is shown beside it.

An A/A run (one spec on both sides) can only say ``slower`` when every pair but a few of
its own samples differ by more than the threshold.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..judge.gate import env_changes
from ..judge.ops import profile_line
from ..judge.phases import side_by_side
from ..judge.thresholds import relative_limit
from ..launch import cell_timeout_s, launch_cell
from ..measure.profile import STEPS_VARIABLE
from ..measure.vocabulary import PHASE_TIMES
from ..results import CellResult, write_json_atomic, write_result
from ..sources import Prefetch
from ..spec import CellSpec
from ..store.runs import new_run_id
from .envs import BuiltEnv

DEFAULT_CONFIDENCE = 0.99  # as the nightly gate: an A/A run must not cry wolf
SPEED = ("train_samples_per_s", "real_tokens_per_s")
MEMORY = ("peak_mem_reserved_bytes", "peak_rss_bytes")
QUALITY = ("eval_accuracy", "eval_f1")


# ---------------------------------------------------------------- the interval


@functools.lru_cache(maxsize=256)
def _u_counts(m: int, n: int) -> tuple[int, ...]:
    """How many of the C(m+n, m) orderings give each value of U (exact null distribution)."""
    # f[i][j][u]: arrangements of i A's and j B's with U = u; built up one sample at a time.
    prev = [[1] + [0] * (m * n) for _ in range(n + 1)]  # i = 0
    for _i in range(1, m + 1):
        cur = [[0] * (m * n + 1) for _ in range(n + 1)]
        cur[0][0] = 1
        for j in range(1, n + 1):
            for u in range(m * n + 1):
                # the largest sample is an A (it beats all j B's) or a B
                cur[j][u] = (prev[j][u - j] if u >= j else 0) + cur[j - 1][u]
        prev = cur
    return tuple(prev[n])


def moses_k(m: int, n: int, confidence: float) -> int:
    """The rank k of the pairwise-difference interval [D(k), D(mn+1-k)]; 0 when m and n are
    too few for any interval at this confidence."""
    alpha = 1 - confidence
    if m * n <= 400:
        counts = _u_counts(m, n)
        total = sum(counts)
        cumulative, c = 0, -1
        for u, count in enumerate(counts):
            if (cumulative + count) / total > alpha / 2:
                break
            cumulative += count
            c = u
        return c + 1  # P(U <= c) <= alpha/2
    from scipy.stats import norm

    z = norm.ppf(1 - alpha / 2)
    return max(0, int(math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))))


@dataclass
class Ratio:
    estimate: float  # Hodges-Lehmann B/A
    low: float
    high: float
    p_value: float | None
    confidence: float


def ratio_interval(a: Sequence[float], b: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> Ratio:
    a = [float(x) for x in a if x and x > 0]
    b = [float(x) for x in b if x and x > 0]
    if not a or not b:
        return Ratio(math.nan, 0.0, math.inf, None, confidence)
    diffs = sorted(math.log(y) - math.log(x) for x in a for y in b)
    estimate = math.exp(statistics.median(diffs))
    k = moses_k(len(a), len(b), confidence)
    low, high = (math.exp(diffs[k - 1]), math.exp(diffs[-k])) if k >= 1 else (0.0, math.inf)
    p = None
    if len(a) >= 2 and len(b) >= 2:
        from scipy.stats import mannwhitneyu

        p = float(mannwhitneyu(b, a, alternative="two-sided").pvalue)
    return Ratio(estimate, low, high, p, confidence)


def verdict_of(ratio: Ratio, threshold: float, *, higher_is_better: bool) -> str:
    """``threshold`` is the allowed relative change (0.05 for 5%)."""
    low, high = 1 - threshold, 1 + threshold
    if math.isnan(ratio.estimate):
        return "inconclusive"
    if low <= ratio.low and ratio.high <= high:
        return "unchanged"
    if ratio.high < low:
        return "slower" if higher_is_better else "less memory"
    if ratio.low > high:
        return "faster" if higher_is_better else "more memory"
    return "inconclusive"


# ---------------------------------------------------------------- the run


@dataclass
class MetricVerdict:
    cell_id: str
    metric: str
    a: list[float]
    b: list[float]
    ratio: Ratio | None
    threshold: float | None
    verdict: str
    note: str = ""

    def line(self) -> str:
        if self.ratio is None:
            return f"{self.cell_id} {self.metric}: {self.verdict} {self.note}".rstrip()
        r = self.ratio
        p = f", Mann-Whitney p={r.p_value:.3f}" if r.p_value is not None else ""
        return (f"{self.cell_id} {self.metric}: {self.verdict}: B/A {r.estimate:.3f} "
                f"[{r.low:.3f}, {r.high:.3f}] ({r.confidence:.0%} interval, threshold +/-{self.threshold:.0%}{p}; "
                f"A median {_median(self.a):.4g}, B median {_median(self.b):.4g}, {len(self.a)}+{len(self.b)} samples)"
                + (f"; {self.note}" if self.note else ""))

    def to_dict(self) -> dict[str, Any]:
        out = {"cell": self.cell_id, "metric": self.metric, "verdict": self.verdict, "a": self.a, "b": self.b,
               "threshold": self.threshold, "note": self.note}
        if self.ratio is not None:
            out.update(ratio=self.ratio.estimate, low=self.ratio.low, high=self.ratio.high, p_value=self.ratio.p_value,
                       confidence=self.ratio.confidence, test="Hodges-Lehmann ratio, Moses / Mann-Whitney U interval")
        return out


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class ABResult:
    run_id: str
    folder: Path
    a: BuiltEnv
    b: BuiltEnv
    env_a: dict[str, Any]
    env_b: dict[str, Any]
    verdicts: list[MetricVerdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    phases: dict[str, str] = field(default_factory=dict)  # cell -> its step's phases, A -> B (medians)
    operators: dict[str, str] = field(default_factory=dict)  # with --profile: cell -> the operators that grew, A -> B

    def changes(self) -> list[str]:
        return env_changes(self.env_a, self.env_b) if self.env_a and self.env_b else []

    def slower(self) -> list[MetricVerdict]:
        return [v for v in self.verdicts if v.verdict in ("slower", "more memory", "out of band")]

    def render(self) -> str:
        lines = [f"A: {self.a.describe()}", f"B: {self.b.describe()}", "what differs, B against A:"]
        lines += [f"  {c}" for c in self.changes()] or ["  nothing (an A/A run)"]
        lines += [v.line() for v in self.verdicts]
        if self.phases:
            lines.append("where the step time went (ms per step, median of the rounds, A -> B):")
            lines += [f"  {cell}: {text}" for cell, text in self.phases.items()]
        if self.operators:
            lines.append("profiles, B against A:")
            lines += [f"  {cell}: {text}" for cell, text in self.operators.items()]
        lines += [f"error: {e}" for e in self.errors]
        lines.append(f"kept: {self.folder}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "a": self.a.describe(), "b": self.b.describe(), "env_a": self.env_a,
                "env_b": self.env_b, "changes": self.changes(), "verdicts": [v.to_dict() for v in self.verdicts],
                "errors": self.errors, "phases": self.phases, "operators": self.operators}


def run_ab(cells: Sequence[CellSpec], a: BuiltEnv, b: BuiltEnv, *, rounds: int = 5, results_dir: Path = Path("results"),
           use_cuda: bool = False, glue_dir: str | None = None, confidence: float = DEFAULT_CONFIDENCE,
           say: Callable[[str], None] = lambda text: None, label: str = "ab", profile: int = 0) -> ABResult:
    """Run ``cells`` ``rounds`` times on each side, interleaved, and judge each metric; with
    ``profile``, then profile that many steps of each cell on each side, in executions of their own."""
    if rounds < 1:
        raise ValueError("--rounds must be at least 1")
    run_id = new_run_id(label)
    folder = Path(results_dir) / "ab" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    samples: dict[tuple[str, str], list[CellResult]] = {}
    result = ABResult(run_id, folder, a, b, {}, {})
    fetched = Prefetch(cells, glue_dir=glue_dir, say=say)  # the same data and weights on both sides, fetched once

    def execute(cell: CellSpec, side: str, env: BuiltEnv, name: str, extra_env: dict[str, str]) -> CellResult:
        """One execution of ``cell`` on ``side``, kept as ``<side>/<name>``; a failure is listed."""
        timeout, _ = cell_timeout_s(cell, use_cuda=use_cuda)
        done = launch_cell(cell, run_id=f"{run_id}-{side}", use_cuda=use_cuda, glue_dir=glue_dir, timeout_s=timeout,
                           keep_logs_in=folder / side, log_name=f"{cell.id}.{name}", python=env.python,
                           max_foreign_cores=1e9, child_env={**fetched.env_for(cell), **extra_env})
        write_result(done, folder / side / name)
        if not done.ok:
            result.errors.append(f"{cell.id} on {side}, {name.replace('-', ' ')}: {done.status}: {done.reason}")
        return done

    for r in range(rounds):
        order = (("A", a), ("B", b)) if r % 2 == 0 else (("B", b), ("A", a))
        for cell in cells:
            for side, env in order:
                say(f"round {r + 1}/{rounds}: {cell.id} on {side} ({env.spec.label})")
                done = execute(cell, side, env, f"round-{r + 1}", {})
                samples.setdefault((side, cell.id), []).append(done)
                if done.env and side == "A" and not result.env_a:
                    result.env_a = done.env
                if done.env and side == "B" and not result.env_b:
                    result.env_b = done.env
    for cell in cells:
        result.verdicts += judge_cell(cell, samples.get(("A", cell.id), []), samples.get(("B", cell.id), []),
                                      confidence)
        text = side_by_side(median_phases(samples.get(("A", cell.id), [])), median_phases(samples.get(("B", cell.id), [])))
        if text:
            result.phases[cell.id] = text
    for cell in cells if profile else []:
        tables = {}
        for side, env in (("A", a), ("B", b)):
            say(f"profile: {cell.id} on {side}, {profile} steps")
            done = execute(cell, side, env, "profile", {STEPS_VARIABLE: str(profile)})
            tables[side] = done.samples.get("profile") if done.ok else None
        result.operators[cell.id] = profile_line(tables["A"], tables["B"], "A")
    write_json_atomic(folder / "ab.json", result.to_dict())
    return result


def median_phases(runs: list[CellResult]) -> dict[str, float]:
    """Each phase's median over the rounds that measured it."""
    out = {}
    for metric in PHASE_TIMES:
        values = [float(r.metrics[metric]) for r in runs if r.ok and r.metrics.get(metric) is not None]
        if values:
            out[metric] = statistics.median(values)
    return out


def judge_cell(cell: CellSpec, a: list[CellResult], b: list[CellResult],
               confidence: float = DEFAULT_CONFIDENCE) -> list[MetricVerdict]:
    ok_a, ok_b = [r for r in a if r.ok], [r for r in b if r.ok]
    out = []
    memory = next((m for m in MEMORY if any(r.metrics.get(m) is not None for r in ok_a + ok_b)), None)
    for metric in (*SPEED, *((memory,) if memory else ())):
        values_a = [float(r.metrics[metric]) for r in ok_a if r.metrics.get(metric) is not None]
        values_b = [float(r.metrics[metric]) for r in ok_b if r.metrics.get(metric) is not None]
        limit = relative_limit(cell.thresholds, metric)
        if not values_a or not values_b:
            out.append(MetricVerdict(cell.id, metric, values_a, values_b, None, limit, "error", "no sample on a side"))
            continue
        ratio = ratio_interval(values_a, values_b, confidence)
        verdict = verdict_of(ratio, limit, higher_is_better=metric in SPEED)
        note = ""
        if verdict == "inconclusive" and (ratio.high < 1 or ratio.low > 1):
            direction = "lower" if ratio.high < 1 else "higher"
            note = f"B is {direction} than A, but the interval crosses the {limit:.0%} threshold"
        if ratio.high == math.inf:
            note = f"too few rounds for a {confidence:.0%} interval (at least {5 if confidence > 0.98 else 4} a side)"
        out.append(MetricVerdict(cell.id, metric, values_a, values_b, ratio, limit, verdict, note))
    if cell.weights == "pretrained" and cell.evaluate:
        out += _quality(cell, ok_a, ok_b)
    return out


def _quality(cell: CellSpec, a: list[CellResult], b: list[CellResult]) -> list[MetricVerdict]:
    """Each side's quality against the gate's band for the cell (the published reference,
    or the cell's own baseline band)."""
    from ..judge.gate import judge

    out = []
    for metric in QUALITY:
        values_a = [float(r.metrics[metric]) for r in a if r.metrics.get(metric) is not None]
        values_b = [float(r.metrics[metric]) for r in b if r.metrics.get(metric) is not None]
        if not values_b:
            continue
        verdict, note = "in band", ""
        for r in b:
            found = [f for f in judge(r, None).findings if f.kind == "quality" and f.metric == metric]
            if found and found[0].verdict == "regression":
                verdict, note = "out of band", found[0].line()
                break
        out.append(MetricVerdict(cell.id, metric, values_a, values_b, None, None, verdict,
                                 note or f"A mean {_mean(values_a)}, B mean {_mean(values_b)}"))
    return out


def _mean(values: Sequence[float]) -> str:
    return f"{statistics.fmean(values):.4f}" if values else "-"
