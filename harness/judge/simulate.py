"""The history gate, night after night, on simulated noise: false alarms and detection.

``python -m harness simulate RESULT.json --noise 0.01 [--threshold -3%] [--nights 1000]``

A real stored result is cloned into nights whose samples/s is the result's times
``1 + e`` with ``e`` drawn from a normal of the given relative noise (each night's first
measurement and each confirmation re-run drawn afresh, as separate processes are).  Every
night is judged by the real gate: the window of the last good nights, the prediction
interval, the threshold, the confirmation re-runs, suspect nights and the second-suspect
rule.  The answers:

* false regressions per 1,000 cell-nights on an unchanged level;
* for each step size, the share of steps caught within two nights (a regression verdict
  on the night of the step or the next), over many independent steps.

With ``--noise`` measured on real unchanged runs of a machine class (the between-process
spread of a cell's samples/s), the same simulation answers for that machine.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import replace
from typing import Any

from ..measure.vocabulary import THROUGHPUT
from ..results import CellResult
from .policy import Evidence, decide
from .verdict import Verdict
from .window import DEFAULT_CONFIDENCE, DEFAULT_WINDOW, build_window

METRIC = THROUGHPUT
STEPS = (0.02, 0.03, 0.05, 0.08, 0.10, 0.15, 0.20, 0.25)


def _night(template: CellResult, index: int, speed: float, noise: float) -> CellResult:
    metrics = {k: v for k, v in template.metrics.items() if k not in ("peak_rss_bytes",)}
    metrics[METRIC] = speed
    return replace(template, run_id=f"n{index:06d}", metrics=metrics, verdict=None,
                   samples={"noise": {METRIC: noise}, "repeats": [{"seed": template.spec.seed, METRIC: speed}]})


class Simulation:
    """One cell's nights under the real gate."""

    def __init__(self, template: CellResult, *, noise: float, threshold: str, confirm: int = 2,
                 window: int = DEFAULT_WINDOW, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0):
        self.template = replace(template, spec=replace(template.spec, thresholds=(threshold,)))
        self.noise, self.confirm, self.window, self.confidence = noise, confirm, window, confidence
        self.rng = random.Random(seed)
        self.level = float(template.metrics[METRIC])
        self.history: list[CellResult] = []
        self.count = 0

    def draw(self, factor: float) -> float:
        return self.level * factor * (1 + self.rng.gauss(0, self.noise))

    def night(self, factor: float = 1.0) -> str:
        """Judge one night at ``factor`` times the level, by the gate's own policy; returns its verdict."""
        self.count += 1
        tonight = _night(self.template, self.count, self.draw(factor), self.noise)
        win = build_window(self.history[-3 * self.window:], tonight, size=self.window)  # the recent past suffices
        if len(win.runs) < 5:
            tonight.verdict = Verdict(tonight.id, "new")
            self.history.append(tonight)
            return "new"

        def remeasure(n: int) -> CellResult:
            values = [self.draw(factor) for _ in range(n)]
            return replace(tonight, metrics=dict(tonight.metrics, **{METRIC: statistics.median(values)}),
                           samples={"noise": {METRIC: self.noise},
                                    "repeats": [{"seed": tonight.spec.seed, METRIC: v} for v in values]})

        previous = self.history[-1].verdict if self.history else None
        tonight.verdict = decide(tonight, Evidence(window=win, previous=previous, confidence=self.confidence),
                                 confirm=self.confirm, remeasure=remeasure)
        self.history.append(tonight)
        return tonight.verdict.verdict


def false_alarms(template: CellResult, *, noise: float, threshold: str, nights: int, cells: int = 10,
                 confirm: int = 2, seed: int = 0) -> dict[str, Any]:
    judged = regressions = suspects = 0
    for c in range(cells):
        sim = Simulation(template, noise=noise, threshold=threshold, confirm=confirm, seed=seed * 1000 + c)
        for _ in range(nights // cells):
            verdict = sim.night()
            judged += verdict != "new"
            regressions += verdict == "regression"
            suspects += verdict == "suspect"
    return {"cell_nights": judged, "false_regressions": regressions, "suspect_nights": suspects,
            "per_1000": 1000 * regressions / judged if judged else float("nan")}


def detection(template: CellResult, *, noise: float, threshold: str, step: float, trials: int = 200,
              confirm: int = 2, seed: int = 0) -> float:
    """Share of ``step`` slowdowns caught as a regression on their night or the next."""
    caught = 0
    for t in range(trials):
        sim = Simulation(template, noise=noise, threshold=threshold, confirm=confirm, seed=seed * 100_000 + t)
        for _ in range(DEFAULT_WINDOW):
            sim.night()
        verdicts = [sim.night(1 - step), sim.night(1 - step)]
        caught += "regression" in verdicts
    return caught / trials
