"""The results database: SQLite and a real PostgreSQL server started by the tests.

Documents are real committed results (figures, raw samples, environment), copied under
new run ids; every store test runs against both kinds of database.
"""

import json
import shlex
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.judge.window import cell_documents
from harness.report.history import load_frame
from harness.results import CellResult, read_result
from harness.store import StoreError, open_store
from harness.store import sql as sql_module
from harness.store.ingest import ingest
from harness.store.runs import RunWriter
from harness.store.sql import SqlStore
from harness.store.sql_connect import normalize_url

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "results" / "runs" / "20261123T202743Z-smoke-cpu" / "mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32.json"


@pytest.fixture(scope="module")
def real() -> CellResult:
    return read_result(REAL)


def as_run(real: CellResult, run_id: str, batch_size: int = 8, speed: float | None = None) -> CellResult:
    metrics = dict(real.metrics, **({"train_samples_per_s": speed} if speed else {}))
    return replace(real, run_id=run_id, spec=replace(real.spec, batch_size=batch_size), metrics=metrics)


def write_runs(results_dir: Path, real: CellResult, nights: int = 3, cells: int = 2) -> list[str]:
    ids = []
    for n in range(nights):
        writer = RunWriter(results_dir, f"2026110{n + 1}T020000Z-smoke-cpu", matrix="smoke",
                           planned=[as_run(real, "x", 8 * (c + 1)).id for c in range(cells)], env=real.env)
        for c in range(cells):
            writer.add(as_run(real, writer.run_id, 8 * (c + 1), speed=20.0 + n))
        writer.close()
        ids.append(writer.run_id)
    return ids


def dump(store: SqlStore) -> dict:
    with store.engine.connect() as conn:
        return {name: sorted(map(repr, conn.execute(sa.select(table)).all()))
                for name, table in sql_module.metadata.tables.items()}


def test_ingest_loads_every_run_folder_and_twice_changes_nothing(tmp_path, real, store_url):
    write_runs(tmp_path / "results", real)
    with SqlStore(store_url) as store:
        first = ingest(tmp_path / "results", store)
        assert (first.runs, first.cells) == (3, 6)
        before = dump(store)
        again = ingest(tmp_path / "results", store)
        assert (again.runs, again.cells) == (3, 6)
        assert dump(store) == before, "a second ingest changed rows"
        assert store.count("harness_cells") == 6 and store.count("harness_runs") == 3
        assert store.count("harness_measurements") == 6  # one measured execution per cell here
        assert store.schema_version() == sql_module.SCHEMA_VERSION


def test_a_database_and_the_folder_it_was_loaded_from_read_the_same(tmp_path, real, store_url):
    write_runs(tmp_path / "results", real)
    with SqlStore(store_url) as store:
        ingest(tmp_path / "results", store)
        folder = open_store(tmp_path / "results")
        assert [m["run_id"] for m in store.manifests()] == [m["run_id"] for m in folder.manifests()]
        cell = as_run(real, "x", 16).id
        from_db, from_files = cell_documents(store, cell), cell_documents(folder, cell)
        assert [r.to_dict() for r in from_db] == [r.to_dict() for r in from_files]
        assert [r.metrics["train_samples_per_s"] for r in from_db] == [20.0, 21.0, 22.0]
        import pandas as pd

        pd.testing.assert_frame_equal(load_frame(store), load_frame(folder))


def test_a_cell_written_again_is_one_row_with_the_last_document(tmp_path, real, store_url):
    with SqlStore(store_url) as store:
        store.put_cell(as_run(real, "20261101T020000Z-smoke-cpu", speed=10.0))
        store.put_cell(as_run(real, "20261101T020000Z-smoke-cpu", speed=11.0))
        (only,) = store.results()
        assert only.metrics["train_samples_per_s"] == 11.0
        assert store.count() == 1


def test_a_schema_newer_than_the_harness_is_refused_and_an_older_one_is_migrated(tmp_path, real, monkeypatch):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    SqlStore(url).put_cell(as_run(real, "20261101T020000Z-smoke-cpu"))
    calls = []

    def add_note_column(conn):  # what a version-2 migration would do: add a column, keep the rows
        calls.append(1)
        conn.execute(sa.text("ALTER TABLE harness_cells ADD COLUMN note VARCHAR(64)"))

    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(sql_module.MIGRATIONS, 2, add_note_column)
    migrated = SqlStore(url)
    assert migrated.schema_version() == 2 and calls == [1] and migrated.count() == 1
    SqlStore(url)
    assert calls == [1], "a migration ran twice"
    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", 1)
    with pytest.raises(StoreError, match="schema version 2 is newer than this harness reads"):
        SqlStore(url)


@pytest.mark.parametrize("url, fragment", [
    ("mysql://u@h/db", "'mysql' is not supported; use sqlite:///FILE or postgresql://"),
    ("sqlite://", "a store is a file"),
    ("not a url", "is not a database URL"),
])
def test_a_store_url_it_cannot_use_says_what_is_allowed(url, fragment):
    with pytest.raises(StoreError, match=fragment.replace("(", r"\(").replace("/", "/")):
        normalize_url(url)


def test_postgresql_urls_use_psycopg_3():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


WRITER = textwrap.dedent("""
    import sys, time
    from dataclasses import replace
    from harness.results import read_result
    from harness.store.sql import SqlStore

    url, real_path, k, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    real = read_result(real_path)
    run_id = f"20261124T020000Z-night-shard{k}of4"
    manifest = {"run_id": run_id, "matrix": "night", "state": "running", "night": "n1",
                "shard": {"index": k, "count": 4, "selection": []}, "env": real.env, "planned": [], "finished": []}
    while time.time() < start:  # all four open their connections, then write at once
        time.sleep(0.005)
    store = SqlStore(url)
    for i in range(50):
        cell = replace(real, run_id=run_id, spec=replace(real.spec, batch_size=i + 1))
        store.put_cell(cell)
        if i % 10 == 0:
            store.put_cell(cell)  # a retry writes the same cell again
        manifest["finished"].append(cell.id)
        store.put_run(manifest)
    print("ok")
""")


def test_four_runners_writing_50_cells_each_at_once_give_200_rows_and_no_duplicates(tmp_path, store_url):
    import time

    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    start = time.time() + 4
    procs = [subprocess.Popen([sys.executable, str(script), store_url, str(REAL), str(k), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(1, 5)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    with SqlStore(store_url) as store:
        assert store.count("harness_cells") == 200
        assert store.count("harness_runs") == 4
        with store.engine.connect() as conn:
            cells = sql_module.cells_table
            keys = conn.execute(sa.select(cells.c.run_id, cells.c.cell_id)).all()
        assert len(set(keys)) == 200
        assert {len(m["finished"]) for m in store.manifests(night="n1")} == {50}


def test_a_store_that_goes_down_mid_run_loses_nothing_and_is_caught_up(tmp_path, real):
    """A real server stopped between two cells: both land in the run folder, the run says
    the store is behind, and `ingest` after the server is back catches it up."""
    from conftest import start_postgres

    from harness.matrix import Matrix
    from harness.session import BenchmarkRun, RunOptions

    server = start_postgres()
    try:
        url = server.new_database()
        said = []
        run = BenchmarkRun(Matrix(name="smoke", cells=()), RunOptions(results_dir=tmp_path / "results",
                           baselines_dir=tmp_path / "b", store=url), say=said.append)
        first, second = as_run(real, "ignored", 8), as_run(real, "ignored", 16)
        run.planned = [first.id, second.id]
        run_id = run.run_writer().run_id
        run.record(replace(first, run_id=run_id))
        server.stop()
        run.record(replace(second, run_id=run_id))
        run.close(interrupted=False)
        assert sorted(p.name for p in run.writer.dir.glob("mrpc-*.json")) == sorted([f"{first.id}.json", f"{second.id}.json"])
        assert any(line.startswith("STORE BEHIND:") for line in said), said
        assert second.id in run.mirror.behind
        line = run.mirror.behind_line(run.writer.dir)
        assert "STORE BEHIND, the run fails: 1 of 2 cells and the run manifest not written to postgresql" in line
        manifest = json.loads((run.writer.dir / "run.json").read_text())
        assert manifest["store"]["behind"] == sorted(["run", second.id])
        server.start()
        with SqlStore(url) as store:
            assert store.count() == 1
        # the command the line gives, as it is: it catches the store up with this run
        command = shlex.split(line.split("catch up with: ", 1)[1])
        assert command[:3] == ["python", "-m", "harness"] and command[-2:] == ["--run", run_id]
        from harness.__main__ import main

        assert main(command[3:]) == 0
        with SqlStore(url) as store:
            assert sorted(r.id for r in store.results()) == sorted([first.id, second.id])
            assert store.manifests()[0]["state"] == "complete"
    finally:
        server.destroy()


def test_a_run_whose_store_comes_back_before_it_ends_catches_up_by_itself(tmp_path, real):
    """A SQLite file whose folder appears only after the first cell: the run's end writes
    what the store missed, and the manifest says it is in step."""
    folder = tmp_path / "later"
    url = f"sqlite:///{folder / 'h.db'}"
    from harness.matrix import Matrix
    from harness.session import BenchmarkRun, RunOptions

    run = BenchmarkRun(Matrix(name="smoke", cells=()), RunOptions(results_dir=tmp_path / "results",
                       baselines_dir=tmp_path / "b", store=url))
    cell = as_run(real, "ignored", 8)
    run.planned = [cell.id]
    run.record(replace(cell, run_id=run.run_writer().run_id))
    assert cell.id in run.mirror.behind
    folder.mkdir()
    run.close(interrupted=False)
    assert run.mirror.behind == {}
    assert json.loads((run.writer.dir / "run.json").read_text())["store"]["behind"] == []
    with SqlStore(url) as store:
        assert [r.id for r in store.results()] == [cell.id]


def test_a_run_writes_its_cells_to_postgresql_reads_its_history_there_and_the_report_needs_only_the_database(
        bench_project, postgres_server, tmp_path):
    """`pytest --store postgresql://...` on two short cells; their run cloned into five
    earlier nights in the database only; a second run, with an empty results folder, is
    judged from that history; the report is built from the database alone."""
    from harness.__main__ import main

    url = postgres_server.new_database()
    bench = bench_project("two", 8, """
        padding = ["dynamic", "max_length"]
        batch_size = [4]
    """)
    bench.path.joinpath("benchmarks", "two.toml").write_text(bench.path.joinpath("benchmarks", "two.toml").read_text()
        .replace("evaluate = false", 'evaluate = false\nthresholds = ["train_samples_per_s:-60%", "peak_rss_bytes:+60%"]'))
    first = bench.runpytest("--matrix", "two", "-p", "no:cacheprovider", "--store", url)
    first.assert_outcomes(skipped=2)  # new: no baseline and no history yet
    first.stdout.fnmatch_lines(["store: postgresql+psycopg://postgres@127.0.0.1:*/t_* (every cell written)"])
    with SqlStore(url) as store:
        (manifest,) = store.manifests()
        cells = store.results()
        assert len(cells) == 2 and {r.run_id for r in cells} == {manifest["run_id"]}
        assert manifest["state"] == "complete" and manifest["store"]["behind"] == []
        assert cells[0].env["matrix_sha256"] and cells[0].env["packages"]["torch"], "the wider environment record"
        for night in range(5):
            for cell in cells:
                store.put_cell(replace(cell, run_id=f"2026110{night + 1}T020000Z-two-cpu"))
    second = bench.runpytest("--matrix", "two", "-p", "no:cacheprovider", "--store", url,
                             "--results-dir", str(tmp_path / "elsewhere"))
    second.assert_outcomes(passed=2)
    with SqlStore(url) as store:
        latest = store.manifests()[-1]["run_id"]
        verdicts = [r.verdict for r in store.results(run_ids=[latest])]
    assert all(v.baseline_source.startswith("history of 6 good runs") for v in verdicts), verdicts
    out = tmp_path / "report.html"
    assert main(["report", "--store", url, "--output", str(out)]) == 0
    page = out.read_text()
    assert "7 runs, 2 cells" in page and "postgresql+psycopg://postgres@" in page
    assert main(["compare", "--store", url, "20261101T020000Z-two-cpu", "latest"]) == 0
