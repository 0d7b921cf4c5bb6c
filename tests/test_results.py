import json

import pytest

from harness.results import SCHEMA_VERSION, CellResult, ResultsError, RunWriter, read_result, read_run, write_result
from harness.spec import CellSpec

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
