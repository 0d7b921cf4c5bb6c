"""Every stored run as one pandas DataFrame: one row per cell per run.

The columns are a stable, documented set (``COLUMNS``); a figure a cell did not measure
(GPU memory on a CPU run) is NaN, never a missing column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..measure.vocabulary import ACCURACY
from ..store import Store, open_store

COLUMNS: dict[str, str] = {
    "run_id": "the run folder's name (UTC time stamp and matrix)",
    "run_state": "complete, partial (interrupted) or running",
    "matrix": "the matrix the run expanded",
    "finished_at": "when the cell finished, UTC",
    "cell_id": "the cell's readable id",
    "status": "ok, skipped, oom or error",
    "verdict": "pass, suspect, regression, improvement, new, disturbed, skipped or error (empty if not judged)",
    "task": "task", "checkpoint": "checkpoint", "weights": "pretrained or random",
    "padding": "dynamic, max_length or bucketed", "batch_size": "per-device batch size",
    "precision": "fp32, fp16 or bf16", "max_length": "max sequence length", "seed": "seed",
    "hardware_key": "GPU model and count, or CPU model and cores",
    "gpu_name": "GPU model", "cpu_model": "CPU model", "torch": "torch version", "transformers": "transformers version",
    "repeats": "how many measurements the figures are the median of",
    "train_samples_per_s": "training samples/s after warmup", "train_steps_per_s": "optimizer steps/s after warmup",
    "real_tokens_per_s": "attended tokens/s", "padded_tokens_per_s": "tokens/s including padding",
    "padding_efficiency": "real / padded tokens", "eval_samples_per_s": "evaluation samples/s",
    "train_wall_s": "wall time of trainer.train()", "peak_mem_allocated_bytes": "torch allocator peak",
    "peak_mem_reserved_bytes": "torch allocator reserved peak", "peak_device_mem_used_bytes": "NVML device memory peak",
    "peak_rss_bytes": "process RSS peak (CPU runs)", "eval_accuracy": "validation accuracy (0-1)",
    "eval_f1": "validation F1 (0-1)", "achieved_tflops": "model TFLOP/s over the timed steps",
    "mfu": "model FLOPs utilization against the GPU's dense peak (NaN where unknown)",
    "energy_j": "GPU energy during training", "energy_per_sample_j": "GPU energy per trained sample",
    "throttled": "whether the GPU throttled during training (1/0, NaN on a CPU)",
    "world_size": "processes of a multi-process cell (1 otherwise)",
    "quality_reference": "centre of the quality band, in points",
    "quality_lower": "lower edge of the quality band, in points",
}

_METRICS = [
    "repeats", "train_samples_per_s", "train_steps_per_s", "real_tokens_per_s", "padded_tokens_per_s",
    "padding_efficiency", "eval_samples_per_s", "train_wall_s", "peak_mem_allocated_bytes", "peak_mem_reserved_bytes",
    "peak_device_mem_used_bytes", "peak_rss_bytes", "eval_accuracy", "eval_f1", "achieved_tflops", "mfu",
    "energy_j", "energy_per_sample_j", "throttled", "world_size",
]


def load_frame(store: Store | str | Path) -> pd.DataFrame:
    """One row per cell per run, from a results folder or a database URL."""
    if not isinstance(store, Store):
        store = open_store(store)
    return frame_of(store.runs())


def frame_of(runs: list[tuple[dict[str, Any], list]]) -> pd.DataFrame:
    """The frame of runs already loaded (``Store.runs()``)."""
    rows: list[dict[str, Any]] = []
    for manifest, results in runs:
        for r in results:
            spec, env, m = r.spec, r.env, r.metrics
            findings = r.verdict.findings if r.verdict is not None else []
            quality = next((f for f in findings if f.kind == "quality" and f.metric == ACCURACY), None)
            lower = quality.threshold if quality else None
            rows.append({
                "run_id": manifest["run_id"],
                "run_state": manifest.get("state"),
                "matrix": manifest.get("matrix"),
                "finished_at": pd.to_datetime(r.finished_at, utc=True, errors="coerce"),
                "cell_id": r.id,
                "status": r.status,
                "verdict": r.verdict.verdict if r.verdict is not None else "",
                "task": spec.task, "checkpoint": spec.checkpoint, "weights": spec.weights,
                "padding": spec.padding, "batch_size": spec.batch_size, "precision": spec.precision,
                "max_length": spec.max_length, "seed": spec.seed,
                "hardware_key": env.get("hardware_key"), "gpu_name": env.get("gpu_name"),
                "cpu_model": env.get("cpu_model"),
                "torch": (env.get("libraries") or {}).get("torch"),
                "transformers": (env.get("libraries") or {}).get("transformers"),
                **{name: m.get(name) for name in _METRICS},
                "quality_reference": quality.baseline if quality else None,
                "quality_lower": float(lower.removeprefix(">= ")) if isinstance(lower, str) else None,
            })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for name in _METRICS + ["quality_reference", "quality_lower"]:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame.sort_values(["finished_at", "cell_id"], kind="stable").reset_index(drop=True)
