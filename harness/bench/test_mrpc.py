"""One pytest test per matrix cell: `pytest benchmarks/ [-k ID] [--gpu] [--matrix NAME]`.

Each cell is fine-tuned once under pytest-benchmark; its figures go to
results/runs/<run-id>/<cell-id>.json and to the benchmark's extra_info.
"""


def test_cell(cell, run_benchmark_cell):
    result = run_benchmark_cell(cell)
    m = result.metrics
    assert m["train_samples_per_s"] > 0 and m["timed_steps"] > 0

    if cell.full_finetune:
        # A fine-tune that cannot beat always answering the majority label has not learned.
        floor = m["majority_class_accuracy"] + 0.05
        assert m["eval_accuracy"] >= floor, (
            f"{cell.id}: validation accuracy {m['eval_accuracy']:.3f} is not well above the "
            f"{m['majority_class_accuracy']:.3f} of always answering the majority label "
            f"(needs >= {floor:.3f}); the fine-tune did not learn"
        )


def test_max_batch_size(batch_search_cell, find_max_batch):
    """Runs only with --find-max-batch-size: one search per checkpoint, padding, precision."""
    find_max_batch(batch_search_cell)  # fails the test when a probe errors; the answer goes to the summary
