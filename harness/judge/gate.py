"""What is judged: one verdict per cell over speed, memory and quality together.

Speed and memory are held against the cell's stored baseline (same hardware key).  A
change is a regression only when it is past its threshold *and* past the measured noise
(the larger relative spread of the baseline's repeats and the current repeats; for a
single repeat of a throughput figure, twice the standard error of its mean step time).

Quality is held against a band (``quality.py``); the loss curve of every cell against its
history or baseline, and a lower precision against its fp32 twin (``numerics.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..measure import gpu_identity
from ..measure.env import canonical_name, harness_label
from ..measure.vocabulary import TIME_TO_QUALITY, TRAINING_RATES, kind_of
from ..results import CellResult
from .numerics import numerics_findings, precision_findings
from .phases import grown_phases, where_it_grew, window_phases
from .quality import quality_findings, quality_time_figures
from .thresholds import DEFAULT_THRESHOLDS, GATED_METRICS, Threshold, resolve_thresholds
from .verdict import Finding, Verdict, number
from .window import DEFAULT_CONFIDENCE, MIN_POINTS, Window

# ---------------------------------------------------------------- environment


def env_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every real difference between two environments, as 'torch 2.4.0 -> 2.5.0' lines:
    hardware, driver, every installed package, thread settings, torch's build, the CPU
    governor, the harness commit and the matrix file.  Figures that move by themselves
    (the current clock) are not differences; a figure one record lacks (an older result)
    is not compared."""
    keys = ("gpu_name", "gpu_count", "gpu_driver", "cuda_version", "cpu_model", "cpu_count", "torch_num_threads", "python",
            "platform")
    out = [f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if k in old and k in new and old.get(k) != new.get(k)]
    old_libs, new_libs = old.get("libraries", {}) or {}, new.get("libraries", {}) or {}
    if "packages" in old and "packages" in new:
        # every package; `libraries` (a few of them, the headline) agrees with it in a real record
        old_libs = {canonical_name(k): v for k, v in {**old["packages"], **old_libs}.items()}
        new_libs = {canonical_name(k): v for k, v in {**new["packages"], **new_libs}.items()}
    for name in sorted(set(old_libs) | set(new_libs)):
        if old_libs.get(name) != new_libs.get(name):
            out.append(f"{name} {old_libs.get(name) or '(none)'} -> {new_libs.get(name) or '(none)'}")
    for group, skip in (("threads", ("torch_num_threads",)), ("torch_build", ()), ("cpu_clock", ("mhz",))):
        a, b = old.get(group), new.get(group)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{group}.{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b))
                    if k not in skip and a.get(k) != b.get(k)]
    a, b = old.get("cpu"), new.get("cpu")
    if isinstance(a, dict) and isinstance(b, dict):  # microcode and ISA: the key does not hold them
        out += [f"cpu.{k} {a.get(k)} -> {b.get(k)}" for k in ("vendor", "family", "model", "stepping", "microcode", "isa")
                if k in a and k in b and a[k] != b[k]]
    if isinstance(old.get("gpu"), dict) and isinstance(new.get("gpu"), dict):
        out += gpu_identity.setting_changes(old["gpu"], new["gpu"])
    a, b = old.get("sources"), new.get("sources")
    if isinstance(a, dict) and isinstance(b, dict):  # the data's and the weights' resolved revisions
        out += [f"{name} {a.get(name) or '(none)'} -> {b.get(name) or '(none)'}" for name in sorted(set(a) | set(b))
                if a.get(name) != b.get(name)]
    if old.get("boot_id") and new.get("boot_id") and old["boot_id"] != new["boot_id"]:  # a reboot is a change
        out.append(f"booted {old.get('booted_at')} -> {new.get('booted_at')} (the machine restarted)")
    if harness_label(old) != harness_label(new):
        out.append(f"harness {str(harness_label(old))[:24]} -> {str(harness_label(new))[:24]}")
    if "matrix_sha256" in old and "matrix_sha256" in new and old["matrix_sha256"] != new["matrix_sha256"]:
        out.append(f"matrix file {str(old['matrix_sha256'])[:12]} -> {str(new['matrix_sha256'])[:12]}")
    return out


# ---------------------------------------------------------------- speed and memory


def noise_of(result: CellResult, metric: str) -> float:
    return float((result.samples.get("noise") or {}).get(metric, 0.0) or 0.0)


def speed_findings(
    current: CellResult, baseline: CellResult | None, thresholds: dict[str, Threshold], window: Window | None = None,
    confidence: float = DEFAULT_CONFIDENCE, draws: int = 1,
) -> list[Finding]:
    findings = []
    for metric, threshold in thresholds.items():
        value = current.metrics.get(metric)
        if value is None:
            continue  # e.g. GPU memory figures on a CPU run
        kind = kind_of(metric) if kind_of(metric) in ("memory", "quality") else "speed"
        if window is not None and len(window.values(metric)) >= MIN_POINTS:
            finding = history_finding(metric, kind, float(value), threshold, window, confidence, draws)
            if metric in TRAINING_RATES and (finding.verdict == "regression" or finding.crossed):
                reference = window_phases(window.runs)
                grew = where_it_grew(current.metrics, reference) if finding.verdict == "regression" else ""
                finding = replace(finding, note=f"{finding.note}; {grew}" if grew else finding.note,
                                  grew=grown_phases(current.metrics, reference))
            findings.append(finding)
            continue
        if baseline is None:
            findings.append(Finding(metric, kind, "new", value, threshold=threshold.text))
            continue
        base = baseline.metrics.get(metric)
        if base is None or base == 0:
            findings.append(Finding(metric, kind, "new", value, threshold=threshold.text, note="not in the baseline"))
            continue
        change = (value - base) / base
        noise = max(noise_of(current, metric), noise_of(baseline, metric))
        delta = value - base
        past_threshold = (abs(change) if threshold.relative else abs(delta)) > threshold.limit
        past_noise = abs(change) > noise
        bad = (delta * threshold.bad_direction) > 0
        verdict = "pass"
        if past_threshold and past_noise:
            verdict = "regression" if bad else "improvement"
        note = "past the threshold but within the measured noise" if past_threshold and not past_noise else ""
        grew: tuple[str, ...] = ()
        if verdict == "regression" and metric in TRAINING_RATES:  # where the step's time went
            note = "; ".join(filter(None, (note, where_it_grew(current.metrics, baseline.metrics))))
            grew = grown_phases(current.metrics, baseline.metrics)
        findings.append(Finding(metric, kind, verdict, value, base, change, threshold.text, noise, note,
                                basis="baseline", grew=grew))
    return findings


def history_finding(
    metric: str, kind: str, value: float, threshold: Threshold, window: Window, confidence: float, draws: int = 1
) -> Finding:
    """Against the window's level: a regression only past the threshold *and* outside the
    prediction interval of the window's values (for the mean of ``draws`` measurements:
    the first and its confirmation runs, pooled)."""
    interval = window.interval(metric, confidence, draws)
    centre = interval.mean
    change = (value - centre) / centre if centre else 0.0
    delta = value - centre
    past_threshold = (abs(change) if threshold.relative else abs(delta)) > threshold.limit
    outside = not interval.contains(value)
    bad = (delta * threshold.bad_direction) > 0
    verdict = "pass"
    if past_threshold and outside:
        verdict = "regression" if bad else "improvement"
    pooled = f" for the mean of {draws} measurements" if draws > 1 else ""
    where = (f"history of {interval.n} runs, {confidence:.0%} prediction interval{pooled} "
             f"[{number(interval.low)}, {number(interval.high)}]")
    if past_threshold and not outside:
        where += "; past the threshold but inside the interval"
    elif outside and not past_threshold:
        where += "; outside the interval but within the threshold"
    return Finding(metric, kind, verdict, value, centre, change, threshold.text, interval.relative_half_width, where,
                   crossed=past_threshold and bad, basis="history")


# ---------------------------------------------------------------- hardware-independent figures

# What a cell trains on does not depend on the machine: the same cell, seed and recipe reads
# the same examples in the same order on any CPU or GPU, so these figures are judged against
# the cell's result from any hardware.  A difference means the data, its order or the
# tokenization changed, and the speed figures no longer measure the same work.
INVARIANT_METRICS = ("timed_samples", "train_real_tokens", "train_padded_tokens", "padding_efficiency",
                     "model_flops_per_step")
INVARIANT_TOLERANCE = 1e-3


def figures_at_seed(result: CellResult, seed: int) -> dict[str, Any] | None:
    """The figures ``result`` measured at ``seed``: a multi-seed result keeps each seed's
    in ``samples["repeats"]``, while its headline figures may be another seed's."""
    repeats = result.samples.get("repeats") or []
    seeds = {r.get("seed") for r in repeats}
    if len(seeds) > 1:
        return next((r for r in repeats if r.get("seed") == seed), None)
    return result.metrics if result.spec.seed == seed else None


def invariant_value(m: dict[str, Any], metric: str) -> float | None:
    if metric == "model_flops_per_step":
        flops, steps = m.get("model_flops"), m.get("timed_steps")
        return flops / steps if isinstance(flops, (int, float)) and steps else None
    value = m.get(metric)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def invariant_findings(current: CellResult, reference: CellResult | None) -> list[Finding]:
    if reference is None:
        return []
    where = reference.env.get("hardware_key", "?")
    mine, theirs = figures_at_seed(current, current.spec.seed), figures_at_seed(reference, current.spec.seed)
    if mine is None or theirs is None:
        return []  # no figures of the same seed to hold side by side
    findings = []
    for metric in INVARIANT_METRICS:
        value, base = invariant_value(mine, metric), invariant_value(theirs, metric)
        if value is None or base is None or base == 0:
            continue
        change = (value - base) / base
        if abs(change) <= INVARIANT_TOLERANCE:
            findings.append(Finding(metric, "invariant", "pass", value, base, change, "exact", 0.0, basis="reference"))
        else:
            note = (f"differs from the same cell's {reference.run_id} on {where}: the data, its order or the "
                    "tokenization changed, so the speed figures measure other work")
            findings.append(Finding(metric, "invariant", "regression", value, base, change, "exact", 0.0, note,
                                    basis="reference"))
    return findings


# ---------------------------------------------------------------- the verdict


def judge(
    current: CellResult,
    baseline: CellResult | None,
    *,
    matrix_thresholds: tuple[str, ...] = (),
    baseline_source: str | None = None,
    window: Window | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    elsewhere: CellResult | None = None,
    draws: int = 1,
) -> Verdict:
    """Speed and memory against ``window`` (the cell's recent history) where it holds
    ``MIN_POINTS`` values of a figure, else against ``baseline``; quality against its band;
    the hardware-independent figures against the baseline, the newest run of the window,
    or, where this hardware key has neither, ``elsewhere``: the same cell on another machine."""
    if current.status == "skipped":
        return Verdict(current.id, "skipped", note=current.reason or "")
    if current.status != "ok":
        return Verdict(current.id, "error", note=f"{current.status}: {current.reason}")
    thresholds = resolve_thresholds(DEFAULT_THRESHOLDS, matrix_thresholds, current.spec.thresholds)
    reference = baseline or (window.runs[-1] if window is not None and window.runs else None) or elsewhere
    quality = quality_findings(current, baseline or (elsewhere if reference is elsewhere else None))
    if TIME_TO_QUALITY not in current.metrics:  # the time its quality took to reach the band: gated as speed is
        current.metrics.update(quality_time_figures(current, quality))
    speed = speed_findings(current, baseline, thresholds, window, confidence, draws)
    judged_by_history = any(f.basis == "history" for f in speed)
    env_reference = window.runs[-1] if judged_by_history else baseline
    changes = env_changes(env_reference.env, current.env) if env_reference is not None else []
    findings = (
        speed
        + invariant_findings(current, reference)
        + quality
        + numerics_findings(current, baseline, window, same_environment=env_reference is not None and not changes)
        + precision_findings(current)
    )
    disturbed = current.metrics.get("disturbed")
    if disturbed:  # another load shared the machine: speed says nothing about the code
        findings = [
            replace(f, verdict="unchecked", note=f"not judged: the cell was disturbed ({f.verdict} otherwise)")
            if f.kind == "speed" and f.verdict in ("pass", "regression", "improvement") else f
            for f in findings
        ]
    verdicts = {f.verdict for f in findings}
    if "regression" in verdicts:
        overall = "regression"
    elif disturbed:
        overall = "disturbed"
    elif baseline is None and not judged_by_history:
        overall = "new"
    elif "improvement" in verdicts:
        overall = "improvement"
    else:
        overall = "pass"
    if judged_by_history:
        baseline_source = window.describe()
    note = f"disturbed: {disturbed}; its speed is not judged" if disturbed else ""
    if overall == "new" and reference is not None and reference is elsewhere:
        note = (f"speed and memory need a baseline for {current.env.get('hardware_key')}; token counts, padding "
                f"efficiency, FLOPs per step and quality judged against {elsewhere.env.get('hardware_key')} "
                f"({elsewhere.run_id}): they match")
    if current.metrics.get("throttled"):
        reasons = ", ".join(current.metrics.get("throttle_reasons") or []) or "unknown reasons"
        note = (note + "; " if note else "") + (
            f"the GPU throttled during training ({reasons}): its speed figures understate the hardware"
        )
    return Verdict(current.id, overall, findings, changes, baseline_source, note=note)


__all__ = ["GATED_METRICS", "Finding", "Verdict", "env_changes", "judge"]
