"""A store that fails, driven for real: a server that accepts connections and never answers
(a plain TCP socket), a real PostgreSQL that holds a lock past the statement timeout or is
stopped (SIGSTOP) mid-run, a file that is not a database, a schema version that is not a
number, wrong URLs, mistyped paths given to read-only commands, and unreadable documents
that readers must count and name.  Every one costs a bounded time, keeps every cell in the
run folder, and ends in one line, never a traceback."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.__main__ import main
from harness.matrix import Matrix
from harness.results import CellResult, read_result
from harness.session import BenchmarkRun, RunOptions
from harness.store import StoreError, open_store
from harness.store.runs import RunWriter
from harness.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "results" / "runs" / "20261123T202743Z-smoke-cpu" / "mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32.json"


@pytest.fixture(scope="module")
def real() -> CellResult:
    return read_result(REAL)


def cells(real: CellResult, n: int) -> list[CellResult]:
    return [replace(real, spec=replace(real.spec, batch_size=8 * (i + 1))) for i in range(n)]


@contextmanager
def silent_server():
    """A TCP server that accepts every connection and never sends a byte: a database host
    whose server hangs.  Yields a postgresql:// URL and the list of accepted connections."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"postgresql://bench@127.0.0.1:{server.getsockname()[1]}/bench", accepted
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def a_run(tmp_path: Path, store: str, said: list[str]) -> BenchmarkRun:
    return BenchmarkRun(Matrix(name="smoke", cells=()), RunOptions(
        results_dir=tmp_path / "results", baselines_dir=tmp_path / "b", store=store), say=said.append)


def record_all(run: BenchmarkRun, results: list[CellResult]) -> list[CellResult]:
    run.planned = [r.id for r in results]
    run_id = run.run_writer().run_id
    kept = [replace(r, run_id=run_id) for r in results]
    for r in kept:
        run.record(r)
    run.close(interrupted=False)
    return kept


# ---------------------------------------------------------------- A: every call bounded in time


def test_a_server_that_accepts_and_never_answers_costs_one_timeout_per_attempt(monkeypatch):
    monkeypatch.setenv("HARNESS_STORE_TIMEOUT_S", "2")
    with silent_server() as (url, accepted):
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"connection timeout expired \(timeout 2 s, HARNESS_STORE_TIMEOUT_S\)"):
            SqlStore(url)
        took = time.monotonic() - started
        assert 1.5 < took < 5, took
        assert len(accepted) == 1, "one attempt, one connection"


def test_a_night_against_a_silent_server_gives_the_store_up_after_its_budget_and_fails(tmp_path, real, monkeypatch):
    """Six cells against a server that never answers: three attempts of 2 s, then the run
    stops trying (said once), writes every cell to its folder, and names what the store
    lacks and the command that catches it up."""
    monkeypatch.setenv("HARNESS_STORE_TIMEOUT_S", "2")
    said: list[str] = []
    with silent_server() as (url, accepted):
        started = time.monotonic()
        run = a_run(tmp_path, url, said)
        kept = record_all(run, cells(real, 6))
        took = time.monotonic() - started
        attempts = len(accepted)
    assert attempts == 3, attempts
    assert took < 3 * 2 + 6, f"a silent server cost {took:.0f} s"
    assert sorted(p.stem for p in run.writer.dir.glob("mrpc-*.json")) == sorted(r.id for r in kept)
    given_up = [line for line in said if line.startswith("STORE GIVEN UP")]
    assert len(given_up) == 1 and "after 3 failed call(s)" in given_up[0], said
    assert run.mirror.failures == 3
    line = run.mirror.behind_line(run.writer.dir)
    assert line.startswith("STORE BEHIND, the run fails: 6 of 6 cells and the run manifest not written to "
                           "postgresql+psycopg://bench@127.0.0.1:"), line
    assert "connection timeout expired" in line
    assert line.endswith(f"catch up with: python -m harness ingest {tmp_path / 'results'} --store {url} "
                         f"--run {run.writer.run_id}"), line
    manifest = read_manifest(run)
    assert manifest["state"] == "complete" and manifest["store"]["given_up"] and manifest["store"]["failures"] == 3


def test_the_time_budget_gives_up_before_the_count_does(tmp_path, real, monkeypatch):
    monkeypatch.setenv("HARNESS_STORE_TIMEOUT_S", "2")
    monkeypatch.setenv("HARNESS_STORE_MAX_FAILURES", "50")
    monkeypatch.setenv("HARNESS_STORE_MAX_FAILING_S", "3")
    said: list[str] = []
    with silent_server() as (url, accepted):
        run = a_run(tmp_path, url, said)
        record_all(run, cells(real, 4))
        assert len(accepted) == 2  # 2 s + 2 s >= 3 s
    assert run.mirror.failures == 2 and len(run.mirror.behind) == 5


def test_a_timeout_that_is_not_a_number_is_named_and_the_run_goes_on(tmp_path, real, monkeypatch):
    monkeypatch.setenv("HARNESS_STORE_TIMEOUT_S", "ten")
    said: list[str] = []
    run = a_run(tmp_path, f"sqlite:///{tmp_path / 'h.db'}", said)
    record_all(run, cells(real, 2))
    assert run.mirror.given_up == "HARNESS_STORE_TIMEOUT_S='ten' is not a positive number of seconds"
    assert run.mirror.failures == 1 and len(list(run.writer.dir.glob("mrpc-*.json"))) == 2


def test_a_statement_blocked_past_the_timeout_on_a_real_postgresql_fails_in_time(postgres_server, real):
    url = postgres_server.new_database()
    with SqlStore(url) as store:
        store.put_cell(replace(real, run_id="20261101T020000Z-smoke-cpu"))
    blocker = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://")).connect()
    try:
        blocker.execute(sa.text("LOCK TABLE harness_cells IN ACCESS EXCLUSIVE MODE"))  # held: the transaction stays open
        store = SqlStore(url, timeout_s=1)  # the schema check reads harness_meta only
        started = time.monotonic()
        with pytest.raises(StoreError, match="statement timeout"):
            store.put_cell(replace(real, run_id="20261102T020000Z-smoke-cpu"))
        assert time.monotonic() - started < 4
        store.close()
    finally:
        blocker.rollback()
        blocker.close()


def _cluster_pids(server) -> list[int]:
    """The postmaster of a test server and every process it started."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            pids.append(int(stat.parent.name))
    return pids


def test_a_postgresql_stopped_mid_run_costs_a_bounded_time_and_the_run_goes_on(tmp_path, real, monkeypatch):
    """SIGSTOP to a real server after the first cell: connected, it never answers, and no
    server-side timeout can fire.  The run's watchdog gives each call up in bounded time."""
    from conftest import start_postgres

    monkeypatch.setenv("HARNESS_STORE_TIMEOUT_S", "1")
    server = start_postgres()
    stopped: list[int] = []
    try:
        url = server.new_database()
        said: list[str] = []
        run = a_run(tmp_path, url, said)
        results = cells(real, 4)
        run.planned = [r.id for r in results]
        run_id = run.run_writer().run_id
        run.record(replace(results[0], run_id=run_id))
        assert not run.mirror.behind
        stopped = _cluster_pids(server)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        for r in results[1:]:
            run.record(replace(r, run_id=run_id))
        run.close(interrupted=False)
        took = time.monotonic() - started
        assert took < 3 * 3 + 5, f"a stopped server cost {took:.0f} s"
        # the pooled connection's call hangs: the watchdog; the calls after it connect anew: the connect timeout
        assert said[0].startswith("STORE BEHIND: ") and "no answer within 3 s (3 x the timeout of 1 s" in said[0], said
        assert run.mirror.given_up and run.mirror.failures == 3, said
        assert sorted(run.mirror.behind) == sorted([r.id for r in results[1:]] + ["run"])
        assert len(list(run.writer.dir.glob("mrpc-*.json"))) == 4
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        server.destroy()


# ---------------------------------------------------------------- C: what the store cannot be


def test_a_schema_version_that_is_not_a_number_is_a_named_store_failure_and_the_run_goes_on(tmp_path, real):
    path = tmp_path / "h.db"
    SqlStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE harness_meta SET value = 'one' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=r"its schema version \(harness_meta, key schema_version\) is 'one', "
                                         "not a number") as caught:
        SqlStore(f"sqlite:///{path}")
    assert caught.value.lasting
    said: list[str] = []
    run = a_run(tmp_path, f"sqlite:///{path}", said)
    kept = record_all(run, cells(real, 2))
    assert len(list(run.writer.dir.glob("mrpc-*.json"))) == len(kept)
    assert run.mirror.failures == 1, "trying again cannot mend it: given up at once"
    assert [line for line in said if line.startswith("STORE")] == [
        next(line for line in said if line.startswith("STORE GIVEN UP after 1 failed call(s)"))]
    assert "is 'one', not a number" in run.mirror.behind_line(run.writer.dir)


@pytest.mark.parametrize("url, says", [
    ("postgresql://nobody@127.0.0.1:{port}/postgres", 'role "nobody" does not exist'),
    ("postgresql://postgres@127.0.0.1:{port}/no_such_db", 'database "no_such_db" does not exist'),
])
def test_a_wrong_user_or_database_name_is_a_failure_that_trying_again_cannot_mend(postgres_server, url, says):
    with pytest.raises(StoreError, match=says) as caught:
        SqlStore(url.format(port=postgres_server.port))
    assert caught.value.lasting


@pytest.mark.parametrize("url, says", [
    ("foo://bar", "argument --store: store URL 'foo://bar': 'foo' is not supported; use sqlite:///FILE or "
                  "postgresql://..."),
    ("mysql://u@h/db", "argument --store: store URL 'mysql://u@h/db': 'mysql' is not supported*"),
    ("sqlite://", "argument --store: store URL 'sqlite://': a store is a file (sqlite:///FILE)*"),
])
def test_a_store_url_it_cannot_use_is_one_line_while_pytest_parses_options(pytester, url, says):
    result = pytester.runpytest("--store", url)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{says}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_store_that_is_a_text_file_fails_the_run_and_keeps_every_cell(bench_project, tmp_path):
    """`pytest --store sqlite:///notes.txt`: both cells measured and kept in the folder, the
    store given up at its first failure, and the run exits 1 saying why and how to catch up."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, a note\n" * 50)
    bench = bench_project("two", 8, """
        padding = ["dynamic", "max_length"]
        batch_size = [4]
    """)
    results = tmp_path / "results"
    run = bench.runpytest("--matrix", "two", "-p", "no:cacheprovider", "--store", f"sqlite:///{notes}",
                          "--results-dir", str(results))
    run.assert_outcomes(skipped=2)  # new: measured, nothing to judge them against yet
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    (folder,) = (results / "runs").iterdir()
    assert len(list(folder.glob("mrpc-*.json"))) == 2
    run.stdout.fnmatch_lines([
        "STORE GIVEN UP after 1 failed call(s)*file is not a database*",
        f"STORE BEHIND, the run fails: 2 of 2 cells and the run manifest not written to sqlite:///{notes} *"
        f"catch up with: python -m harness ingest {results} --store sqlite:///{notes} --run {folder.name}",
    ])
    assert "Traceback" not in run.stdout.str()
    assert notes.read_text().startswith("not a database"), "the file is left as it was"


# ---------------------------------------------------------------- D: reading never creates


@pytest.mark.parametrize("command", [["changes"], ["report", "--output", "r.html"], ["compare", "a", "b"]])
def test_a_read_only_command_given_a_mistyped_sqlite_path_creates_nothing(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    assert main([command[0], "--store", "sqlite:///typo.db", *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: sqlite:///typo.db: no database file {(tmp_path / 'typo.db').resolve()} (a command that "
                           "only reads never creates one; check the path)")
    assert list(tmp_path.iterdir()) == []


def test_reading_an_empty_database_creates_no_schema(store_url, capsys):
    if store_url.startswith("sqlite"):
        Path(store_url.removeprefix("sqlite:///")).touch()
    assert main(["changes", "--store", store_url]) == 2
    assert "holds no harness tables (nothing was ever stored there; check the URL)" in capsys.readouterr().err
    with pytest.raises(StoreError, match="holds no harness tables"):
        open_store(store_url)
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    engine.dispose()
    if store_url.startswith("sqlite"):
        assert Path(store_url.removeprefix("sqlite:///")).stat().st_size == 0


# ---------------------------------------------------------------- E: readers name what they skip


def read_manifest(run: BenchmarkRun) -> dict:
    import json

    return json.loads((run.writer.dir / "run.json").read_text())


def write_nights(results_dir: Path, real: CellResult, nights: int) -> list[Path]:
    """``nights`` runs of one cell; returns the cell documents' paths, oldest first."""
    paths = []
    for n in range(nights):
        writer = RunWriter(results_dir, f"202611{n + 1:02d}T020000Z-smoke-cpu", matrix="smoke", planned=[real.id],
                           env=real.env)
        paths.append(writer.add(replace(real, run_id=writer.run_id)))
        writer.close()
    return paths


def spoil(paths: list[Path]) -> None:
    """The first unreadable as JSON; the rest of a newer schema."""
    paths[0].write_text("{ not json")
    for path in paths[1:]:
        path.write_text(path.read_text().replace('"schema_version": 1', '"schema_version": 99'))


def test_changes_counts_and_names_the_documents_it_skipped(tmp_path, real, capsys):
    paths = write_nights(tmp_path / "results", real, 8)
    spoil(paths[:3])
    assert main(["changes", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["no change of level in the readable history",
                                f"skipped 3 unreadable documents: {paths[0]}: not valid JSON "
                                "(Expecting property name enclosed in double quotes: line 1 column 3 (char 2))"]
    assert main(["changes", str(tmp_path / "results"), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "[]\n" and captured.err.startswith("skipped 3 unreadable documents: ")
    spoil(paths)
    assert main(["changes", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'results'}: no readable stored result; skipped 8 unreadable "
                          f"documents: {paths[0]}: not valid JSON")


def test_report_counts_and_names_the_documents_it_skipped(tmp_path, real, capsys):
    paths = write_nights(tmp_path / "results", real, 3)
    spoil(paths[1:])
    assert main(["report", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"skipped 2 unreadable documents: {paths[1]}: not valid JSON")
    assert "2 stored results could not be read" in (tmp_path / "results" / "report.html").read_text()
    spoil(paths)
    assert main(["report", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'results'}: no readable stored run to report on; skipped 3 "
                          f"unreadable documents: {paths[0]}: not valid JSON")
    assert "no stored run" not in err


def test_the_history_read_of_a_run_says_what_it_skipped(tmp_path, real):
    paths = write_nights(tmp_path / "results", real, 3)
    spoil(paths[:2])
    said: list[str] = []
    run = a_run(tmp_path, None, said)
    found = run.mirror.cell_history(real.id)
    run.mirror.cell_history(real.id)  # read again: still counted once
    assert [r.run_id for r in found] == [paths[2].parent.name]
    assert said == [f"history: skipped 2 unreadable documents: {paths[0]}: not valid JSON "
                    "(Expecting property name enclosed in double quotes: line 1 column 3 (char 2)); "
                    "the gate reads the rest"]
    assert run.mirror.history_note.startswith("history: skipped 2 unreadable documents: ")
