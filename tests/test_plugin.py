"""The pytest face, driven end to end with pytester."""

import json
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "test_mrpc.py"


@pytest.fixture
def bench(bench_project):
    """A pytester project with the real benchmark test file and a tiny matrix."""
    return bench_project("tiny", 6, """
        padding = ["dynamic", "max_length"]
        batch_size = [4]
        precision = ["fp32", "fp16"]
    """)


def test_help_lists_the_options(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--gpu*", "*--matrix=NAME_OR_PATH*", "*--results-dir=DIR*"])


def test_gpu_without_cuda_fails_at_once(pytester):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = pytester.runpytest("--gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpu runs the GPU suite, but no CUDA device is visible*"])


def test_a_matrix_runs_writes_results_and_summarizes(bench):
    result = bench.runpytest("--matrix", "tiny", "-p", "no:cacheprovider", "--benchmark-json", "bench.json", "-rs")
    # No baseline yet: the two CPU cells are measured and reported as new; fp16 cannot run on a CPU.
    result.assert_outcomes(skipped=4, deselected=4)  # the 4 largest-batch searches run only when asked
    result.stdout.fnmatch_lines(["*[[]cell 1/4[]] mrpc-*-dynamic-bs4-fp32: run 1/1*"])
    result.stdout.fnmatch_lines(["*trainer-bench*", "*mrpc-*-dynamic-bs4-fp32*new*", "*mrpc-*-dynamic-bs4-fp16*skipped*",
                                 "results (complete): *"])
    result.stdout.fnmatch_lines(["*needs a CUDA device*"])
    result.stdout.fnmatch_lines(["*new: no baseline for mrpc-*-dynamic-bs4-fp32*"])
    (run_dir,) = (bench.path / "results" / "runs").iterdir()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["state"] == "complete" and len(manifest["planned"]) == 4
    cells = sorted(p.name for p in run_dir.glob("mrpc-*.json"))
    assert len(cells) == 4
    doc = json.loads((run_dir / cells[0]).read_text())
    assert doc["status"] in ("ok", "skipped") and doc["env"]["hardware_key"]
    bench_json = json.loads((bench.path / "bench.json").read_text())
    infos = {b["extra_info"]["cell_id"]: b["extra_info"] for b in bench_json["benchmarks"]}
    ok = [i for i in infos.values() if i["status"] == "ok"]
    assert len(ok) == 2 and all(i["train_samples_per_s"] > 0 and "padding_efficiency" in i for i in ok)
    # pytest-benchmark's statistics are the cell's timed steps, as its document has them.
    for entry in bench_json["benchmarks"]:
        stats = entry["stats"]
        doc = json.loads(Path(entry["extra_info"]["result_file"]).read_text())["metrics"]
        assert stats["rounds"] == doc["timed_steps"]
        assert stats["median"] == pytest.approx(doc["step_time_median_s"])
        assert stats["mean"] == pytest.approx(doc["step_time_mean_s"])
        assert stats["stddev"] == pytest.approx(doc["step_time_stdev_s"])
        assert stats["ops"] == pytest.approx(1 / doc["step_time_mean_s"])


def test_k_selects_cells_by_readable_id_and_results_dir_is_honoured(bench, tmp_path):
    out = tmp_path / "elsewhere"
    result = bench.runpytest("--matrix", "tiny", "-k", "max_length-bs4-fp32", "--results-dir", str(out))
    result.assert_outcomes(skipped=1, deselected=3 + 4)
    (run_dir,) = (out / "runs").iterdir()
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["state"] == "complete" and manifest["planned"] == [manifest["finished"][0]]
    assert manifest["finished"][0].endswith("max_length-bs4-fp32")


def test_a_malformed_matrix_is_refused_before_anything_runs(bench):
    bad = bench.path / "benchmarks" / "bad.toml"
    bad.write_text('[axes]\nprecision = ["fp8"]\n')
    result = bench.runpytest("--matrix", str(bad))
    assert result.ret != pytest.ExitCode.OK
    output = result.stdout.str() + result.stderr.str()
    assert "bad.toml" in output and "`precision` = 'fp8'" in output and "'bf16'" in output
    assert not (bench.path / "results").exists(), "nothing ran, nothing was written"


def test_an_unknown_matrix_name_lists_the_known_ones(bench):
    result = bench.runpytest("--matrix", "nightlyy")
    assert result.ret != pytest.ExitCode.OK
    # the project's own and the shipped ones
    assert "known names: ['gpu-slice', 'nightly', 'smoke', 'tiny']" in result.stdout.str() + result.stderr.str()


def test_a_shipped_matrix_runs_by_name_where_the_project_has_none(bench):
    """--matrix nightly from a project whose benchmarks/ holds no nightly.toml: the package's."""
    result = bench.runpytest("--matrix", "nightly", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert "mrpc-bert-base-uncased-dynamic-bs8-bf16" in result.stdout.str()


def test_a_failing_cell_fails_its_test_and_the_others_still_run(bench, tiny_bert_dir):
    bench.path.joinpath("benchmarks", "mixed.toml").write_text(textwrap.dedent(f"""
        [defaults]
        weights = "random"
        max_steps = 4
        timing_warmup_steps = 1
        evaluate = false
        [axes]
        checkpoint = ["no-such-org/no-such-model", "{tiny_bert_dir}"]
        batch_size = [4]
    """))
    result = bench.runpytest("--matrix", "mixed")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["*no-such-model*error*cannot load*"])
