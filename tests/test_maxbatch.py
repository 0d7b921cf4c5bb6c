from dataclasses import replace

from harness.maxbatch import find_max_batch_size, group_key
from harness.results import CellResult
from harness.spec import CellSpec


def fake_runner(capacity, fail_at=None):
    calls = []

    def run(spec):
        calls.append(spec.batch_size)
        status = "ok" if spec.batch_size <= capacity else "oom"
        if fail_at is not None and spec.batch_size == fail_at:
            status = "error"
        return CellResult(spec=spec, status=status, run_id="t", env={}, reason="boom" if status == "error" else None)

    return run, calls


def test_doubling_then_bisection_finds_the_largest_batch_that_fits():
    run, calls = fake_runner(capacity=100)
    search = find_max_batch_size(CellSpec(precision="bf16"), run)
    assert search.max_batch_size == 100 and search.first_oom == 101
    assert calls[:5] == [8, 16, 32, 64, 128]
    assert search.tried[128] == "oom" and search.group == "mrpc-bert-base-uncased-dynamic-bf16"
    assert "max batch size 100" in search.line()


def test_every_probe_is_a_short_random_weight_run():
    seen = []

    def run(spec):
        seen.append(spec)
        return CellResult(spec=spec, status="oom", run_id="t", env={})

    search = find_max_batch_size(replace(CellSpec(), weights="pretrained", num_train_epochs=3), run)
    assert search.max_batch_size is None and search.first_oom == 8
    assert seen[0].weights == "random" and seen[0].max_steps == 4 and not seen[0].evaluate


def test_the_limit_and_errors_end_the_search():
    run, _ = fake_runner(capacity=10_000)
    search = find_max_batch_size(CellSpec(), run, limit=64)
    assert search.max_batch_size == 64 and search.first_oom is None
    run, _ = fake_runner(capacity=100, fail_at=32)
    search = find_max_batch_size(CellSpec(), run)
    assert search.error.startswith("batch size 32: error: boom")


def test_groups_are_checkpoint_padding_precision():
    assert group_key(CellSpec(batch_size=8)) == group_key(CellSpec(batch_size=32))
    assert group_key(CellSpec(padding="max_length")) != group_key(CellSpec())


def test_a_resolution_stops_the_bisection_early_with_the_answer_still_fitting():
    run, exact_calls = fake_runner(capacity=1000)
    exact = find_max_batch_size(CellSpec(), run, start=64)
    run, coarse_calls = fake_runner(capacity=1000)
    coarse = find_max_batch_size(CellSpec(), run, start=64, resolution=0.05)
    assert exact.max_batch_size == 1000 and exact.first_oom == 1001
    assert coarse.max_batch_size <= 1000 < coarse.first_oom, "still a size that fits and one that does not"
    assert coarse.first_oom - coarse.max_batch_size <= 0.05 * coarse.max_batch_size
    assert len(coarse_calls) < len(exact_calls)
