"""How one cell is fine-tuned under the instruments, and its result document.

``run_cell`` trains a prepared cell (``prepare.py``) with the step timer, the counting
collator, the memory samplers and NVML around it, and returns a ``CellResult`` whatever
happens: ``ok``, ``skipped`` with its reason, ``oom``, or ``error`` with a message that says
what was wrong.
"""

from __future__ import annotations

import contextlib
import gc
import tempfile
import time
import traceback
from typing import Any

import torch

from . import distributed
from .data import DataError, FeatureDataset
from .launch.progress import NO_BOARD, Board
from .measure.ceilings import measured_peak_tflops
from .measure.devices import cuda_device_uuid
from .measure.env import environment
from .measure.flops import mfu_figures
from .measure.numerics import Diverged, DivergenceGuard, loss_figures
from .measure.nvml import open_sampler
from .measure.profile import ProfileCallback, requested_steps
from .measure.steps import StepTimer, phase_figures
from .measure.timing import (
    CountingCollator,
    MeasurementError,
    ProgressCallback,
    Sampler,
    process_rss_bytes,
    summarize_training,
)
from .models import CheckpointError
from .prepare import CellSkipped, HarnessTrainer, PreparedCell, callback_sources, prepare_cell, user_callbacks
from .results import CellResult, utc_now
from .sampling import epoch_mean_length
from .spec import CellSpec, SpecError


def sources_of(provenance: dict[str, Any], data: Any) -> dict[str, str]:
    """Which data and weights ran, by revision: a hub commit, a package, or the data files'
    hash; a local folder only as ``local`` (its path moves from machine to machine).  In the
    environment, so that ``env_changes`` names a moved revision."""
    out = {"data": data.source if data.source.startswith("hub:") else f"files:sha256:{data.fingerprint[:16]}"}
    for what in ("checkpoint", "tokenizer"):
        value = provenance.get(f"{what}_source")
        if value:
            out[what] = value
    return out


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
    env = dict(environment())

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
        guard = DivergenceGuard(use_cuda)
        profiling = [ProfileCallback(use_cuda, spec.timing_warmup_steps, steps)] if (steps := requested_steps()) else []
        trainer = prepared.make_trainer(
            HarnessTrainer, train_collator=counting, guard=guard,
            callbacks=[timer, ProgressCallback(board), *profiling, *callbacks],
        )
        if profiling:  # an execution of its own: a few steps under the profiler, nothing timed
            trainer.train()
            table = profiling[0].table
            if table is None:
                return finish("error", f"the cell trained fewer than {spec.timing_warmup_steps + steps} steps: "
                                       "nothing to profile after its warmup", provenance=prepared.provenance)
            return finish("ok", provenance=prepared.provenance, samples={"profile": table})
        try:
            figures, samples = _train_and_evaluate(trainer, prepared, counting, timer, board)
        except Diverged as exc:  # stopped at its step: what was measured before it is kept
            return finish("error", str(exc), provenance=prepared.provenance, metrics={"diverged_at_step": exc.step},
                          samples={"failure": {"kind": "diverged", "step": exc.step, "loss": exc.value, "why": exc.why},
                                   "step_seconds": timer.step_seconds(), "step_losses": guard.losses})
        samples["step_losses"] = guard.losses
        figures.update(loss_figures(guard.losses, spec.timing_warmup_steps))  # the curve, judged in every cell
        figures["majority_class_accuracy"] = prepared.data.majority_rate
        provenance = {**prepared.provenance, **({"callbacks": callback_sources(spec)} if spec.callbacks else {})}
        env["sources"] = sources_of(provenance, prepared.data)
        return finish("ok", metrics=figures, samples=samples, provenance=provenance)
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
    if trainer.guard is not None:
        trainer.guard.finish()  # the last chunk of losses (a GPU's), read after training

    accumulation = trainer.args.gradient_accumulation_steps
    step_seconds = timer.step_seconds()
    world = trainer.args.world_size
    batches = counting.batches
    if world > 1:  # every rank's batches, summed per step: global figures
        batches, accumulation = distributed.gather_batches(batches, len(step_seconds), accumulation), 1
    figures: dict[str, Any] = summarize_training(
        step_seconds, batches, warmup=spec.timing_warmup_steps, accumulation=accumulation
    )
    phases = timer.phase_seconds()  # where each step's time went: data, forward+backward, optimizer, other
    figures.update(phase_figures(phases, spec.timing_warmup_steps))
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
        "step_phases": phases,
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
