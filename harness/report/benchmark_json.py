"""What pytest-benchmark's JSON holds for a cell (``--benchmark-json``).

Each cell's test records its figures in the benchmark's ``extra_info``: the cell id, status,
result file, hardware key, library versions, spec and verdict, and every numeric metric.
``compare`` reads a file of them back (``extra_info.cell_id`` and ``result_file``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results import CellResult


def extra_info(result: CellResult, path: Path) -> dict[str, Any]:
    """The figures for pytest-benchmark's JSON: flat, numbers and short strings."""
    env = result.env
    info: dict[str, Any] = {
        "cell_id": result.id,
        "status": result.status,
        "result_file": str(path),
        "hardware_key": env.get("hardware_key"),
        "torch": env.get("libraries", {}).get("torch"),
        "transformers": env.get("libraries", {}).get("transformers"),
        "spec": result.spec.to_dict(),
        "verdict": result.verdict.verdict if result.verdict is not None else None,
    }
    info.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) or v is None})
    return info
