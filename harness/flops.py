"""Model FLOPs and model FLOPs utilization (MFU) of a training cell.

Training FLOPs of an encoder, per sequence of ``t`` real tokens:
``6 N t + 12 L d t^2`` (PaLM, Appendix B; torchtitan's ``get_num_flop_per_token``), with
``N`` the non-embedding parameters of the layers, ``L`` layers and ``d`` the hidden size.
Only real tokens count (padding is work the hardware does, not work the model needs), so
the collator records, per batch, the real tokens and the sum of squared real lengths.

Peaks are dense (no sparsity), per GPU, from the vendors' datasheets.
"""

from __future__ import annotations

from typing import Any

# name fragment -> {precision: dense TFLOP/s}.  "tf32" is the fp32 cell with TF32 matmuls on.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "H100 80GB HBM3": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4},  # the SXM part's NVML name
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0, "bf16": 835.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "A10G": {"fp32": 31.2, "tf32": 35.0, "fp16": 70.0, "bf16": 70.0},
    "T4": {"fp32": 8.1, "fp16": 65.0},
    "V100": {"fp32": 15.7, "fp16": 125.0},
}
PEAK_SOURCE = "vendor datasheets, dense figures (H100 SXM: 989 TFLOP/s BF16, as in shared/REFERENCES.md)"

_HEAD_PARTS = ("embeddings", "pooler", "classifier", "pre_classifier", "lm_head")


def layer_parameters(model: Any) -> int:
    """Parameters of the transformer layers: everything but embeddings and task heads."""
    return sum(p.numel() for n, p in model.named_parameters() if not any(part in n for part in _HEAD_PARTS))


def training_flops(layer_params: int, num_layers: int, hidden_size: int, real_tokens: int, sum_sq_lengths: int) -> float:
    """6 N per real token plus 12 L d per real token pair within a sequence."""
    return 6.0 * layer_params * real_tokens + 12.0 * num_layers * hidden_size * sum_sq_lengths


def peak_tflops(gpu_name: str | None, precision: str, tf32: bool = False) -> tuple[float | None, str]:
    """The device's dense peak for the cell's precision, or (None, why not)."""
    if not gpu_name:
        return None, "no GPU: MFU is defined against a GPU's peak"
    key = "tf32" if precision == "fp32" and tf32 else precision
    # Longest fragment first, so "H100 PCIe" wins over "H100" and "A100" over "A10".
    for fragment in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if fragment.lower() in gpu_name.lower():
            peak = PEAK_TFLOPS[fragment].get(key)
            if peak is None:
                return None, f"{fragment} has no {key} tensor-core peak in the table"
            return peak, f"{fragment} {key} dense peak {peak} TFLOP/s ({PEAK_SOURCE})"
    return None, f"unknown GPU {gpu_name!r}: no peak in the table (known: {', '.join(PEAK_TFLOPS)})"


def mfu_figures(
    *, layer_params: int, num_layers: int, hidden_size: int, real_tokens: int, sum_sq_lengths: int,
    seconds: float, gpu_name: str | None, precision: str, tf32: bool = False, devices: int = 1,
) -> dict[str, Any]:
    flops = training_flops(layer_params, num_layers, hidden_size, real_tokens, sum_sq_lengths)
    achieved = flops / seconds / 1e12
    peak, why = peak_tflops(gpu_name, precision, tf32)
    return {
        "model_flops": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak * devices if peak else None,
        "mfu": achieved / (peak * devices) if peak else None,
        "mfu_note": why,
    }
