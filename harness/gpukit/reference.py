"""The harness's cost, measured against training without it.  Imports nothing from ``harness``.

    python reference.py --mrpc GLUE/MRPC --tokenizer MODEL_DIR --out reference.json [--repeats 2]

Fine-tunes the same cell as the harness's ``gpu-slice`` bf16 batch-32 cell (bert-base-uncased
with random weights from its published config, MRPC with dynamic padding, max length 128,
AdamW lr 2e-5, weight decay 0.01, linear schedule, 300 steps, seed 42, bf16 autocast, 20
warmup steps) two ways, alternating, each from the same seeded initial weights:

* ``trainer``: a bare ``transformers.Trainer`` with the harness's TrainingArguments and no
  instrument but one callback that records a CUDA event per optimizer step (and the
  Trainer's default logging, which reads the loss every 500 steps: never in 300);
* ``loop``: a bare PyTorch loop (autocast, backward, gradient clipping at 1.0, AdamW,
  linear schedule) over the Trainer's own dataloader, so the batches are the very same.

Both are timed with CUDA events per step over the steps after warmup, checked against a
synchronized ``perf_counter`` over the same steps.  The figures: samples/s, real tokens of
the timed batches (equal on both sides when the batches are the same), the last loss, peak
allocated and reserved memory, and the device memory a CUDA context alone takes.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import transformers

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12,
                 pad_token_id=0)
BATCH, LR, WEIGHT_DECAY, SEED, MAX_LENGTH = 32, 2e-5, 0.01, 42, 128
STEPS, WARMUP = 300, 20  # --steps and --warmup change them (the CPU test runs a few steps)
DEVICE = "cuda"  # --cpu: a check of this script's logic on a CPU (in fp32: CPUs emulate bf16 slowly)


class HostEvent:
    """``torch.cuda.Event``'s interface on the host clock, for --cpu."""

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


def synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Features(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def mrpc_train(folder: Path, tokenizer) -> Features:
    """train.tsv read with quoting off (the MSR text has unbalanced quotes), as the harness does."""
    with (folder / "train.tsv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    enc = tokenizer([r[3] for r in rows], [r[4] for r in rows], truncation=True, max_length=MAX_LENGTH)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    return Features([{k: enc[k][i] for k in keys} | {"labels": int(rows[i][0])} for i in range(len(rows))])


class Marks(transformers.TrainerCallback):
    """A CUDA event at the end of each optimizer step; synchronized host time at the window's edges."""

    def __init__(self):
        self.events, self.wall = [], {}

    def on_step_end(self, args, state, control, **kwargs):
        mark(self, state.global_step, state.max_steps)


def mark(marks, step: int, last: int) -> None:
    event = torch.cuda.Event(enable_timing=True) if DEVICE == "cuda" else HostEvent()
    event.record()
    marks.events.append(event)
    if step in (WARMUP, last):
        synchronize()
        marks.wall[step] = time.perf_counter()


def training_args(out: str) -> transformers.TrainingArguments:
    return transformers.TrainingArguments(
        output_dir=out, per_device_train_batch_size=BATCH, learning_rate=LR, max_steps=STEPS,
        weight_decay=WEIGHT_DECAY, seed=SEED, bf16=DEVICE == "cuda", optim="adamw_torch", lr_scheduler_type="linear",
        warmup_steps=0, report_to="none", dataloader_num_workers=0, save_strategy="no", eval_strategy="no",
        disable_tqdm=True, logging_nan_inf_filter=False, use_cpu=DEVICE == "cpu",
    )


def model_kwargs() -> dict:
    major_minor = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype" if major_minor >= (4, 56) else "torch_dtype": torch.float32}


def fresh_model(layers: int | None = None):
    transformers.set_seed(SEED)
    config = transformers.BertConfig(num_labels=2, **{**BERT_BASE, **({"num_hidden_layers": layers} if layers else {})})
    return transformers.AutoModelForSequenceClassification.from_config(config, **model_kwargs())


def trainer_for(model, data, tokenizer, scratch: str, callbacks=()):
    trainer = transformers.Trainer(model=model, args=training_args(scratch), train_dataset=data,
                                   data_collator=transformers.DataCollatorWithPadding(tokenizer),
                                   callbacks=list(callbacks))
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)
    return trainer


def figures(marks, batches: list[dict], losses: list[float]) -> dict:
    steps = [a.elapsed_time(b) / 1e3 for a, b in zip(marks.events, marks.events[1:])]
    timed = steps[WARMUP - 1:]  # from the end of step WARMUP to the end of the last step
    samples = sum(b["samples"] for b in batches[WARMUP:STEPS])
    seconds = sum(timed)
    wall = marks.wall[STEPS] - marks.wall[WARMUP]
    return {
        "steps": len(steps) + 1, "timed_steps": len(timed), "timed_seconds": seconds, "timed_wall_s": wall,
        "event_wall_ratio": seconds / wall, "timed_samples": samples,
        "timed_real_tokens": sum(b["real_tokens"] for b in batches[WARMUP:STEPS]),
        "train_samples_per_s": samples / seconds, "wall_samples_per_s": samples / wall,
        "step_time_median_s": statistics.median(timed), "final_loss": losses[-1] if losses else None,
        "peak_mem_allocated_bytes": torch.cuda.max_memory_allocated() if DEVICE == "cuda" else None,
        "peak_mem_reserved_bytes": torch.cuda.max_memory_reserved() if DEVICE == "cuda" else None,
    }


def counted(collator, batches: list[dict]):
    def collate(features):
        batch = collator(features)
        batches.append({"samples": int(batch["input_ids"].shape[0]),
                        "real_tokens": int(batch["attention_mask"].sum())})
        return batch
    return collate


def reset_peaks():
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def run_trainer(data, tokenizer, layers=None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        marks, batches = Marks(), []
        trainer = trainer_for(fresh_model(layers), data, tokenizer, scratch, [marks])
        trainer.data_collator = counted(trainer.data_collator, batches)
        reset_peaks()
        trainer.train()
        synchronize()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        out = figures(marks, batches, losses)
        out["final_loss"] = out["final_loss"] if losses else trainer.state.log_history[-1].get("train_loss")
    del trainer
    return out


def run_loop(data, tokenizer, layers=None) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        batches = []
        model = fresh_model(layers)
        # The Trainer's own dataloader (its sampler, seed, pinning and device placement):
        # the loop trains on the very batches the Trainer would.
        loader_owner = trainer_for(model, data, tokenizer, scratch)
        loader_owner.data_collator = counted(loader_owner.data_collator, batches)
        loader = loader_owner.get_train_dataloader()
        model = model.to(DEVICE)
        decay = [p for n, p in model.named_parameters() if not ("bias" in n or "LayerNorm" in n or "layer_norm" in n)]
        no_decay = [p for n, p in model.named_parameters() if "bias" in n or "LayerNorm" in n or "layer_norm" in n]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=LR, eps=1e-8)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, (STEPS - s) / STEPS))

        marks = types.SimpleNamespace(events=[], wall={})
        reset_peaks()
        model.train()
        step, loss = 0, None
        while step < STEPS:
            for batch in loader:
                batch = {k: v.to(DEVICE, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                mark(marks, step, STEPS)
                if step == STEPS:
                    break
        synchronize()
        out = figures(marks, batches, [float(loss.detach())])
    del model, optimizer, loader_owner
    return out


def main(argv=None) -> int:
    global STEPS, WARMUP, DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mrpc", type=Path, required=True, help="the MRPC folder (train.tsv)")
    parser.add_argument("--tokenizer", required=True, help="a tokenizer with bert-base-uncased's vocabulary")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--layers", type=int, help="fewer encoder layers (the CPU check)")
    parser.add_argument("--cpu", action="store_true", help="check this script's logic on a CPU (figures meaningless)")
    args = parser.parse_args(argv)
    STEPS, WARMUP, DEVICE = args.steps, args.warmup, "cpu" if args.cpu else "cuda"
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: the reference runs on a GPU (--cpu checks its logic only)", file=sys.stderr)
        return 2
    context = None
    if DEVICE == "cuda":
        torch.zeros(1, device="cuda")
        free, total = torch.cuda.mem_get_info()
        context = total - free
    record = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "context_device_used_bytes": context,
              "cell": {"checkpoint": "bert-base-uncased (random)", "batch_size": BATCH, "precision": "bf16",
                       "padding": "dynamic", "max_steps": STEPS, "timing_warmup_steps": WARMUP, "seed": SEED},
              "trainer": [], "loop": []}
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.tokenizer)
    data = mrpc_train(args.mrpc, tokenizer)
    for _ in range(args.repeats):
        for side, fn in (("loop", run_loop), ("trainer", run_trainer)):
            record[side].append(fn(data, tokenizer, args.layers))
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
            args.out.write_text(json.dumps(record, indent=2))  # whatever happens next, this much is kept
            print(side, f"{record[side][-1]['train_samples_per_s']:.1f} samples/s", flush=True)
    for side in ("loop", "trainer"):
        record[f"{side}_samples_per_s_median"] = statistics.median(r["train_samples_per_s"] for r in record[side])
    args.out.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
