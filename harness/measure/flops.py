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

# NVML device name (what ``nvmlDeviceGetName`` and ``torch.cuda.get_device_name`` say) ->
# {precision: dense TFLOP/s}.  "tf32" is the fp32 cell with TF32 matmuls on.  Names match
# exactly (case and a leading "NVIDIA " aside): a substring would give the H200 NVL the SXM
# H200's peak, the L40 the L4's, and a MIG slice the whole card's.
_H100_SXM = {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4}
_A100 = {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0}
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H200": dict(_H100_SXM),  # H200 SXM: the H100 SXM's compute, more and faster memory
    "NVIDIA H200 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.5, "bf16": 835.5},
    "NVIDIA H100 80GB HBM3": dict(_H100_SXM),  # the SXM part
    "NVIDIA H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "NVIDIA H100 NVL": {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0, "bf16": 835.0},
    "NVIDIA A100-SXM4-80GB": dict(_A100),
    "NVIDIA A100-SXM4-40GB": dict(_A100),
    "NVIDIA A100-PCIE-40GB": dict(_A100),
    "NVIDIA A100 80GB PCIe": dict(_A100),
    "NVIDIA L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 362.0, "bf16": 362.0},
    "NVIDIA L40": {"fp32": 90.5, "tf32": 90.5, "fp16": 181.0, "bf16": 181.0},
    "NVIDIA L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0},
    "NVIDIA A10G": {"fp32": 31.2, "tf32": 35.0, "fp16": 70.0, "bf16": 70.0},
    "NVIDIA A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "bf16": 125.0},
    "Tesla T4": {"fp32": 8.1, "fp16": 65.0},
    "Tesla V100-SXM2-16GB": {"fp32": 15.7, "fp16": 125.0},
    "Tesla V100-SXM2-32GB": {"fp32": 15.7, "fp16": 125.0},
    "Tesla V100-PCIE-16GB": {"fp32": 14.0, "fp16": 112.0},
    "Tesla V100-PCIE-32GB": {"fp32": 14.0, "fp16": 112.0},
}
PEAK_SOURCE = "vendor datasheets, dense figures (H100 SXM: 989 TFLOP/s BF16, as in shared/REFERENCES.md)"
MIG_NOTE = "MIG slice: no published peak for a slice"


def _name_key(name: str) -> str:
    """Older drivers leave out the "NVIDIA " some names carry now ("A100-SXM4-40GB")."""
    name = " ".join(name.split()).casefold()
    return name.removeprefix("nvidia ")


_BY_KEY = {_name_key(name): name for name in PEAK_TFLOPS}

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
    if " MIG " in f" {gpu_name} ":  # "NVIDIA H100 80GB HBM3 MIG 1g.10gb": a fraction of the card, not the card
        return None, f"{MIG_NOTE} ({gpu_name})"
    key = "tf32" if precision == "fp32" and tf32 else precision
    name = _BY_KEY.get(_name_key(gpu_name))
    if name is None:
        return None, f"unknown GPU {gpu_name!r}: no peak in the table (known: {', '.join(PEAK_TFLOPS)})"
    peak = PEAK_TFLOPS[name].get(key)
    if peak is None:
        return None, f"{name} has no {key} tensor-core peak in the table"
    return peak, f"{name} {key} dense peak {peak} TFLOP/s ({PEAK_SOURCE})"


def mfu_figures(
    *, layer_params: int, num_layers: int, hidden_size: int, real_tokens: int, sum_sq_lengths: int,
    seconds: float, gpu_name: str | None, precision: str, tf32: bool = False, devices: int = 1,
    measured_peak_tflops: float | None = None,
) -> dict[str, Any]:
    """Achieved TFLOP/s and MFU against the datasheet peak (``peak_tflops`` and ``mfu``: all
    ``devices``), and against ``measured_peak_tflops`` (one device's measured matmul peak,
    when the caller has one) as ``mfu_measured_peak``: even a bare matmul falls short of the
    datasheet's peak, so the measured one says how far the model is from what this device
    does."""
    flops = training_flops(layer_params, num_layers, hidden_size, real_tokens, sum_sq_lengths)
    achieved = flops / seconds / 1e12
    peak, why = peak_tflops(gpu_name, precision, tf32)
    return {
        "model_flops": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak * devices if peak else None,
        "mfu": achieved / (peak * devices) if peak else None,
        "mfu_note": why,
        "measured_peak_tflops": measured_peak_tflops,
        "mfu_measured_peak": achieved / (measured_peak_tflops * devices) if measured_peak_tflops else None,
    }
