"""The loss curve judged in every cell, and a lower precision held against fp32.

Every cell trains real steps and records each step's loss (``measure/numerics.py``); its curve
is summarised by two figures, the mean loss over the timed steps (``train_loss_mean``) and the
mean of its last steps (``train_loss_last``).  The same cell, seed, data and recipe trains the
same curve, so these are held against the cell's history (else its baseline) like speed, with a
band from the runs' own spread and a floor (``FLOOR``): leaving the band either way is a
regression with a ``numerics`` finding that names the step where the curve departs.  A
disturbed machine does not move a loss, so numerics are judged on disturbed nights too.

A cell in fp16 or bf16 whose fp32 twin ran earlier the same night records
``precision_deviation``: the largest relative deviation of its curve from the twin's, both as
running means over ``SMOOTH`` steps, over the steps both trained; past ``PRECISION_TOLERANCE``
it is flagged with the step of departure.

The tolerances, and how they were measured (docs/gate.md, "Numerics"):

* ``PRECISION_TOLERANCE`` 0.12: twice the largest healthy deviation measured, 0.060, between
  bf16 (and fp16) and fp32 on an H200 (bert-base-uncased, 300 steps of MRPC at batch 32,
  results/runs/20261130T002202Z-gpu-slice-gpu, logged every 6 steps, means over 12 steps);
  the mean loss over the timed steps moved by 0.87% there.
* ``FLOOR``: where the environment changed (a library, a driver, the harness), or the
  reference is not deterministic, a numerics change smaller than the precision change above
  is not flagged: 2% on the mean loss (over twice the 0.87%), 5% on the last steps' loss (a
  chaotic curve's end moves more than its mean).
* ``EXACT`` 1e-4: where nothing in the environment changed and the reference is deterministic
  (fp32 on a CPU, or repeats measured identical: ``loss_determinism`` 0.0), the curve is held
  step for step: two such runs train the same losses to the last bit (tests/test_numerics.py),
  so any departure is a fault, and is named with its step.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ..measure.numerics import SMOOTH, smoothed, step_curve
from ..measure.vocabulary import LOSS_LAST, LOSS_MEAN, PRECISION_DEVIATION
from ..results import CellResult
from .verdict import Finding
from .window import Window

LOSS_FIGURES = (LOSS_MEAN, LOSS_LAST)
FLOOR = {LOSS_MEAN: 0.02, LOSS_LAST: 0.05}
EXACT = 1e-4  # a deterministic run with nothing changed retrains its curve to float rounding
SPREADS = 3.0  # the band: this many relative standard deviations of the history's values
PRECISION_TOLERANCE = 0.12
LOWER_PRECISIONS = ("fp16", "bf16")


def curve_of(result: CellResult) -> dict[int, float]:
    return step_curve(result.samples.get("step_losses") or [])


def figures_of(result: CellResult) -> dict[str, float]:
    """The loss figures a result holds, derived from its stored step losses where an older
    document lacks them."""
    from ..measure.numerics import loss_figures

    out = {name: float(result.metrics[name]) for name in LOSS_FIGURES
           if isinstance(result.metrics.get(name), (int, float))}
    if len(out) < len(LOSS_FIGURES) and result.samples.get("step_losses"):
        out = {**loss_figures(result.samples["step_losses"], result.spec.timing_warmup_steps), **out}
    return out


def _deviations(current: dict[int, float], reference: dict[int, float], smooth: int) -> list[tuple[int, float]]:
    """(step, relative deviation) of the smoothed curves, over the steps both trained."""
    mine, theirs = smoothed(current, smooth), smoothed(reference, smooth)
    return [(s, (mine[s] - theirs[s]) / abs(theirs[s])) for s in mine if s in theirs and theirs[s]]


def departure(current: dict[int, float], reference: dict[int, float], tolerance: float,
              smooth: int = SMOOTH) -> tuple[int, float] | None:
    """The first step at which the smoothed current curve is more than ``tolerance`` (relative)
    from the smoothed reference, and its deviation; else the step of the largest deviation."""
    deviations = _deviations(current, reference, smooth)
    if not deviations:
        return None
    return next(((s, d) for s, d in deviations if abs(d) > tolerance), max(deviations, key=lambda sd: abs(sd[1])))


def deterministic(current: CellResult, reference: CellResult) -> bool:
    """Whether ``reference``'s curve is the one ``current`` must train step for step: its repeats
    were measured identical (``loss_determinism`` 0.0), or both ran in fp32 on a CPU, whose
    kernels are deterministic (measured: tests/test_numerics.py)."""
    if reference.metrics.get("loss_determinism") == 0.0:
        return True
    on_cpu = not current.env.get("gpu_name") and not reference.env.get("gpu_name")
    return on_cpu and current.spec.precision == reference.spec.precision == "fp32"


def numerics_findings(current: CellResult, baseline: CellResult | None, window: Window | None,
                      same_environment: bool = False) -> list[Finding]:
    """The loss figures against the history window (where it holds them), else the baseline.

    Where nothing in the environment changed and the reference is deterministic, the curve is
    held step for step (``EXACT``): a departure at any step is a finding.  Otherwise the two
    figures are held to their band (``FLOOR``, or the runs' spread where it is wider)."""
    mine = figures_of(current)
    if not mine:
        return []
    runs = [(r, f) for r in (window.runs if window is not None else []) if (f := figures_of(r))]
    if len(runs) < 2:
        runs = [(baseline, f)] if baseline is not None and (f := figures_of(baseline)) else []
        basis = "baseline"
    else:
        basis = "history"
    if not runs:
        return []
    references, reference_figures = [r for r, _ in runs], [f for _, f in runs]
    where = f"history of {len(references)} runs" if basis == "history" else "baseline"
    reference_curve = curve_of(references[-1])
    exact = same_environment and bool(reference_curve) and deterministic(current, references[-1])
    findings = []
    step_for_step = departure(curve_of(current), reference_curve, EXACT, smooth=1) if exact else None
    if step_for_step is not None and abs(step_for_step[1]) > EXACT:
        step, deviation = step_for_step
        findings.append(Finding(
            "loss_curve", "numerics", "regression", deviation, threshold=f"+/-{EXACT:g}", crossed=True, basis=basis,
            note=f"numerics: the loss curve departs at step {step} ({deviation:+.3%} from the {where}'s curve, which a "
                 "deterministic run with nothing changed in its environment retrains step for step)"))
    else:
        step_for_step = None
    for name, value in mine.items():
        values = [v for figures in reference_figures if (v := figures.get(name)) is not None]
        if not values:
            continue
        centre = statistics.fmean(values)
        spread = statistics.stdev(values) / abs(centre) * SPREADS if len(values) > 1 and centre else 0.0
        noise = max(float((r.samples.get("noise") or {}).get(name, 0.0) or 0.0) for r in [current, *references[-1:]])
        tolerance = max(EXACT if exact else FLOOR[name], spread, noise)
        change = (value - centre) / abs(centre) if centre else math.inf
        band = f"{where}, band +/-{tolerance:.2%}"
        verdict, note = "pass", band
        if abs(change) > tolerance:
            verdict = "regression"
            found = step_for_step or (departure(curve_of(current), reference_curve, tolerance)
                                       if reference_curve else None)
            over = "" if step_for_step else f", running means over {SMOOTH} steps"
            note = (f"numerics: the loss curve left its band ({band}); "
                    + (f"it departs at step {found[0]} ({found[1]:+.2%} from the reference curve{over})" if found
                       else "no reference curve to find the step of departure"))
        findings.append(Finding(name, "numerics", verdict, value, centre, change, f"+/-{tolerance:.2%}",
                                spread, note, crossed=verdict == "regression", basis=basis))
    return findings


def precision_figures(current: CellResult, fp32: CellResult) -> dict[str, Any]:
    """``precision_deviation`` of a lower-precision cell against its fp32 twin of the same night,
    and the step of departure: the first past ``PRECISION_TOLERANCE``, else that of the largest."""
    mine, theirs = curve_of(current), curve_of(fp32)
    largest = departure(mine, theirs, math.inf)
    if largest is None:
        return {}
    deviation = abs(largest[1])
    step = departure(mine, theirs, PRECISION_TOLERANCE)[0]
    return {PRECISION_DEVIATION: deviation, "precision_deviation_step": step, "precision_reference_cell": fp32.id}


def precision_findings(current: CellResult) -> list[Finding]:
    value = current.metrics.get(PRECISION_DEVIATION)
    if not isinstance(value, (int, float)):
        return []
    twin, step = current.metrics.get("precision_reference_cell"), current.metrics.get("precision_deviation_step")
    bad = value > PRECISION_TOLERANCE
    note = (f"numerics: {current.spec.precision} departs from {twin} (fp32, the same night) at step {step}: "
            f"{value:.1%} from its loss curve, past the tolerance {PRECISION_TOLERANCE:.0%}" if bad else
            f"largest deviation from {twin} (fp32) {value:.1%} at step {step}, within {PRECISION_TOLERANCE:.0%}")
    return [Finding(PRECISION_DEVIATION, "numerics", "regression" if bad else "pass", value,
                    threshold=f"<= {PRECISION_TOLERANCE:.0%}", note=note, crossed=bad, basis="reference")]
