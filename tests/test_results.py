import json
import os
import re
from pathlib import Path

import pytest

from harness.results import SCHEMA_VERSION, CellResult, ResultsError, read_result, read_run, write_result
from harness.spec import CellSpec
from harness.store.runs import RunWriter

DOC = {"schema_version": 1, "status": "ok", "run_id": "r", "spec": {}, "env": {}, "metrics": {}}


def make_result(**metrics):
    return CellResult(
        spec=CellSpec(batch_size=16, precision="bf16"),
        status="ok",
        run_id="r1",
        env={"hardware_key": "cpu-2x-test", "libraries": {"torch": "2.13.0"}},
        metrics={"train_samples_per_s": 12.5, "padding_efficiency": float("nan"), **metrics},
        samples={"step_seconds": [0.1, 0.2]},
        provenance={"weights": "random"},
    )


def test_result_round_trips_through_its_schema(tmp_path):
    result = make_result(eval_f1=0.88)
    path = write_result(result, tmp_path)
    assert path.name == "mrpc-bert-base-uncased-dynamic-bs16-bf16.json"
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["metrics"]["padding_efficiency"] is None  # NaN is stored as null
    again = read_result(path)
    assert again.spec == result.spec and again.id == result.id
    assert again.metrics["eval_f1"] == 0.88 and again.samples == result.samples
    assert again.to_dict() == data


def test_unknown_schema_version_is_refused_with_the_file_name(tmp_path):
    path = write_result(make_result(), tmp_path)
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=rf"{path.name}: schema_version 99 is not one this harness reads"):
        read_result(path)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a result is a JSON object"),
        (json.dumps({"schema_version": 1, "status": "ok"}), "not a cell result, missing"),
        (json.dumps({**DOC, "status": "fine"}), "malformed result"),
        (json.dumps({**DOC, "spec": {"padding": "dinamic"}}), "malformed result"),
    ],
)
def test_corrupt_results_give_a_clear_error(tmp_path, content, fragment):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ResultsError) as info:
        read_result(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_run_writer_keeps_every_finished_cell_and_marks_partial_runs(tmp_path):
    first = make_result()
    writer = RunWriter(tmp_path, "run-a", matrix="smoke", planned=[first.id, "mrpc-other"], env={})
    writer.add(first)
    assert [r.id for r in read_run(writer.dir)] == [first.id]
    assert not list(writer.dir.glob(".*.tmp")), "no temporary file is left behind"
    writer.close()
    manifest = json.loads((writer.dir / "run.json").read_text())
    assert manifest["state"] == "partial" and manifest["finished"] == [first.id]

    writer = RunWriter(tmp_path, "run-b", matrix="smoke", planned=[first.id], env={})
    writer.add(first)
    writer.close()
    assert json.loads((writer.dir / "run.json").read_text())["state"] == "complete"

    writer = RunWriter(tmp_path, "run-c", matrix="smoke", planned=[first.id], env={})
    writer.add(first)
    writer.close(interrupted=True)
    assert json.loads((writer.dir / "run.json").read_text())["state"] == "partial"


def test_two_runs_with_the_same_id_get_their_own_folders(tmp_path):
    # Run ids are stamped to the second; a quick re-run must not write into the first run's folder.
    first = make_result()
    a = RunWriter(tmp_path, "20261123T204233Z-smoke-cpu", matrix="smoke", planned=[first.id], env={})
    a.add(first)
    a.close()
    b = RunWriter(tmp_path, "20261123T204233Z-smoke-cpu", matrix="smoke", planned=[first.id, "mrpc-other"], env={})
    assert b.dir != a.dir and b.run_id == "20261123T204233Z-smoke-cpu-2" == b.dir.name
    assert json.loads((b.dir / "run.json").read_text())["run_id"] == b.run_id
    assert json.loads((a.dir / "run.json").read_text())["state"] == "complete", "the first run's manifest is untouched"


# ---------------------------------------------------------------- a run whose owner was killed


def test_a_running_manifest_whose_owner_was_sigkilled_reads_as_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from harness.store.runs import manifest_state

    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom harness.store.runs import RunWriter\n"
         f"w = RunWriter({str(tmp_path)!r}, 'owned', matrix='smoke', planned=['a'], env={{}})\n"
         "print(w.dir, flush=True)\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        run = Path(owner.stdout.readline().strip())
        manifest = json.loads((run / "run.json").read_text())
        assert manifest["owner"]["pid"] == owner.pid and manifest["owner"]["hostname"]
        assert manifest_state(manifest) == "running", "its owner is alive"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["state"] == "running", "nobody closed it"
    assert manifest_state(manifest) == "killed"
    elsewhere = {**manifest, "owner": {**manifest["owner"], "hostname": "another-host"}}
    assert manifest_state(elsewhere) == "running", "another host's owner cannot be checked from here"
    reused = {**manifest, "owner": {**manifest["owner"], "pid": os.getpid()}}  # a live pid, another process's start
    assert manifest_state(reused) == "killed"
    assert manifest_state({**manifest, "state": "partial"}) == "partial"
    assert manifest_state({"state": "running"}) == "running", "a manifest from before owners were recorded"


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_fs(tmp_path):
    """``small_fs("2m")``: a real tmpfs of that size, mounted under tmp_path and unmounted at
    the end; the test is skipped where this process may not mount one."""
    import subprocess

    mounted = []

    def mount(size: str) -> Path:
        where = tmp_path / f"fs-{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a small file system here (mount -t tmpfs: {done.stderr.strip() or done.returncode}); "
                        "the disk-full tests need root or CAP_SYS_ADMIN")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)


def _fill(folder: Path, leave: int = 0) -> Path:
    """Fill ``folder``'s file system, leaving about ``leave`` bytes free."""
    import shutil

    filler = folder / "filler"
    with filler.open("ab", buffering=0) as handle:
        try:
            while shutil.disk_usage(folder).free > leave:
                handle.write(b"\0" * min(65536, max(4096, shutil.disk_usage(folder).free - leave)))
        except OSError:
            pass
    return filler


def test_a_full_run_folder_keeps_the_cell_elsewhere_stops_the_run_and_still_closes_its_manifest(
        small_fs, tmp_path, monkeypatch):
    from harness.results import DiskFull
    from harness.store.runs import manifest_state

    monkeypatch.setenv("HARNESS_RESCUE_DIR", str(tmp_path / "rescue"))
    monkeypatch.setenv("HARNESS_MIN_FREE_MIB", "0.5")
    disk = small_fs("2m")
    first, second = make_result(), make_result()
    second.spec = CellSpec(batch_size=32)
    writer = RunWriter(disk, "full", matrix="smoke", planned=[first.id, second.id, "mrpc-third"], env={})
    writer.add(first)
    _fill(disk)
    with pytest.raises(DiskFull) as info:
        writer.add(second)
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(f"DISK FULL: could not write {second.id}.json in {writer.dir} (No space left on device)")
    assert "a cell needs 0.5 MiB (HARNESS_MIN_FREE_MIB); the run stopped, no further cell is trained" in line
    rescue = tmp_path / "rescue" / writer.run_id
    assert line.endswith(f"what was measured is kept in {rescue} ({second.id})")
    assert read_result(rescue / f"{second.id}.json").metrics == read_result(writer.dir / f"{first.id}.json").metrics
    with pytest.raises(DiskFull, match="DISK FULL: could not write"):
        writer.check_room()  # the next cell is refused
    writer.close()
    manifest = json.loads((writer.dir / "run.json").read_text())  # the reserve made room for it
    assert manifest["state"] == "partial" and manifest_state(manifest) == "partial"
    assert manifest["finished"] == [first.id] and manifest["rescued"]["cells"] == [second.id]
    assert manifest["stopped"].startswith("DISK FULL")
    assert json.loads((rescue / "run.json").read_text())["state"] == "partial", "the rescue folder reads as a run"


def test_a_run_folder_with_too_little_room_refuses_the_next_cell(small_fs, monkeypatch):
    from harness.results import DiskFull

    monkeypatch.setenv("HARNESS_MIN_FREE_MIB", "1")
    disk = small_fs("2m")
    first = make_result()
    writer = RunWriter(disk, "low", matrix="smoke", planned=[first.id, "mrpc-other"], env={})
    writer.check_room()  # 2 MiB free: room for a cell
    _fill(disk, leave=600 * 1024)
    with pytest.raises(DiskFull) as info:
        writer.add(first)  # kept, and the next cell refused
    assert str(info.value) == (f"DISK FULL: {writer.dir} has 0.6 MiB free, a cell needs 1.0 MiB for its documents and logs "
                               "(HARNESS_MIN_FREE_MIB); the run stopped before its next cell; every finished cell is "
                               "in the run folder")
    assert read_result(writer.dir / f"{first.id}.json").id == first.id


def test_a_dead_cells_log_that_a_full_folder_cannot_take_goes_to_the_rescue_folder(small_fs, tmp_path, monkeypatch):
    from harness.launch.process import _keep_log

    monkeypatch.setenv("HARNESS_RESCUE_DIR", str(tmp_path / "rescue"))
    disk = small_fs("1m")
    log = tmp_path / "child.log"
    log.write_text("injected fault: abort\n" * 20000)  # about 430 KiB
    _fill(disk, leave=64 * 1024)
    kept = _keep_log(log, disk / "run", "cell.run-1.log", "rid")
    assert kept["log"] == str(tmp_path / "rescue" / "rid" / "cell.run-1.log")
    assert Path(kept["log"]).read_text() == log.read_text()
    assert kept["log_note"] == f"could not keep its log in {disk / 'run'} (No space left on device)"
    assert not (disk / "run" / "cell.run-1.log").exists(), "no half-copied log is left behind"


def _one_tiny_matrix(bench_project, cells: int):
    return bench_project("disk", 6, f"""
        padding = ["dynamic"]
        batch_size = {[2, 4, 8][:cells]}
    """)


def test_a_disk_that_fills_while_a_cell_trains_stops_the_run_in_one_line_and_keeps_the_cell(
        bench_project, small_fs, tmp_path, monkeypatch):
    """The issue's case, through pytest: the results folder's file system fills while the
    first of three cells trains.  Its document goes to the rescue folder, the run stops in
    one line naming the folder, the space needed and the rescue, and no other cell trains."""
    from harness.results import read_run

    bench = _one_tiny_matrix(bench_project, 3)
    disk = small_fs("2m")
    rescue = tmp_path / "rescue"
    faults = Path(__file__).resolve().parent / "faults"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(faults), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_TEST_FAULT", "fill:3")
    monkeypatch.setenv("HARNESS_TEST_FAULT_ONCE", str(tmp_path / "fill.fired"))
    monkeypatch.setenv("HARNESS_TEST_FILL", str(disk / "filler"))
    monkeypatch.setenv("HARNESS_RESCUE_DIR", str(rescue))
    monkeypatch.setenv("HARNESS_MIN_FREE_MIB", "0.5")
    result = bench.runpytest("--matrix", "disk", "-p", "no:cacheprovider", f"--results-dir={disk}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    lines = [line for line in out.splitlines() if "DISK FULL" in line]
    assert len(lines) == 1, out
    (run,) = (disk / "runs").iterdir()
    (kept,) = rescue.iterdir()
    assert kept.name == run.name
    assert f"could not write mrpc-tiny-bert0-dynamic-bs2-fp32.json in {run} (No space left on device)" in lines[0]
    assert "a cell needs 0.5 MiB (HARNESS_MIN_FREE_MIB); the run stopped, no further cell is trained" in lines[0]
    assert f"what was measured is kept in {kept} (mrpc-tiny-bert0-dynamic-bs2-fp32)" in lines[0]
    (measured,) = read_run(kept)
    assert measured.ok and measured.metrics["train_samples_per_s"] > 0
    assert [line for line in out.splitlines() if line.startswith("[cell ")] == [
        "[cell 1/3] mrpc-tiny-bert0-dynamic-bs2-fp32: run 1/1"], "no further cell trained"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["state"] == "partial" and manifest["rescued"]["cells"] == [measured.id]


def test_a_results_folder_without_room_for_a_cell_stops_before_training(bench_project, small_fs, monkeypatch):
    bench = _one_tiny_matrix(bench_project, 2)
    disk = small_fs("2m")
    _fill(disk, leave=512 * 1024)
    monkeypatch.setenv("HARNESS_MIN_FREE_MIB", "1")
    result = bench.runpytest("--matrix", "disk", "-p", "no:cacheprovider", f"--results-dir={disk}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (run,) = (disk / "runs").iterdir()
    lines = [line for line in result.stdout.lines if "DISK FULL" in line]
    assert len(lines) == 1 and re.search(rf"DISK FULL: {re.escape(str(run))} has 0\.\d MiB free, a cell needs 1\.0 MiB "
                                         r"for its documents and logs", lines[0]), lines
    assert not list(run.glob("mrpc-*")), "nothing trained, nothing written"
    assert json.loads((run / "run.json").read_text())["state"] == "partial"


def test_an_infinite_max_grad_norm_is_measured_kept_and_read_back(tiny_cell, tmp_path):
    """``max_grad_norm = inf`` is a legal TrainingArguments value (no clipping) and JSON has
    no inf: the cell trains in its own process, its document is written, and it reads back
    with the same spec (and a non-finite figure in a verdict or the environment too)."""
    import math

    from harness.judge.verdict import Finding, Verdict
    from harness.launch import launch_cell
    from harness.results import read_result, write_result

    cell = tiny_cell(training_args={"max_grad_norm": float("inf")})
    result = launch_cell(cell, run_id="inf", use_cuda=False)
    assert result.ok, result.reason
    result.verdict = Verdict(cell.id, "pass", [Finding("train_samples_per_s", "speed", "pass", 1.0, 0.0,
                                                       change=float("inf"), basis="baseline")])
    result.env["odd"] = float("-inf")
    path = write_result(result, tmp_path)
    assert "Infinity" not in path.read_text() and '"$float": "inf"' in path.read_text()
    back = read_result(path)
    assert back.spec == cell and dict(back.spec.training_args)["max_grad_norm"] == math.inf
    assert back.verdict.findings[0].change == math.inf and back.env["odd"] == -math.inf
