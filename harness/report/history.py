"""Every stored run as one pandas DataFrame: one row per cell per run.

The columns are a stable, documented set (``COLUMNS``); a figure a cell did not measure
(GPU memory on a CPU run) is NaN, never a missing column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..measure import vocabulary as v
from ..store import Store, open_store

# The figures of a result the frame keeps, one column each.
_METRICS: dict[str, str] = {
    v.REPEATS: "how many measurements the figures are the median of",
    v.THROUGHPUT: "training samples/s after warmup", v.STEPS_PER_S: "optimizer steps/s after warmup",
    v.REAL_TOKENS_PER_S: "attended tokens/s", v.PADDED_TOKENS_PER_S: "tokens/s including padding",
    v.PADDING_EFFICIENCY: "real / padded tokens", v.EVAL_SAMPLES_PER_S: "evaluation samples/s",
    v.TRAIN_WALL: "wall time of trainer.train()", v.ALLOCATED: "torch allocator peak",
    v.RESERVED: "torch allocator reserved peak", v.DEVICE_USED: "NVML device memory peak",
    v.RSS: "process RSS peak (CPU runs)", v.ACCURACY: "validation accuracy (0-1)",
    v.F1: "validation F1 (0-1)", v.ACHIEVED_TFLOPS: "model TFLOP/s over the timed steps",
    v.MFU: "model FLOPs utilization against the GPU's dense peak (NaN where unknown)",
    v.ENERGY: "GPU energy during training", v.ENERGY_PER_SAMPLE: "GPU energy per trained sample",
    v.THROTTLED: "whether the GPU throttled during training (1/0, NaN on a CPU)",
    v.WORLD_SIZE: "processes of a multi-process cell (1 otherwise)",
}

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
    **_METRICS,
    "quality_reference": "centre of the quality band, in points",
    "quality_lower": "lower edge of the quality band, in points",
}


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
            quality = next((f for f in findings if f.kind == "quality" and f.metric == v.ACCURACY), None)
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
    for name in [*_METRICS, "quality_reference", "quality_lower"]:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame.sort_values(["finished_at", "cell_id"], kind="stable").reset_index(drop=True)
