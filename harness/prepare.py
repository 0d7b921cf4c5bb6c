"""How a cell is made ready to fine-tune: data, tokenizer, model, TrainingArguments, and the
Trainer classes the harness and the bare overhead check build from the same pieces.

``prepare_cell`` is what both ``runner.run_cell`` (under the instruments) and the bare
Trainer of ``overhead.py`` start from; a cell this device cannot run raises ``CellSkipped``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import DataCollatorWithPadding, Trainer
from transformers.trainer_callback import PrinterCallback

from . import compat
from .data import TASKS, FeatureDataset, TaskData, load_task, tokenize_task
from .measure import metrics
from .models import describe, load_model, load_tokenizer
from .sampling import StratifiedBatchOrder
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
    """A Trainer whose training dataloader (only) collates through a counting collator, and
    whose every step's loss a divergence guard sees (``measure/numerics.py``)."""

    def __init__(self, *args: Any, train_collator: Any = None, guard: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator
        self.guard = guard

    def training_step(self, *args: Any, **kwargs: Any):
        loss = super().training_step(*args, **kwargs)
        if self.guard is not None:
            self.guard.observe(self.state.global_step + 1, loss)
        return loss

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
        "tokenizer_source": getattr(tokenizer, "harness_source", None),
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


def callback_sources(spec: CellSpec) -> list[dict[str, Any]]:
    """What code the cell's ``callbacks`` ran: each path, its module's file and the file's
    sha256 (a matrix's callbacks import code; the result says which)."""
    import hashlib
    import sys

    out = []
    for path in spec.callbacks:
        module = sys.modules.get(path.partition(":")[0])
        file = getattr(module, "__file__", None)
        try:
            digest = hashlib.sha256(Path(file).read_bytes()).hexdigest() if file else None
        except OSError:
            digest = None
        out.append({"path": path, "file": file, "sha256": digest})
    return out
