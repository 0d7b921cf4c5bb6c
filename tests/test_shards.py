"""A night over many machines: --shard I/N, merge, and submit through submitit's local
executor (real processes)."""

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.cli.merge import main_merge
from harness.judge.verdict import Verdict
from harness.results import read_result
from harness.store import open_store
from harness.store.runs import RunWriter
from harness.store.shards import execution_seconds, expected_durations, gather, parse_shard, split

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "results" / "runs" / "20261123T202743Z-smoke-cpu" / "mrpc-all-MiniLM-L6-v2-dynamic-bs8-fp32.json"


@pytest.mark.parametrize("text, fragment", [("3", "expected I/N"), ("0/3", "between 1 and N"), ("4/3", "between 1 and N"),
                                            ("a/b", "expected I/N"), ("1/1000000000", "N is at most 1024")])
def test_a_malformed_shard_says_what_is_allowed(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_shard(text)


@pytest.mark.parametrize("cells, count", [(7, 3), (54, 4), (3, 5), (10, 1)])
def test_shards_are_disjoint_cover_the_selection_and_are_even_without_history(cells, count):
    ids = [f"c{i}" for i in range(cells)]
    parts = split(ids, count)
    assert sorted(sum(parts, [])) == sorted(ids)
    assert len(set(sum(parts, []))) == cells
    assert max(map(len, parts)) <= cells // count + 1


def test_shards_balance_the_recorded_durations_and_keep_within_one_cell_of_an_even_share():
    ids = [f"c{i}" for i in range(12)]
    durations = {f"c{i}": (600.0 if i in (0, 3) else 60.0) for i in range(12)}  # round-robin puts both long ones together
    parts = split(ids, 3, durations)
    loads = [sum(durations[c] for c in p) for p in parts]
    assert max(map(len, parts)) <= 12 // 3 + 1
    assert max(loads) <= 780, loads  # the two long cells on different shards
    naive = [sum(durations[c] for c in ids[i::3]) for i in range(3)]
    assert max(naive) == 1320 and max(loads) < max(naive)
    assert split(ids, 3, durations) == parts, "the split is deterministic"
    assert [p == sorted(p, key=ids.index) for p in parts] == [True] * 3, "each shard keeps the selection order"


def test_expected_durations_come_from_the_committed_baselines_of_the_same_kind(tmp_path):
    real = read_result(REAL)
    folder = tmp_path / "baselines" / real.env["hardware_key"]
    folder.mkdir(parents=True)
    (folder / f"{real.id}.json").write_text(REAL.read_text())
    found = expected_durations(tmp_path / "baselines", gpu=False)
    assert found == {real.id: pytest.approx(execution_seconds(real))}
    assert 5 < found[real.id] < 600
    assert expected_durations(tmp_path / "baselines", gpu=True) == {}


def test_shard_collect_only_gives_disjoint_parts_whose_union_is_the_selection(bench_project):
    bench = bench_project("seven", 8, """
        padding = ["dynamic"]
        batch_size = [1, 2, 3, 4, 5, 6, 7]
    """)
    whole = _collected(bench.runpytest("--matrix", "seven", "--collect-only", "-q", "-p", "no:cacheprovider"))
    assert len(whole) == 7
    parts = [_collected(bench.runpytest("--matrix", "seven", "--collect-only", "-q", "-p", "no:cacheprovider",
                                        "--shard", f"{i}/3")) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(whole)
    assert len(set(sum(parts, []))) == 7
    assert max(map(len, parts)) <= 7 // 3 + 1
    selected = _collected(bench.runpytest("--matrix", "seven", "--collect-only", "-q", "-p", "no:cacheprovider",
                                          "-k", "bs1 or bs2 or bs3", "--shard", "2/2"))
    assert len(selected) == 1, "the split is of what -k selected"


def _collected(result) -> list[str]:
    return [line for line in result.stdout.lines if "::test_cell[" in line]


def shard_runs(results: Path, shards: dict[int, list[int]], night: str = "n7", count: int | None = None,
               matrices: dict[int, tuple[str, str]] | None = None) -> list[str]:
    """Shard runs of real cells; ``matrices``: a shard's (matrix name, file hash), else the real one's."""
    real = read_result(REAL)
    cells = {b: replace(real, spec=replace(real.spec, batch_size=b)) for part in shards.values() for b in part}
    selection = [cells[b].id for b in sorted(cells)]
    ids = []
    for index, batches in shards.items():
        name, sha = (matrices or {}).get(index, ("smoke", real.env.get("matrix_sha256")))
        writer = RunWriter(results, f"20261124T020000Z-smoke-cpu-shard{index}of{count or len(shards)}", matrix=name,
                           planned=[cells[b].id for b in batches], env=dict(real.env, matrix_sha256=sha),
                           extra={"night": night, "shard": {"index": index, "count": count or len(shards),
                                                            "selection": selection}})
        for b in batches:
            writer.add(replace(cells[b], run_id=writer.run_id, verdict=Verdict(cells[b].id, "pass"),
                               env=dict(real.env, matrix_sha256=sha)))
        writer.close()
        ids.append(writer.run_id)
    return ids


def test_merge_gives_the_night_one_verdict_table(tmp_path, capsys):
    shard_runs(tmp_path / "night", {1: [1, 4], 2: [2, 5], 3: [3]})
    assert main_merge([tmp_path / "night"], into=tmp_path / "results", night=None, store_url=None) == 0
    out = capsys.readouterr().out
    assert "shards [1, 2, 3] of 3, 5 cells" in out and "judged 5 of 5 cells (0 regressed)" in out
    assert out.count("mrpc-all-MiniLM-L6-v2-dynamic-bs") == 5
    assert len(list((tmp_path / "results" / "runs").iterdir())) == 3
    assert main_merge([tmp_path / "night"], into=tmp_path / "results", night="n7", store_url=None) == 0, \
        "merging the same artifacts again changes nothing"


def test_a_night_with_a_missing_shard_or_a_cell_run_twice_does_not_merge_clean(tmp_path, capsys):
    shard_runs(tmp_path / "a", {1: [1, 3], 2: [2]}, count=3)  # shard 3 never reported
    assert main_merge([tmp_path / "a"], into=tmp_path / "ra", night=None, store_url=None) == 1
    assert "INCOMPLETE NIGHT: shards [3] of 3 have no run" in capsys.readouterr().out
    shard_runs(tmp_path / "b", {1: [1, 2], 2: [2, 3]})
    night = gather(open_store(tmp_path / "b"), night="n7")
    assert any("measured in more than one shard" in p and "bs2" in p for p in night.problems), night.problems


def test_merge_reads_a_night_from_the_store(tmp_path, capsys):
    from harness.store.ingest import ingest
    from harness.store.sql import SqlStore

    shard_runs(tmp_path / "results", {1: [1], 2: [2]}, night="n9")
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with SqlStore(url) as store:
        ingest(tmp_path / "results", store)
    assert main_merge([], into=tmp_path / "elsewhere", night="n9", store_url=url) == 0
    assert "night n9: 2 runs, shards [1, 2] of 2, 2 cells" in capsys.readouterr().out


def test_submit_runs_the_shards_as_local_jobs_and_merges_the_night(bench_project):
    """submitit's local executor starts real processes: two shards of a two-cell matrix,
    each an ordinary pytest run, then one verdict table."""
    bench = bench_project("two", 8, """
        padding = ["dynamic", "max_length"]
        batch_size = [4]
    """)
    done = subprocess.run(
        [sys.executable, "-m", "harness", "submit", "--shards", "2", "--executor", "local", "--night", "nightX",
         "--folder", str(bench.path / "jobs"), "--", "test_mrpc.py", "--matrix", "two", "-p", "no:cacheprovider"],
        cwd=bench.path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "night nightX: 2 runs, shards [1, 2] of 2, 2 cells" in done.stdout
    # The two jobs start on their own: either may take the earlier second, so order by label.
    runs = sorted((bench.path / "results" / "runs").iterdir(), key=lambda p: re.sub(r"^\d{8}T\d{6}Z-", "", p.name))
    assert [re.sub(r"^\d{8}T\d{6}Z-", "", p.name) for p in runs] == ["two-cpu-shard1of2", "two-cpu-shard2of2"]
    manifests = [json.loads((p / "run.json").read_text()) for p in runs]
    assert [len(m["finished"]) for m in manifests] == [1, 1]
    assert {m["night"] for m in manifests} == {"nightX"}


def test_shards_of_two_different_matrices_do_not_merge_and_both_are_named(tmp_path, capsys):
    ids = shard_runs(tmp_path / "night", {1: [1], 2: [2]},
                     matrices={1: ("smoke", "fedcba9876543210"), 2: ("smoke", "0123456789abcdef")})
    assert main_merge([tmp_path / "night"], into=tmp_path / "results", night=None, store_url=None) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "MIXED NIGHT: the runs used different matrix files" in line)
    assert "0123456789abcdef" in line and ids[0] in line and ids[1] in line, line
    shard_runs(tmp_path / "names", {1: [1], 2: [2]}, matrices={2: ("nightly", "0123456789abcdef")})
    night = gather(open_store(tmp_path / "names"), night="n7")
    assert any(p.startswith("MIXED NIGHT: the runs used different matrices: nightly") for p in night.problems)



def test_a_shard_beyond_the_cells_writes_an_empty_run_that_merges(bench_project):
    bench = bench_project("two", 8, """
        padding = ["dynamic", "max_length"]
        batch_size = [4]
    """)
    runs = []
    for index in (1, 2, 3):
        result = bench.runpytest("--matrix", "two", "-p", "no:cacheprovider", "--shard", f"{index}/3", "--night", "n3")
        assert result.ret == 0, result.stdout.str()[-2000:]
        runs.append(result)
    runs[2].stdout.fnmatch_lines(["*shard 3/3 holds none of the 2 selected cells: an empty run is written*"])
    manifests = [json.loads(p.read_text()) for p in (bench.path / "results" / "runs").glob("*/run.json")]
    empty = next(m for m in manifests if m["shard"]["index"] == 3)
    assert empty["planned"] == [] and empty["state"] == "complete" and len(empty["shard"]["selection"]) == 2
    assert main_merge([], into=bench.path / "results", night="n3", store_url=None) == 0


def test_a_damaged_cell_document_is_named_not_taken_for_a_cell_that_never_ran(tmp_path, capsys):
    ids = shard_runs(tmp_path / "night", {1: [1, 2], 2: [3]})
    damaged = next((tmp_path / "night" / "runs" / ids[0]).glob("mrpc-*bs2-*.json"))
    damaged.write_text("{half a document")
    assert main_merge([tmp_path / "night"], into=tmp_path / "results", night=None, store_url=None) == 1
    out = capsys.readouterr().out
    assert "INCOMPLETE NIGHT: skipped 1 unreadable document" in out and damaged.name in out, out
