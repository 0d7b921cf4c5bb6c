"""compare and report, on two result sets made here: a planted 10% slowdown in two cells
and a changed torch version."""

import csv
import io
import json

import pytest

from harness.__main__ import main
from harness.report.compare import compare
from harness.report.compare_text import render
from harness.report.history import COLUMNS, load_frame
from harness.report.sides import load_side
from harness.results import CellResult
from harness.spec import CellSpec
from harness.store.runs import RunWriter

OLD_ENV = {"hardware_key": "cpu-2x-test", "cpu_model": "test", "cpu_count": 2,
           "libraries": {"torch": "2.12.0", "transformers": "5.23.0"}, "harness_commit": "abc"}
NEW_ENV = dict(OLD_ENV, libraries={"torch": "2.13.0", "transformers": "5.23.0"})

CELLS = [CellSpec(padding=p, batch_size=b, precision=q, max_steps=30)
         for p in ("dynamic", "max_length") for b in (8, 16) for q in ("fp32", "bf16")]
SLOWED = {CELLS[0].id, CELLS[3].id}


def speed(spec):
    base = 100.0 * (2.0 if spec.precision == "bf16" else 1.0) * (1.5 if spec.padding == "dynamic" else 1.0)
    return base * spec.batch_size / 8


def make_run(root, run_id, env, cells, slow=frozenset(), partial=False):
    writer = RunWriter(root, run_id, matrix="t", planned=[c.id for c in cells], env=env)
    for spec in cells:
        sps = speed(spec) * (0.9 if spec.id in slow else 1.0)
        writer.add(CellResult(spec=spec, status="ok", run_id=run_id, env=env, finished_at="2026-11-20T00:00:00Z",
                              metrics={"train_samples_per_s": sps, "real_tokens_per_s": sps * 40, "peak_rss_bytes": 1e9,
                                       "padding_efficiency": 0.6 if spec.padding == "dynamic" else 0.4},
                              samples={"noise": {"train_samples_per_s": 0.01}}))
    writer.close(interrupted=partial)
    return writer.dir


@pytest.fixture
def sides(tmp_path):
    old = make_run(tmp_path / "old", "20261120T000000Z-t", OLD_ENV, CELLS)
    new = make_run(tmp_path / "new", "20261121T000000Z-t", NEW_ENV, CELLS[:-1] + [CellSpec(checkpoint="roberta-base")],
                   slow=SLOWED)
    return old, new


def test_table_verdicts_env_diff_and_one_sided_cells(sides):
    old, new = sides
    c = compare(load_side(old), load_side(new))
    verdicts = {r.cell_id: r.verdict for r in c.rows}
    assert {k for k, v in verdicts.items() if v == "slower"} == SLOWED
    assert all(v == "unchanged" for k, v in verdicts.items() if k not in SLOWED)
    assert c.env_changes == ["torch 2.12.0 -> 2.13.0"]
    assert c.only_old == [CELLS[-1].id] and c.only_new == ["mrpc-roberta-base-dynamic-bs32-fp32"]
    text = render(c)
    assert "torch 2.12.0 -> 2.13.0" in text and "a library, driver or setting comparison" in text
    assert "0.900" in text and f"{CELLS[-1].id} (only in old)" in text
    assert "2 slower or out of band" in text
    table = [line for line in text.splitlines() if line.endswith(tuple(r.cell_id for r in c.rows))]
    assert len(table) == len(c.rows) and max(map(len, text.splitlines())) <= 120
    slowed = next(line for line in table if line.endswith(CELLS[0].id))
    assert slowed.startswith("+") and "±1%" in slowed and "slower" in slowed


def test_only_changed_and_sort_by_ratio(sides):
    old, new = sides
    c = compare(load_side(old), load_side(new))
    text = render(c, only_changed=True, sort="ratio")
    rows = [line for line in text.splitlines() if line.endswith(tuple(r.cell_id for r in c.rows))]
    assert len(rows) == 2 and all(line.startswith("+") for line in rows)
    assert f"{len(c.rows) - 2} unchanged cells not shown" in text
    everything = [line for line in render(c, sort="ratio").splitlines() if line.endswith(tuple(r.cell_id for r in c.rows))]
    assert everything[0].startswith("+"), "worst first"


def test_markdown_and_csv(sides):
    old, new = sides
    c = compare(load_side(old), load_side(new))
    md = render(c, "markdown")
    assert md.startswith("### Comparison") and "| cell" in md and "|---" in md.replace(" ", "")[:10000]
    rows = list(csv.DictReader(io.StringIO(render(c, "csv"))))
    by_id = {r["cell"]: r for r in rows}
    assert float(by_id[CELLS[0].id]["train_samples_per_s_ratio"]) == pytest.approx(0.9)
    assert float(by_id[CELLS[0].id]["train_samples_per_s_change_pct"]) == pytest.approx(-10.0)
    assert float(by_id[CELLS[0].id]["threshold_pct"]) == pytest.approx(-5.0)
    assert float(by_id[CELLS[0].id]["noise_combined_pct"]) == pytest.approx(100 * 0.01 * 2 ** 0.5, rel=1e-3)
    assert by_id[CELLS[0].id]["peak_memory_new_MiB"] == "953.7"
    assert by_id[CELLS[0].id]["verdict"] == "slower"
    assert by_id[CELLS[-1].id]["verdict"] == "only in old"


def test_summary_by_axis_gives_geometric_mean_speedups(sides):
    old, new = sides
    text = render(compare(load_side(old), load_side(new)))
    # bf16 is planted at 2x fp32 and dynamic at 1.5x max_length on both sides.
    lines = text.splitlines()
    line = next(x for x in lines if x.lstrip().startswith("precision") and "bf16" in x)
    assert "2.00x" in line
    line = next(x for x in lines if x.lstrip().startswith("padding") and "dynamic" in x)
    assert "1.50x" in line


def test_exit_status_fails_on_regression_only_when_asked(sides, capsys):
    old, new = sides
    assert main(["compare", str(old), str(new)]) == 0
    assert main(["compare", str(old), str(new), "--fail-on", "regression"]) == 1
    assert main(["compare", str(old), str(old), "--fail-on", "regression"]) == 0
    assert "Comparison" in capsys.readouterr().out


def test_a_results_folder_and_a_benchmark_json_are_sides_too(sides, tmp_path):
    old, new = sides
    bench = tmp_path / "bench.json"
    side = load_side(new)
    bench.write_text(json.dumps({"benchmarks": [
        {"extra_info": {"cell_id": r.id, "result_file": str(new / f"{r.id}.json")}} for r in side.results.values()
    ]}))
    c = compare(load_side(old.parent.parent), load_side(bench))
    assert {r.cell_id for r in c.rows if r.verdict == "slower"} == SLOWED


def test_a_bad_side_is_a_clear_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_the_dataframe_has_the_documented_columns(sides):
    old, new = sides
    frame = load_frame(old.parent)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == len(CELLS) and frame.train_samples_per_s.notna().all()
    assert frame.peak_mem_reserved_bytes.isna().all()  # a CPU run: NaN, not a missing column


def test_a_cell_measured_under_another_recipe_is_flagged(tmp_path):
    cell = CELLS[0]
    old = make_run(tmp_path / "old", "r1", OLD_ENV, [cell])
    new = make_run(tmp_path / "new", "r2", OLD_ENV, [CellSpec(**{**cell.to_dict(), "max_steps": 60})])
    (row,) = compare(load_side(old), load_side(new)).rows
    assert row.verdict == "unchanged" and row.detail == "recipe differs: max_steps 30 -> 60"


def test_compare_judges_with_the_thresholds_the_results_were_produced_under(tmp_path):
    """A matrix that allows -15% (smoke on shared CPUs): 10% slower is `unchanged` in compare,
    as it passes the gate; with the default -5% it is `slower`."""
    loose = [CellSpec(max_steps=30, thresholds=("train_samples_per_s:-15%",))]
    old = make_run(tmp_path / "old", "r1", OLD_ENV, loose)
    new = make_run(tmp_path / "new", "r2", OLD_ENV, loose, slow={loose[0].id})
    assert [r.verdict for r in compare(load_side(old), load_side(new)).rows] == ["unchanged"]
    strict = [CellSpec(max_steps=30)]
    old = make_run(tmp_path / "old2", "r1", OLD_ENV, strict)
    new = make_run(tmp_path / "new2", "r2", OLD_ENV, strict, slow={strict[0].id})
    assert [r.verdict for r in compare(load_side(old), load_side(new)).rows] == ["slower"]


def _pair(tmp_path, ratio, noise, repeats=None):
    from dataclasses import replace

    from harness.report.sides import Side

    spec = CellSpec(max_steps=30)
    base = CellResult(spec=spec, status="ok", run_id="old", env=OLD_ENV, metrics={"train_samples_per_s": 100.0},
                      samples={"noise": {"train_samples_per_s": noise}})
    new = replace(base, run_id="new", metrics={"train_samples_per_s": 100.0 * ratio})
    if repeats:
        base.samples["repeats"] = [{"train_samples_per_s": v} for v in repeats[0]]
        new.samples = {"noise": {"train_samples_per_s": noise}, "repeats": [{"train_samples_per_s": v} for v in repeats[1]]}
    return compare(Side("old", {spec.id: base}, OLD_ENV), Side("new", {spec.id: new}, OLD_ENV))


def test_a_change_inside_wide_noise_is_inconclusive_not_unchanged(tmp_path):
    """0.44x with 80-100% noise was reported `unchanged`: it cannot be told from noise."""
    (row,) = _pair(tmp_path, 0.44, 0.9).rows
    assert row.verdict == "inconclusive" and row.noise == pytest.approx(0.9 * 2 ** 0.5)
    assert "cannot be told from noise" in row.detail
    text = render(_pair(tmp_path, 0.44, 0.9))
    assert "100.0±90%" in text and "44.00±90%" in text and "noise 127%" in text and "1 inconclusive (cannot tell)" in text
    assert _pair(tmp_path, 0.99, 0.01).rows[0].verdict == "unchanged"


def test_with_five_repeats_a_side_compare_uses_the_a_b_interval(tmp_path):
    slow = _pair(tmp_path, 0.8, 0.01, ([100, 101, 99, 100.5, 99.5], [80, 80.5, 79.5, 80.2, 79.8])).rows[0]
    assert slow.verdict == "slower" and slow.interval[1] < 0.95
    same = _pair(tmp_path, 1.0, 0.01, ([100, 101, 99, 100.5, 99.5], [100.2, 100.4, 99.6, 100.1, 99.9])).rows[0]
    assert same.verdict == "unchanged"
    noisy = _pair(tmp_path, 1.0, 0.3, ([100, 140, 70, 110, 90], [95, 130, 75, 105, 120])).rows[0]
    assert noisy.verdict == "inconclusive"


def test_a_damaged_run_manifest_is_one_line_naming_it_for_compare_and_merge(sides, tmp_path, capsys):
    old, new = sides
    (old / "run.json").write_text("{broken")
    assert main(["compare", str(old), str(new)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {old / 'run.json'}: not valid JSON") and "Traceback" not in err, err
    assert main(["merge", str(old.parent.parent), "--into", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert f"{old / 'run.json'}: not valid JSON" in err and "Traceback" not in err, err


def test_a_run_whose_owner_was_killed_reads_as_killed_not_running(sides):
    import subprocess
    import sys

    old, _ = sides
    manifest = json.loads((old / "run.json").read_text())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a real process, now dead: what a SIGKILLed pytest leaves in its manifest
    manifest["state"], manifest["owner"] = "running", dict(manifest["owner"], pid=gone.pid)
    (old / "run.json").write_text(json.dumps(manifest))
    from harness.store import open_store

    (read,) = open_store(old.parent.parent).manifests()
    assert read["state"] == "killed"
    assert load_side(old).partial, "a killed run is no complete side"
