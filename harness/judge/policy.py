"""The verdict policy, in one place: judge, confirm, suspect, and a second suspect night.

``decide`` is what a night does with one cell's measurement; the session (``session.py``),
the simulated nights (``simulate.py``) and the calibration on real runs (``calibrate.py``)
all call it, so the false-alarm and detection figures measure the policy that gates:

1. judge the measurement (``gate.judge``): against the cell's history window where it has
   one, else its baseline file, quality against its band;
2. a speed or memory regression, or (against history) a crossing inside the one-night
   interval, is measured again: ``confirm`` re-runs, judged pooled with the first;
3. a crossing the re-runs do not repeat, or one with no re-runs to confirm it, is
   ``suspect``: the night passes, loudly;
4. a second suspect night in a row, on the same figure in the same direction, is a
   regression: the level moved.

Where the re-runs come from is the caller's: real child processes (the session), draws
from a noise model (``simulate``), or recorded runs (``calibrate``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..measure.vocabulary import GATED
from ..results import CellResult
from .gate import judge
from .verdict import Verdict
from .window import DEFAULT_CONFIDENCE, Window


@dataclass(frozen=True)
class Evidence:
    """What a cell's measurement is held against."""

    baseline: CellResult | None = None  # the stored baseline of this hardware key
    baseline_source: str | None = None  # where it was read
    window: Window | None = None  # the cell's recent history, when it holds enough runs
    elsewhere: CellResult | None = None  # the same cell on other hardware (hardware-independent figures)
    previous: Verdict | None = None  # the previous night's verdict of this cell
    confidence: float = DEFAULT_CONFIDENCE


# Measures the cell again ``n`` times and returns the runs folded into one result, or None
# when no re-run can be had (calibrate, at the end of the recorded runs).
Remeasure = Callable[[int], "CellResult | None"]


def decide(result: CellResult, evidence: Evidence, *, confirm: int, remeasure: Remeasure | None = None,
           say: Callable[[str], None] = lambda text: None) -> Verdict:
    """The night's verdict for one measured cell."""
    verdict = judge(result, evidence.baseline, baseline_source=evidence.baseline_source, window=evidence.window,
                    confidence=evidence.confidence, elsewhere=evidence.elsewhere)
    if not needs_confirmation(verdict):
        return verdict
    confirmed = None
    if confirm > 0 and remeasure is not None:
        crossing = next(f for f in verdict.findings if f.verdict == "regression" or f.crossed)
        say(f"{result.id}: {crossing.line()}; confirming with {confirm} re-runs")
        confirmed = remeasure(confirm)
    if confirmed is not None:
        verdict = confirm_verdict(verdict, result, confirmed, evidence)
    else:
        why = "no confirmation runs (--confirm 0)" if confirm <= 0 else "no confirmation runs could be had"
        verdict = suspect_verdict(verdict, why)
    return repeated_suspect(verdict, evidence.previous)


def needs_confirmation(verdict: Verdict) -> bool:
    """A speed or memory regression is re-measured before it fails; quality is not (seeds
    are).  Against history, so is a figure past its threshold but still inside the one-night
    interval: its confirmation runs, pooled with it, are held to the narrower interval of a
    mean of several measurements, which is how small steps are caught on quiet machines."""
    return any(f.kind in ("speed", "memory") and (f.verdict == "regression" or (f.crossed and f.basis == "history"))
               for f in verdict.findings)


def confirm_verdict(first: Verdict, result: CellResult, confirmed: CellResult, evidence: Evidence) -> Verdict:
    """The verdict once the confirmation runs are in: speed and memory from them, quality
    from the first measurement.  The runs' figures are kept in the result's samples.
    A crossing the re-runs do not repeat is ``suspect`` (see ``suspect_verdict``)."""
    if not confirmed.ok:
        return first
    draws = 1
    if evidence.window is not None:  # against history: the first measurement and its re-runs, pooled
        runs = [result.metrics, *(confirmed.samples.get("repeats") or [confirmed.metrics])]
        pooled = dict(confirmed.metrics)
        for name in GATED:
            values = [r.get(name) for r in runs if isinstance(r.get(name), (int, float))]
            if values:
                pooled[name] = sum(values) / len(values)
        confirmed, draws = replace(confirmed, metrics=pooled), len(runs)
    again = judge(confirmed, evidence.baseline, baseline_source=evidence.baseline_source, window=evidence.window,
                  confidence=evidence.confidence, draws=draws)
    quality = [f for f in first.findings if f.kind == "quality"]
    speed = [f for f in again.findings if f.kind != "quality"]
    runs = [dict(r) for r in confirmed.samples.get("repeats") or [confirmed.metrics]]
    result.samples["first_measurement"] = result.samples.get("repeats")
    result.samples["confirmation"] = runs
    if any(f.verdict == "regression" for f in speed) or any(f.verdict == "regression" for f in quality):
        return Verdict(result.id, "regression", speed + quality, again.env_changes, again.baseline_source,
                       confirmation=runs)
    if not first.regressions():  # only past the threshold, inside the interval, and not confirmed
        return replace(first, confirmation=runs, note=(first.note + "; " if first.note else "")
                       + "past a threshold inside the history's interval; the confirmation runs did not confirm it")
    verdict = suspect_verdict(first, "the confirmation runs did not repeat it")
    verdict.confirmation = runs
    return verdict


def suspect_verdict(first: Verdict, why: str) -> Verdict:
    """A speed or memory crossing that was not confirmed: the night passes, loudly.  Its
    crossing findings are kept as ``suspect`` so the next night can tell a level change
    (a second suspect night the same way) from a one-night outlier."""
    findings = [
        replace(f, verdict="suspect", note=(f.note + "; " if f.note else "") + "not confirmed")
        if f.verdict == "regression" and f.kind in ("speed", "memory") else f
        for f in first.findings
    ]
    if any(f.verdict == "regression" for f in findings):  # quality stays a regression
        return replace(first, findings=findings)
    crossed = "; ".join(f.line() for f in findings if f.verdict == "suspect")
    note = f"SUSPECT: {crossed}; {why}. A second night past it the same way is a regression"
    return replace(first, verdict="suspect", findings=findings, note=(first.note + "; " if first.note else "") + note)


def repeated_suspect(verdict: Verdict, previous: Verdict | None) -> Verdict:
    """Tonight suspect, and the previous night suspect on the same metric in the same
    direction: the level moved, and it is a regression."""
    if verdict.verdict != "suspect" or previous is None or previous.verdict != "suspect":
        return verdict
    before = {(f.metric, (f.change or 0) > 0) for f in previous.findings if f.verdict == "suspect"}
    again = [f for f in verdict.findings if f.verdict == "suspect" and (f.metric, (f.change or 0) > 0) in before]
    if not again:
        return verdict
    findings = [
        replace(f, verdict="regression", note=f.note + "; the previous night was past it the same way")
        if f in again else f for f in verdict.findings
    ]
    return replace(verdict, verdict="regression", findings=findings,
                   note="a second consecutive suspect night in the same direction: " + "; ".join(f.line() for f in again))
