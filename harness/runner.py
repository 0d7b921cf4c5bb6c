"""How one cell is fine-tuned: data, model, Trainer, instruments, and the result document.

``prepare_cell`` builds everything a fine-tune needs (so a bare Trainer can be built from
the same pieces, as the overhead benchmark does); ``run_cell`` trains it under the
instruments and returns a ``CellResult`` whatever happens: ``ok``, ``skipped`` with its
reason, ``oom``, or ``error`` with a message that says what was wrong.
"""

from __future__ import annotations

import contextlib
import gc
import math
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import DataCollatorWithPadding, Trainer
from transformers.trainer_callback import PrinterCallback

from . import compat, distributed
from .data import TASKS, DataError, FeatureDataset, TaskData, load_task, tokenize_task
from .launch.progress import NO_BOARD, Board
from .measure import metrics
from .measure.env import environment
from .measure.flops import mfu_figures
from .measure.nvml import cuda_device_uuid, open_sampler
from .measure.timing import (
    CountingCollator,
    MeasurementError,
    ProgressCallback,
    Sampler,
    StepTimer,
    process_rss_bytes,
    summarize_training,
)
from .models import CheckpointError, describe, load_model, load_tokenizer
from .results import CellResult, utc_now
from .sampling import StratifiedBatchOrder, epoch_mean_length
from .spec import CellSpec, SpecError

# The recipe every cell starts from (the BERT repository's and run_glue.py's): AdamW,
# weight decay 0.01 (a CellSpec field), linear schedule without LR warmup, evaluation
# after training.  A matrix may override any of these as TrainingArguments fields.
RECIPE_DEFAULTS: dict[str, Any] = {
    "optim": "adamw_torch",
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "report_to": "none",
    "dataloader_num_workers": 0,
    # The Trainer's NaN/inf loss filter reads the loss on the host every step, a device
    # synchronization inside the timed loop.  A NaN loss still shows in the loss curve.
    "logging_nan_inf_filter": False,
}

LOSS_CURVE_POINTS = 50  # about this many logged losses per cell; each log reads the loss once


def stratify_bucketed(trainer: Trainer, sampler: Any) -> Any:
    """The Trainer's length-grouped sampler, its batches in a stratified order (``sampling.py``)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    if isinstance(sampler, LengthGroupedSampler):
        return StratifiedBatchOrder(sampler, sampler.lengths, int(sampler.batch_size))
    return sampler


class BucketedTrainer(Trainer):
    """A Trainer whose bucketed batches come in an order any window of which stands for the epoch."""

    def _get_train_sampler(self, *args: Any, **kwargs: Any):  # 4.4x takes no argument, 5.x the dataset
        return stratify_bucketed(self, super()._get_train_sampler(*args, **kwargs))


class HarnessTrainer(BucketedTrainer):
    """A Trainer whose training dataloader (only) collates through a counting collator."""

    def __init__(self, *args: Any, train_collator: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator

    def get_train_dataloader(self):
        if self.train_collator is None:
            return super().get_train_dataloader()
        eval_collator = self.data_collator
        self.data_collator = self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator


@dataclass
class PreparedCell:
    spec: CellSpec
    data: TaskData
    train_dataset: FeatureDataset
    eval_dataset: FeatureDataset
    tokenizer: Any
    model: Any
    provenance: dict[str, Any]  # checkpoint and data sources, tokenizer, model shape
    args: transformers.TrainingArguments
    use_cuda: bool

    def collator(self) -> DataCollatorWithPadding:
        return DataCollatorWithPadding(self.tokenizer)

    def make_trainer(self, trainer_cls: type[Trainer] = BucketedTrainer, **kwargs: Any) -> Trainer:
        """A Trainer over this cell.  The Trainer's printer (a print per logged step) is removed."""
        trainer = trainer_cls(
            model=self.model,
            args=self.args,
            train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset,
            data_collator=self.collator(),
            compute_metrics=metrics.compute_metrics,
            **compat.trainer_processing_kwargs(self.tokenizer),
            **kwargs,
        )
        trainer.remove_callback(PrinterCallback)
        return trainer


class CellSkipped(Exception):
    """The cell cannot run on this machine; the message is the reason."""


def precision_unsupported(precision: str, use_cuda: bool, tf32: bool = False) -> str | None:
    """Why this device cannot run ``precision`` (and TF32 matmuls), or None when it can."""
    if tf32 and not use_cuda:
        return "tf32 is a CUDA (Ampere and newer) setting; this cell runs on the CPU"
    if tf32 and torch.cuda.get_device_capability()[0] < 8:
        return f"tf32 needs compute capability 8.0+; {torch.cuda.get_device_name(0)} has none"
    if precision == "fp16" and not use_cuda:
        return "fp16 mixed precision (with loss scaling) needs a CUDA device; this cell runs on the CPU"
    if precision == "bf16" and use_cuda and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(0)
        return f"bf16 needs a GPU with bfloat16 support (compute capability 8.0+); {name} has none"
    return None


def planned_optimizer_steps(spec: CellSpec, n_train: int, accumulation: int, drop_last: bool = False) -> int:
    if spec.max_steps > 0:
        return spec.max_steps
    batches = n_train // spec.batch_size if drop_last else math.ceil(n_train / spec.batch_size)
    per_epoch = max(1, batches // accumulation)
    return int(math.ceil(per_epoch * spec.num_train_epochs))


def prepare_cell(
    spec: CellSpec,
    *,
    use_cuda: bool,
    output_dir: str | Path,
    glue_dir: str | None = None,
    show_progress: bool = False,
) -> PreparedCell:
    reason = precision_unsupported(spec.precision, use_cuda, tf32=bool(spec.extra_training_args.get("tf32")))
    if reason:
        raise CellSkipped(reason)
    if use_cuda and not torch.cuda.is_available():
        raise CellSkipped("the cell asks for a CUDA device and none is visible")

    data = load_task(spec.task, glue_dir)
    tokenizer = load_tokenizer(spec.tokenizer or spec.checkpoint)
    tokenized = tokenize_task(
        data, tokenizer, pad_to_max_length=spec.padding == "max_length", max_length=spec.max_length
    )
    transformers.set_seed(spec.seed)  # the Trainer seeds too, but only after the model exists

    model, model_info = load_model(
        spec.checkpoint, weights=spec.weights, num_labels=TASKS[spec.task].num_labels,
        attn_implementation=spec.attn_implementation,
    )
    provenance = {
        **model_info,
        **describe(model),
        "tokenizer": spec.tokenizer or spec.checkpoint,
        "data_source": data.source,
    }

    extra = {**RECIPE_DEFAULTS, **spec.extra_training_args}
    if extra.get("torch_compile"):
        # A compiled model recompiles for every new batch shape: MRPC's 3,668 pairs leave a
        # partial last batch, which would recompile inside the timed steps.  Compiled cells
        # train on full batches only (evaluation keeps every pair: ``_train_and_evaluate``
        # compiles its shapes in an untimed pass first).
        extra.setdefault("dataloader_drop_last", True)
    accumulation = int(extra.get("gradient_accumulation_steps", 1))
    steps = planned_optimizer_steps(spec, len(tokenized.train), accumulation, bool(extra.get("dataloader_drop_last")))
    extra.setdefault("logging_steps", max(1, steps // LOSS_CURVE_POINTS))
    args = compat.training_arguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.num_train_epochs,
        max_steps=spec.max_steps,
        weight_decay=spec.weight_decay,
        seed=spec.seed,
        fp16=spec.precision == "fp16",
        bf16=spec.precision == "bf16",
        group_by_length=spec.padding == "bucketed",
        # Full fine-tunes evaluate at each epoch's end too (outside the timed steps), for
        # the time-to-quality curve; other cells evaluate once, after training.
        eval_strategy="epoch" if spec.full_finetune else "no",
        save_strategy="no",
        logging_strategy="steps",
        disable_tqdm=not show_progress,
        use_cpu=not use_cuda,
        **({"ddp_backend": "gloo"} if spec.nproc > 1 and not use_cuda else {}),
        **extra,
    )
    return PreparedCell(
        spec=spec,
        data=data,
        train_dataset=tokenized.train,
        eval_dataset=tokenized.validation,
        tokenizer=tokenizer,
        model=model,
        provenance=provenance,
        args=args,
        use_cuda=use_cuda,
    )


def user_callbacks(spec: CellSpec) -> list[Any]:
    """The cell's ``callbacks``, imported and made: a path that does not import is named."""
    import importlib

    made = []
    for path in spec.callbacks:
        module_name, _, name = path.partition(":")
        try:
            made.append(getattr(importlib.import_module(module_name), name)())
        except Exception as exc:  # ImportError, AttributeError, or the constructor's own error
            raise SpecError(f"callback {path!r} could not be made: {type(exc).__name__}: {exc}") from None
    return made


def run_cell(
    spec: CellSpec,
    *,
    run_id: str,
    use_cuda: bool,
    glue_dir: str | None = None,
    show_progress: bool = False,
    board: Board = NO_BOARD,
) -> CellResult:
    """Fine-tune one cell under the instruments, in this process.  Never raises for a failed cell.

    The harness calls it in a fresh child process per measured execution (``harness.launch``);
    a cell of ``nproc > 1`` runs only as ranks under torchrun, started by the launcher.
    """
    started = utc_now()
    env = environment()

    def finish(status: str, reason: str | None = None, **fields: Any) -> CellResult:
        return CellResult(
            spec=spec, status=status, run_id=run_id, env=env, started_at=started,
            finished_at=utc_now(), reason=reason, **fields,
        )

    if spec.nproc > 1 and not distributed.in_worker():
        return finish(
            "error", f"a cell of nproc {spec.nproc} runs as ranks under torchrun: start it with harness.launch.launch_cell"
        )

    scratch = tempfile.TemporaryDirectory(prefix=f"harness-{spec.id}-")
    trainer = prepared = None
    try:
        callbacks = user_callbacks(spec)  # a path that does not import is the cell's error, before any loading
    except SpecError as exc:
        return finish("error", str(exc))
    try:
        prepared = prepare_cell(
            spec, use_cuda=use_cuda, output_dir=scratch.name, glue_dir=glue_dir, show_progress=show_progress
        )
        counting = CountingCollator(prepared.collator())
        timer = StepTimer(use_cuda=use_cuda, warmup=spec.timing_warmup_steps)
        trainer = prepared.make_trainer(
            HarnessTrainer, train_collator=counting, callbacks=[timer, ProgressCallback(board), *callbacks]
        )
        figures, samples = _train_and_evaluate(trainer, prepared, counting, timer, board)
        figures["majority_class_accuracy"] = prepared.data.majority_rate
        return finish("ok", metrics=figures, samples=samples, provenance=prepared.provenance)
    except CellSkipped as exc:
        return finish("skipped", str(exc))
    except torch.cuda.OutOfMemoryError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "CUDA out of memory"
        return finish(
            "oom",
            f"out of GPU memory at batch_size={spec.batch_size}, precision={spec.precision}: {first}",
            provenance=prepared.provenance if prepared else {},
        )
    except (CheckpointError, DataError, MeasurementError) as exc:
        return finish("error", str(exc))
    except Exception as exc:  # a crashed cell must not take the rest of the matrix with it
        tb = traceback.format_exc(limit=8)
        return finish("error", f"{type(exc).__name__}: {exc}\n{tb}")
    finally:
        del trainer, prepared
        gc.collect()
        if use_cuda and torch.cuda.is_available():
            torch.cuda.empty_cache()
        scratch.cleanup()


def _synchronize(use_cuda: bool) -> None:
    if use_cuda:
        torch.cuda.synchronize()


def _train_and_evaluate(
    trainer: HarnessTrainer, prepared: PreparedCell, counting: CountingCollator, timer: StepTimer, board: Board = NO_BOARD
) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, use_cuda = prepared.spec, prepared.use_cuda
    nvml = None
    if use_cuda:
        torch.cuda.reset_peak_memory_stats()
        device = torch.cuda.current_device()
        nvml = open_sampler(device, uuid=cuda_device_uuid(device))
    sampler = Sampler(process_rss_bytes)

    _synchronize(use_cuda)
    with sampler, (nvml or contextlib.nullcontext()):
        t0 = time.perf_counter()
        trainer.train()
        _synchronize(use_cuda)
        train_wall = time.perf_counter() - t0

    accumulation = trainer.args.gradient_accumulation_steps
    step_seconds = timer.step_seconds()
    world = trainer.args.world_size
    batches = counting.batches
    if world > 1:  # every rank's batches, summed per step: global figures
        batches, accumulation = distributed.gather_batches(batches, len(step_seconds), accumulation), 1
    figures: dict[str, Any] = summarize_training(
        step_seconds, batches, warmup=spec.timing_warmup_steps, accumulation=accumulation
    )
    # Does the timed window stand for the epoch?  Its real tokens per sample over the
    # training set's (1.0: exactly the epoch's average sequence length).
    epoch_mean = epoch_mean_length(_real_lengths(prepared.train_dataset))
    if figures["timed_samples"] and epoch_mean:
        figures["timed_window_token_ratio"] = figures["timed_real_tokens"] / figures["timed_samples"] / epoch_mean
    figures["train_wall_s"] = train_wall
    # The same timed steps on the host's clock, synchronized at both ends: the events' sum
    # over it is 1.0 when the events time what the host waited for.
    figures["timed_wall_s"] = timer.timed_wall_seconds()
    if figures["timed_wall_s"]:
        figures["event_wall_ratio"] = figures["timed_seconds"] / figures["timed_wall_s"]
    figures["train_samples"] = sum(b.samples for b in batches[: len(step_seconds) * accumulation])
    figures["world_size"] = world
    figures["global_batch_size"] = spec.batch_size * world * trainer.args.gradient_accumulation_steps
    if world > 1:
        figures["per_device_samples_per_s"] = figures["train_samples_per_s"] / world
    figures["peak_rss_bytes"] = sampler.peak
    if use_cuda:
        figures["peak_mem_allocated_bytes"] = torch.cuda.max_memory_allocated()
        figures["peak_mem_reserved_bytes"] = torch.cuda.max_memory_reserved()
        if nvml is not None:  # the device's own view: memory, power, energy, clocks, throttling
            figures.update(nvml.summary.figures(figures["train_samples"]))
    shape = prepared.provenance
    figures.update(mfu_figures(
        layer_params=shape["layer_parameters"], num_layers=shape["num_layers"], hidden_size=shape["hidden_size"],
        real_tokens=figures.pop("timed_real_tokens"), sum_sq_lengths=figures.pop("timed_sum_sq_lengths"),
        seconds=figures["timed_seconds"], gpu_name=torch.cuda.get_device_name() if use_cuda else None,
        precision=spec.precision, tf32=bool(spec.extra_training_args.get("tf32")), devices=world,
        measured_peak_tflops=measured_peak_tflops(spec.precision, bool(spec.extra_training_args.get("tf32")))
        if use_cuda else None,
    ))

    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    figures["final_train_loss"] = losses[-1][1] if losses else None

    if spec.evaluate:
        board.phase("evaluating")
        if trainer.args.torch_compile:  # compile every evaluation shape outside the timed pass
            trainer.evaluate()
        _synchronize(use_cuda)
        t0 = time.perf_counter()
        result = trainer.evaluate()
        _synchronize(use_cuda)
        eval_wall = time.perf_counter() - t0
        n_eval = len(prepared.eval_dataset)
        figures.update(
            eval_wall_s=eval_wall,
            eval_samples=n_eval,
            eval_samples_per_s=n_eval / eval_wall,
            eval_loss=result.get("eval_loss"),
            eval_accuracy=result.get("eval_accuracy"),
            eval_f1=result.get("eval_f1"),
        )
    per_step = _per_step_counts(batches, len(step_seconds), accumulation)
    samples = {
        "step_seconds": step_seconds,
        # What each optimizer step trained on: with step_seconds, every throughput figure
        # can be derived again from the stored document (``measure.summarize_steps``).
        "step_samples": [b.samples for b in per_step],
        "step_real_tokens": [b.real_tokens for b in per_step],
        "step_padded_tokens": [b.padded_tokens for b in per_step],
        "loss_curve": [[step, loss] for step, loss in losses],
        "eval_curve": timer.eval_curve(),
        "rss_samples_bytes": sampler.samples[:: max(1, len(sampler.samples) // 200)],
    }
    if nvml is not None:
        every = max(1, len(nvml.summary.samples) // 200)
        samples["nvml"] = [vars(s) for s in nvml.summary.samples[::every]]
    return figures, samples


MEASURED_PEAKS_ENV = "HARNESS_MEASURED_PEAKS"


def measured_peak_tflops(precision: str, tf32: bool = False) -> float | None:
    """The dense matmul rate measured on this device (``python -m harness ceilings --out
    FILE``, named by ``HARNESS_MEASURED_PEAKS``) for the cell's precision; None without one."""
    import json
    import os

    path = os.environ.get(MEASURED_PEAKS_ENV)
    if not path:
        return None
    try:
        peaks = json.loads(Path(path).read_text())["matmul_tflops"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    key = "tf32" if precision == "fp32" and tf32 else precision
    value = peaks.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _real_lengths(dataset: FeatureDataset) -> list[int]:
    """Each training example's real (attended) length, max_length padding excluded."""
    out = []
    for feature in dataset.features:
        mask = feature.get("attention_mask")
        out.append(int(sum(mask)) if mask is not None else len(feature["input_ids"]))
    return out


def _per_step_counts(batches: list[Any], steps: int, accumulation: int) -> list[Any]:
    from .measure.timing import group_batches

    return group_batches(batches, steps, accumulation)
