"""``python -m harness ceilings --out FILE``: what this device can do, measured here and now.

A datasheet's peak is a lead; MFU against it says how far a cell is from the marketing
figure.  MFU against the rate a large matrix product reaches on the same card, in the same
call, says how far a cell is from what the card can do today (its clocks, its power cap,
its library versions).  This module measures:

* dense matrix products through ``torch.matmul`` on random data (never zeros: a product of
  zeros ran 13% faster on an H200): bf16 and fp16 at 8192^3, fp32 at 4096^3 with TF32 off
  and on (``tf32``);
* a device-to-device copy of 2 GiB (bytes read plus bytes written over the time).

Each figure is the median of CUDA-event-timed repeats after a warm-up, over several input
sets in turn (so that no repeat reads what the last left in the cache), and each product is
checked against a float64 product of a slice of its rows (the relative error is recorded:
bf16 lands near 1e-3 to 1e-2, fp32 far under 1e-3, tf32 near 3e-4).

The harness reads the file named by ``HARNESS_MEASURED_PEAKS`` (``measured_peak_tflops``)
and records each cell's ``mfu_measured_peak`` beside ``mfu``.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

# precision -> (matrix side, torch dtype name, TF32 allowed)
MATMULS: dict[str, tuple[int, str, bool]] = {
    "bf16": (8192, "bfloat16", False),
    "fp16": (8192, "float16", False),
    "fp32": (4096, "float32", False),
    "tf32": (4096, "float32", True),
}
COPY_BYTES = 2 * 2**30
INPUT_SETS = 3
CHECK_ROWS = 64


def _median_ms(fn: Any, repeats: int, warmup: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def matmul_tflops(precision: str, *, repeats: int = 20, warmup: int = 5) -> dict[str, Any]:
    import torch

    n, dtype_name, tf32 = MATMULS[precision]
    dtype = getattr(torch, dtype_name)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        sets = [(torch.randn(n, n, device="cuda", dtype=dtype, generator=gen),
                 torch.randn(n, n, device="cuda", dtype=dtype, generator=gen)) for _ in range(INPUT_SETS)]
        out = torch.empty(n, n, device="cuda", dtype=dtype)
        turn = [0]

        def once() -> None:
            a, b = sets[turn[0] % INPUT_SETS]
            turn[0] += 1
            torch.matmul(a, b, out=out)

        ms = _median_ms(once, repeats, warmup)
        a, b = sets[0]
        out.fill_(float("nan"))  # poisoned: the check sees only what this product wrote
        torch.matmul(a, b, out=out)
        ref = a[:CHECK_ROWS].double() @ b.double()
        got = out[:CHECK_ROWS].double()
        error = float(torch.linalg.norm(got - ref) / torch.linalg.norm(ref))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return {"n": n, "dtype": dtype_name, "tf32": tf32, "median_ms": ms, "tflops": 2 * n**3 / (ms / 1e3) / 1e12,
            "relative_error": error}


def copy_gbps(*, nbytes: int = COPY_BYTES, repeats: int = 20, warmup: int = 3) -> dict[str, Any]:
    import torch

    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src), repeats, warmup)
    same = bool(torch.equal(src[:: 2**20], dst[:: 2**20]))
    return {"bytes": nbytes, "median_ms": ms, "gbps": 2 * nbytes / (ms / 1e3) / 1e9, "copied_correctly": same,
            "counted": "bytes read plus bytes written"}


def measure() -> dict[str, Any]:
    """Every ceiling on device 0; raises RuntimeError without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: the ceilings are a GPU's")
    products = {}
    for precision in MATMULS:
        products[precision] = matmul_tflops(precision)
        torch.cuda.empty_cache()  # its inputs are gone with the call: the next measurement starts clean
    copy = copy_gbps()
    torch.cuda.empty_cache()
    return {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "matmul_tflops": {p: r["tflops"] for p, r in products.items()},
        "matmul": products,
        "copy": copy,
        "method": "torch.matmul on random data, median of 20 CUDA-event-timed repeats after 5 warm-up, "
                  f"{INPUT_SETS} input sets in turn; copy: 2 GiB device to device, read plus written bytes",
    }


def write(out: str | Path) -> dict[str, Any]:
    figures = measure()
    Path(out).write_text(json.dumps(figures, indent=2))
    return figures


MEASURED_PEAKS_ENV = "HARNESS_MEASURED_PEAKS"


def measured_peak_tflops(precision: str, tf32: bool = False) -> float | None:
    """The dense matmul rate measured on this device (``python -m harness ceilings --out
    FILE``, named by ``HARNESS_MEASURED_PEAKS``) for the cell's precision; None without one."""
    path = os.environ.get(MEASURED_PEAKS_ENV)
    if not path:
        return None
    try:
        peaks = json.loads(Path(path).read_text())["matmul_tflops"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    key = "tf32" if precision == "fp32" and tf32 else precision
    value = peaks.get(key)
    return float(value) if isinstance(value, (int, float)) else None
