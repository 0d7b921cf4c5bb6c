"""How often does the gate cry wolf, and what is the smallest slowdown it catches?

Both questions are answered from real runs of an unchanged tree against their baselines:

* false alarms: each run's verdict for each cell, with the gate's own confirmation step:
  the confirmation runs that run really measured (``samples["confirmation"]``), or, where
  it made none, the next ``confirm`` runs of the same cell;
* detection: the same real measurements with a planted slowdown applied to their speed
  figures (every figure in the cell's timed region scaled by ``1 - s``), judged by the
  same gate; the smallest ``s`` caught in every case is the reliable detection limit.

    python -m harness calibrate --baselines results/baselines [--matrix M] RUN_DIR [RUN_DIR ...]

With ``--matrix``, each cell is judged with the thresholds that matrix declares now
(the measurements stay what they were).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..matrix import load_matrix
from ..measure.vocabulary import THROUGHPUT, TRAINING_RATES
from ..results import CellResult, read_run
from ..store.baselines import load_baseline
from .gate import judge
from .policy import Evidence, decide, needs_confirmation
from .stats import fold

SPEED_FIGURES = TRAINING_RATES
SLOWDOWNS = (0.02, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40, 0.50)


def slowed(result: CellResult, fraction: float) -> CellResult:
    """The same measurement as if training had run ``fraction`` slower."""
    metrics = dict(result.metrics)
    for name in SPEED_FIGURES:
        if isinstance(metrics.get(name), (int, float)):
            metrics[name] = metrics[name] * (1 - fraction)
    samples = dict(result.samples)
    if samples.get("step_seconds"):
        samples["step_seconds"] = [s / (1 - fraction) for s in samples["step_seconds"]]
    return replace(result, metrics=metrics, samples=samples)


def verdict_with_confirmation(first: CellResult, confirmations: Sequence[CellResult], baseline: CellResult,
                              confirm: int = 2) -> str:
    """The gate's own policy (``policy.decide``) on a recorded measurement: its confirmation
    runs are the recorded ones; with none recorded, the measurement stands for its own
    re-runs (the worst case for false alarms: a noisy first measurement is not cleared)."""
    copy = replace(first, samples=dict(first.samples))  # the policy keeps its runs in the samples
    reruns = fold(list(confirmations)) if confirmations else replace(first, samples=dict(first.samples))
    verdict = decide(copy, Evidence(baseline=baseline), confirm=confirm, remeasure=lambda n: reruns)
    return verdict.verdict


def measured_confirmations(result: CellResult) -> list[CellResult]:
    """The confirmation runs a result carries, as results of their own."""
    return [
        replace(result, metrics={**result.metrics, **figures}, samples={"noise": {}})
        for figures in result.samples.get("confirmation") or []
    ]


def calibrate(baselines_dir: Path, run_dirs: Sequence[Path], confirm: int = 2, matrix: Path | None = None) -> dict:
    thresholds = {c.id: c.thresholds for c in load_matrix(matrix).cells} if matrix else {}
    by_cell: dict[str, list[CellResult]] = defaultdict(list)
    for run_dir in run_dirs:
        for result in read_run(run_dir):
            if result.ok:
                if result.id in thresholds:
                    result = replace(result, spec=replace(result.spec, thresholds=thresholds[result.id]))
                by_cell[result.id].append(result)
    report: dict = {"cells": {}, "false_alarms": 0, "verdicts": 0, "first_crossings": 0, "detection": {}}
    caught = defaultdict(int)
    judged = 0
    for cell_id, runs in sorted(by_cell.items()):
        baseline, _ = load_baseline(baselines_dir, runs[0].env["hardware_key"], cell_id)
        if baseline is None:
            continue
        cell = {"runs": len(runs), "false_alarms": 0, "changes": []}
        for i, first in enumerate(runs):
            others = measured_confirmations(first)
            if not others and len(runs) > 1:
                others = [runs[(i + k) % len(runs)] for k in range(1, confirm + 1)]
            base = baseline.metrics[THROUGHPUT]
            cell["changes"].append(first.metrics[THROUGHPUT] / base - 1)
            if needs_confirmation(judge(first, baseline)):
                report["first_crossings"] += 1
            if verdict_with_confirmation(first, others, baseline, confirm) == "regression":
                cell["false_alarms"] += 1
                cell.setdefault("alarms", []).append(
                    [f.line() for f in judge(first, baseline).regressions()] + [f"run {first.run_id}"]
                )
            for s in SLOWDOWNS:
                if verdict_with_confirmation(slowed(first, s), [slowed(o, s) for o in others], baseline,
                                             confirm) == "regression":
                    caught[s] += 1
            judged += 1
        report["cells"][cell_id] = cell
        report["false_alarms"] += cell["false_alarms"]
    report["verdicts"] = judged
    report["detection"] = {s: caught[s] / judged if judged else 0.0 for s in SLOWDOWNS}
    reliable = [s for s in SLOWDOWNS if judged and caught[s] == judged]
    report["smallest_reliably_caught"] = min(reliable) if reliable else None
    return report
