import time

import pytest
import torch

from harness.measure.steps import PHASES, StepTimer, phase_figures
from harness.measure.timing import (
    BatchCount,
    CountingCollator,
    MeasurementError,
    Sampler,
    group_batches,
    summarize_training,
)


def test_warmup_steps_are_excluded_and_tokens_counted():
    seconds = [5.0, 3.0, 1.0, 1.0, 2.0]  # the first two are warmup
    batches = [BatchCount(8, 100 + i, 200) for i in range(5)] + [BatchCount(8, 999, 999)]  # one prefetched extra
    s = summarize_training(seconds, batches, warmup=2)
    assert s["timed_steps"] == 3 and s["timed_seconds"] == pytest.approx(4.0)
    assert s["timed_samples"] == 24
    assert s["train_samples_per_s"] == pytest.approx(24 / 4.0)
    assert s["train_steps_per_s"] == pytest.approx(3 / 4.0)
    assert s["real_tokens_per_s"] == pytest.approx((102 + 103 + 104) / 4.0)
    assert s["padded_tokens_per_s"] == pytest.approx(600 / 4.0)
    assert s["padding_efficiency"] == pytest.approx(309 / 600)
    assert s["train_real_tokens"] == sum(100 + i for i in range(5))  # the extra batch is not counted
    assert s["step_time_median_s"] == pytest.approx(1.0)


def test_gradient_accumulation_groups_batches_into_steps():
    batches = [BatchCount(4, 10, 20), BatchCount(4, 30, 40), BatchCount(2, 5, 6), BatchCount(2, 7, 8)]
    assert group_batches(batches, steps=2, accumulation=2) == [BatchCount(8, 40, 60), BatchCount(4, 12, 14)]
    s = summarize_training([1.0, 2.0], batches, warmup=1, accumulation=2)
    assert s["timed_samples"] == 4 and s["train_samples_per_s"] == pytest.approx(2.0)


def test_too_few_steps_or_batches_are_errors():
    with pytest.raises(MeasurementError, match="no step is left to time"):
        summarize_training([1.0, 1.0], [BatchCount(1, 1, 1)] * 2, warmup=2)
    with pytest.raises(MeasurementError, match="collator counted 1"):
        summarize_training([1.0, 1.0], [BatchCount(1, 1, 1)], warmup=0)


def test_counting_collator_counts_real_and_padded_tokens(tokenizer):
    from transformers import DataCollatorWithPadding

    features = [tokenizer("a short one"), tokenizer("a somewhat longer sentence than the other one")]
    collate = CountingCollator(DataCollatorWithPadding(tokenizer))
    batch = collate(features)
    width = batch["input_ids"].shape[1]
    assert width == max(len(f["input_ids"]) for f in features)
    lengths = [len(f["input_ids"]) for f in features]
    assert collate.batches == [BatchCount(2, sum(lengths), 2 * width, sum(n * n for n in lengths))]


def test_sampler_keeps_peak_and_a_final_reading():
    values = iter([1.0, 5.0, 2.0] + [3.0] * 1000)
    with Sampler(lambda: next(values), interval_s=0.001) as sampler:
        time.sleep(0.05)
    assert sampler.peak == 5.0 and len(sampler.samples) >= 4


class State:
    def __init__(self, max_steps=0):
        self.global_step, self.max_steps = 0, max_steps


def test_step_timer_marks_every_step_on_the_cpu():
    timer, state = StepTimer(use_cuda=False), State(3)
    timer.on_train_begin(None, state, None)
    for _ in range(3):
        time.sleep(0.01)
        state.global_step += 1
        timer.on_step_end(None, state, None)
    steps = timer.step_seconds()
    assert len(steps) == 3 and all(s >= 0.009 for s in steps)


def test_each_step_is_cut_into_its_phases_which_add_up_to_it():
    """Sleeps planted in each phase come back in that phase; the phases sum to the step."""
    timer, state = StepTimer(use_cuda=False, warmup=1), State(3)
    timer.on_train_begin(None, state, None)
    for _ in range(3):
        time.sleep(0.02)  # fetching the batch
        timer.on_step_begin(None, state, None)
        time.sleep(0.01)  # forward and backward
        timer.on_pre_optimizer_step(None, state, None)
        time.sleep(0.04)  # the optimizer
        timer.on_optimizer_step(None, state, None)
        state.global_step += 1
        timer.on_step_end(None, state, None)
    phases, steps = timer.phase_seconds(), timer.step_seconds()
    assert set(phases) == set(PHASES)
    for i, total in enumerate(steps):
        assert sum(phases[name][i] for name in PHASES) == pytest.approx(total, rel=1e-9)
    assert all(0.035 <= t < 0.1 for t in phases["optimizer"]) and all(0.015 <= t < 0.08 for t in phases["data"])
    figures = phase_figures(phases, warmup=1)
    assert max(PHASES, key=lambda name: figures[f"phase_{name}_s"]) == "optimizer"
    assert sum(figures[f"phase_{name}_share"] for name in PHASES) == pytest.approx(1.0)
    # without the phase callbacks (an older Transformers), steps are timed and phases are unknown
    bare = StepTimer(use_cuda=False)
    bare.on_train_begin(None, State(1), None)
    bare.on_step_end(None, State(1), None)
    assert bare.phase_seconds() is None and len(bare.step_seconds()) == 1


def test_the_timed_window_on_the_host_clock_spans_exactly_the_steps_after_warmup():
    timer, state = StepTimer(use_cuda=False, warmup=2), State(5)
    timer.on_train_begin(None, state, None)
    for _ in range(5):
        time.sleep(0.01)
        state.global_step += 1
        timer.on_step_end(None, state, None)
    steps = timer.step_seconds()
    assert timer.timed_wall_seconds() == pytest.approx(sum(steps[2:]), rel=1e-2)
    assert 0.025 < timer.timed_wall_seconds() < sum(steps)


def test_no_host_window_when_an_evaluation_ran_inside_it_or_training_stopped_early():
    timer, state = StepTimer(use_cuda=False, warmup=1), State(3)
    timer.on_train_begin(None, state, None)
    for step in (1, 2):
        state.global_step = step
        timer.on_step_end(None, state, None)
    timer.on_evaluate(None, state, None, metrics={})
    assert timer.timed_wall_seconds() is None, "step 3 never ended"
    state.global_step = 3
    timer.on_step_end(None, state, None)
    assert timer.timed_wall_seconds() is None, "the evaluation's time is in no step"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA events need a GPU")
def test_step_timer_uses_cuda_events():  # pragma: no cover - GPU only
    timer, state = StepTimer(use_cuda=True, warmup=1), State(2)
    timer.on_train_begin(None, state, None)
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(2):
        x = x @ x
        state.global_step += 1
        timer.on_step_end(None, state, None)
    assert all(s > 0 for s in timer.step_seconds())
    assert timer.timed_wall_seconds() == pytest.approx(timer.step_seconds()[1], rel=0.2)


def test_evaluation_during_training_is_left_out_of_the_steps_and_gives_a_curve():
    timer, state = StepTimer(use_cuda=False), State(3)
    timer.on_train_begin(None, state, None)
    for step in (1, 2):
        time.sleep(0.01)
        state.global_step = step
        timer.on_step_end(None, state, None)
    time.sleep(0.2)  # an evaluation at the epoch's end
    timer.on_evaluate(None, state, None, metrics={"eval_f1": 0.8})
    time.sleep(0.01)
    state.global_step = 3
    timer.on_step_end(None, state, None)
    timer.on_train_end(None, state, None)
    timer.on_evaluate(None, state, None, metrics={"eval_f1": 0.9})  # the final one, after training
    steps = timer.step_seconds()
    assert len(steps) == 3 and max(steps) < 0.1
    (point,) = timer.eval_curve()
    assert point["step"] == 2 and point["eval_f1"] == 0.8
    assert point["train_seconds"] == pytest.approx(sum(steps[:2]))
