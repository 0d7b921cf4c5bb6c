"""``python -m harness.gpukit.summarize WORK --out first-light.md``: the first-light call's figures
in one page (the tables docs/measured.md's GPU section is made from).

Reads what ``first_light.sh`` left in WORK: the gpu-slice result documents
(``results/runs/<run>/*.json`` and the run's manifest with the overhead check),
``reference.json`` (bare loop and bare Trainer), ``ceilings.json`` and ``gpu-checks.json``.
A part that is missing is said to be missing; nothing here measures anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from ..results import ResultsError, read_result
from ..store.runs import run_folders

GIB = 2**30


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value: Any, spec: str = ".1f", scale: float = 1.0) -> str:
    return "-" if not isinstance(value, (int, float)) else format(value / scale, spec)


def _cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else None


def cells(work: Path) -> tuple[list[Any], dict[str, Any]]:
    """The cells of every run folder in WORK (the newest document of each cell), and the
    run manifests' annotations merged (the overhead check writes a run of its own)."""
    runs = run_folders(work / "results") if (work / "results").is_dir() else []
    found: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    for run in runs:
        manifest.update({k: v for k, v in (_load(run / "run.json") or {}).items() if k == "overhead"})
        for path in sorted(run.glob("*.json")):
            if path.name == "run.json":
                continue
            try:
                result = read_result(path)
            except ResultsError as exc:
                print(f"unreadable: {exc}", file=sys.stderr)
                continue
            found[result.id] = result
    return list(found.values()), manifest


def render(work: Path) -> tuple[str, dict[str, Any]]:
    results, manifest = cells(work)
    reference = _load(work / "reference.json") or {}
    ceilings = _load(work / "ceilings.json") or {}
    checks = _load(work / "gpu-checks.json") or {}
    lines = ["# GPU first light", ""]
    figures: dict[str, Any] = {"cells": {}}

    if ceilings:
        rates = ceilings.get("matmul_tflops", {})
        lines += [f"Device: {ceilings.get('device')}, torch {ceilings.get('torch')}, CUDA {ceilings.get('cuda')}.", "",
                  "Ceilings (median of CUDA-event-timed repeats on random data): matmul TFLOP/s "
                  + ", ".join(f"{k} {_fmt(v)}" for k, v in rates.items())
                  + f"; device copy {_fmt((ceilings.get('copy') or {}).get('gbps'), '.0f')} GB/s (read + written).", ""]
        figures["ceilings"] = {"matmul_tflops": rates, "copy_gbps": (ceilings.get("copy") or {}).get("gbps")}

    if results:
        lines += ["| cell | status | samples/s | CV | TFLOP/s | MFU datasheet | MFU measured | alloc GiB | reserved GiB "
                  "| NVML GiB | J/sample counter | integral | mean P x t | events/wall | accuracy |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results:
            m = r.metrics
            per_repeat = [x.get("train_samples_per_s") for x in r.samples.get("repeats", []) if x.get("train_samples_per_s")]
            cv = _cv(per_repeat)
            n = m.get("train_samples") or 0

            def per_sample(key: str, m=m, n=n) -> float | None:
                return m[key] / n if isinstance(m.get(key), (int, float)) and n else None

            row = {"status": r.status, "train_samples_per_s": m.get("train_samples_per_s"), "repeats": per_repeat,
                   "cv": cv, "achieved_tflops": m.get("achieved_tflops"), "mfu": m.get("mfu"),
                   "mfu_measured_peak": m.get("mfu_measured_peak"), "peak_mem_allocated_bytes": m.get("peak_mem_allocated_bytes"),
                   "peak_mem_reserved_bytes": m.get("peak_mem_reserved_bytes"),
                   "peak_device_mem_used_bytes": m.get("peak_device_mem_used_bytes"),
                   "energy_per_sample_counter_j": per_sample("energy_counter_j"),
                   "energy_per_sample_integral_j": per_sample("energy_integral_j"),
                   "energy_per_sample_mean_power_j": per_sample("energy_mean_power_j"),
                   "event_wall_ratio": m.get("event_wall_ratio"), "eval_accuracy": m.get("eval_accuracy"),
                   "throttled": m.get("throttled"), "disturbed": m.get("disturbed"), "reason": r.reason}
            figures["cells"][r.id] = row
            lines.append(
                f"| {r.id} | {r.status} | {_fmt(row['train_samples_per_s'])} | {_fmt(cv, '.2%')} "
                f"| {_fmt(row['achieved_tflops'])} | {_fmt(row['mfu'], '.1%')} | {_fmt(row['mfu_measured_peak'], '.1%')} "
                f"| {_fmt(row['peak_mem_allocated_bytes'], '.2f', GIB)} | {_fmt(row['peak_mem_reserved_bytes'], '.2f', GIB)} "
                f"| {_fmt(row['peak_device_mem_used_bytes'], '.2f', GIB)} | {_fmt(row['energy_per_sample_counter_j'], '.3f')} "
                f"| {_fmt(row['energy_per_sample_integral_j'], '.3f')} | {_fmt(row['energy_per_sample_mean_power_j'], '.3f')} "
                f"| {_fmt(row['event_wall_ratio'], '.4f')} | {_fmt(row['eval_accuracy'], '.3f')} |")
        lines.append("")
        for r in results:
            if not r.ok:
                lines.append(f"- {r.id}: {r.status}: {(r.reason or '').splitlines()[0] if r.reason else ''}")
        lines.append("")
    else:
        lines += ["No gpu-slice results (the slice step did not run or wrote nothing).", ""]

    # The harness's cost: the bf16 batch-32 cell against the bare Trainer and the bare loop.
    target = next((r for r in results if r.ok and r.spec.precision == "bf16" and r.spec.batch_size == 32
                   and r.spec.padding == "dynamic"), None)
    if reference:
        ctx = reference.get("context_device_used_bytes")
        lines.append(f"CUDA context alone (device memory used after one 1-element tensor): {_fmt(ctx, '.2f', GIB)} GiB.")
        figures["context_device_used_bytes"] = ctx
        per_side = {side: [x["train_samples_per_s"] for x in reference.get(side, [])] for side in ("loop", "trainer")}
        loop, trainer = (statistics.median(per_side[s]) if per_side[s] else None for s in ("loop", "trainer"))
        tokens = {side: sorted({x.get("timed_real_tokens") for x in reference.get(side, [])}) for side in ("loop", "trainer")}
        lines.append(f"Bare loop {_fmt(loop)} samples/s {per_side['loop']}, bare Trainer {_fmt(trainer)} samples/s "
                     f"{per_side['trainer']}; timed real tokens loop {tokens['loop']}, Trainer {tokens['trainer']}.")
        figures["reference"] = {"loop_samples_per_s": per_side["loop"], "trainer_samples_per_s": per_side["trainer"],
                                "timed_real_tokens": tokens}
        if target is not None:
            repeats = [x["train_samples_per_s"] for x in target.samples.get("repeats", []) if x.get("train_samples_per_s")]
            harness = statistics.median(repeats) if repeats else target.metrics["train_samples_per_s"]
            harness_tokens = sum(target.samples.get("step_real_tokens", [])[target.spec.timing_warmup_steps:])
            ratios = {"harness_over_bare_trainer": harness / trainer if trainer else None,
                      "harness_over_bare_loop": harness / loop if loop else None,
                      "bare_trainer_over_bare_loop": trainer / loop if trainer and loop else None}
            figures["ratios"] = {**ratios, "harness_samples_per_s": harness, "harness_timed_real_tokens": harness_tokens}
            lines.append(f"Harness {target.id}: {_fmt(harness)} samples/s (timed real tokens {harness_tokens}); "
                         f"harness / bare Trainer {_fmt(ratios['harness_over_bare_trainer'], '.3f')}, "
                         f"harness / bare loop {_fmt(ratios['harness_over_bare_loop'], '.3f')}, "
                         f"bare Trainer / bare loop {_fmt(ratios['bare_trainer_over_bare_loop'], '.3f')} (goal 0.99).")
        lines.append("")
    overhead = manifest.get("overhead")
    if overhead:
        figures["overhead"] = overhead
        lines += [f"Overhead check (ABBA, separate processes, {overhead.get('cell_id')}): harness / bare Trainer "
                  f"throughput {_fmt(overhead.get('throughput_ratio'), '.3f')}, "
                  f"bare-run noise {_fmt(overhead.get('bare_noise'), '.2%')}.", ""]
    if checks:
        figures["checks"] = checks
        lines += ["GPU checks' figures:", "", "```", json.dumps(checks, indent=1, default=str)[:4000], "```", ""]
    return "\n".join(lines), figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gpukit.summarize")
    parser.add_argument("work", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    text, figures = render(args.work)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"summary: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
