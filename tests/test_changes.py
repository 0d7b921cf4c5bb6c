"""Change points over histories built from real committed runs (``harness changes``)."""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.judge.changes import change_points, find_changes
from harness.results import read_result, write_result

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "runs" / "20261123T202743Z-smoke-cpu"
CELLS = ["mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32", "mrpc-all-MiniLM-L6-v2-max_length-bs8-fp32",
         "mrpc-all-MiniLM-L6-v2-bucketed-bs16-fp32"]
METRIC = "train_samples_per_s"


def night(i: int) -> str:
    return f"202610{1 + i:02d}T020000Z-nightly-cpu"


def build(tmp_path: Path, nights: int = 30, *, step_cell=None, step_from=None, step=0.0, outlier=None, seed=1):
    """``nights`` runs of three real cells, 1% noise; from night ``step_from`` on (1-based)
    transformers is 5.24.0 and ``step_cell`` is ``step`` slower; ``outlier``: (cell, night, factor)."""
    rng = random.Random(seed)
    real = {cell: read_result(RUN / f"{cell}.json") for cell in CELLS}
    for i in range(nights):
        for cell, doc in real.items():
            factor = 1 + rng.gauss(0, 0.01)
            env = dict(doc.env)
            if step_from is not None and i + 1 >= step_from:
                env["libraries"] = dict(env["libraries"], transformers="5.24.0")
                if cell == step_cell:
                    factor *= 1 - step
            if outlier and outlier[0] == cell and outlier[1] == i + 1:
                factor *= outlier[2]
            metrics = dict(doc.metrics, **{METRIC: doc.metrics[METRIC] * factor})
            write_result(replace(doc, run_id=night(i), metrics=metrics, env=env,
                                 finished_at=f"2026-10-{1 + i:02d}T02:10:00Z"), tmp_path / "runs" / night(i))
    return tmp_path


def test_a_5_percent_step_on_the_night_transformers_changed_is_named_and_nothing_else(tmp_path, capsys):
    build(tmp_path, step_cell=CELLS[0], step_from=22, step=0.05)
    assert main(["changes", str(tmp_path), "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(c["cell"], c["metric"]) for c in found] == [(CELLS[0], METRIC)], found
    (change,) = found
    assert change["first_run"] == night(21), "night 22 is the first of the new level"
    assert change["change"] == pytest.approx(-0.05, abs=0.015)
    assert change["env_changes"] == ["transformers 5.23.0 -> 5.24.0"]
    assert change["date"].startswith("2026-10-22")


def test_noise_and_one_bad_night_name_nothing(tmp_path, capsys):
    build(tmp_path, outlier=(CELLS[1], 15, 0.8), seed=7)
    assert find_changes(tmp_path) == []
    assert main(["changes", str(tmp_path)]) == 0
    assert "no change of level" in capsys.readouterr().out


def test_change_points_on_plain_series():
    rng = random.Random(3)
    flat = [100 * (1 + rng.gauss(0, 0.01)) for _ in range(40)]
    assert change_points(flat)[0] == []
    stepped = flat[:25] + [v * 0.9 for v in flat[25:]]
    assert change_points(stepped)[0] == [25]
    assert change_points([5.0] * 4)[0] == [], "too short to have a level on both sides"
