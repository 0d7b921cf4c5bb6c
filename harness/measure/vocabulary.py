"""The figures' vocabulary, declared once: each figure's name, unit, which way is worse, its
short label, and what kind of figure it is.  The gate (which figures a threshold may name,
and which way is a regression), compare, the terminal summary and the report read it; none
spells a figure's name again.

Imports nothing from the harness: every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

FALL, RISE, NEITHER = -1, +1, 0  # which way is worse


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    worse: int  # FALL: a fall is worse (throughput, quality); RISE: a rise is (time, memory); NEITHER
    label: str  # a table's column heading
    kind: str  # "speed", "memory", "time", "quality", "numerics", "energy", "efficiency" or "count"
    gated: bool = False  # a threshold may name it (``judge/thresholds.py``)

    @property
    def higher_is_better(self) -> bool:
        return self.worse == FALL


# The names code uses; each is a key of FIGURES.
THROUGHPUT = "train_samples_per_s"
STEPS_PER_S = "train_steps_per_s"
REAL_TOKENS_PER_S = "real_tokens_per_s"
PADDED_TOKENS_PER_S = "padded_tokens_per_s"
EVAL_SAMPLES_PER_S = "eval_samples_per_s"
TRAIN_WALL = "train_wall_s"
EVAL_WALL = "eval_wall_s"
ALLOCATED = "peak_mem_allocated_bytes"
RESERVED = "peak_mem_reserved_bytes"
DEVICE_USED = "peak_device_mem_used_bytes"
RSS = "peak_rss_bytes"
ACCURACY = "eval_accuracy"
F1 = "eval_f1"
PADDING_EFFICIENCY = "padding_efficiency"
STEP_TIME = "step_time_median_s"
ENERGY_PER_SAMPLE = "energy_per_sample_j"
MFU = "mfu"
FINAL_LOSS = "final_train_loss"
LOSS_DETERMINISM = "loss_determinism"  # same seed, repeats: the largest relative spread of their loss curves
LOSS_MEAN = "train_loss_mean"  # the mean loss over the timed steps
LOSS_LAST = "train_loss_last"  # the mean loss of the curve's last steps
PRECISION_DEVIATION = "precision_deviation"  # fp16/bf16: the largest relative deviation from the fp32 twin's curve
TIME_TO_QUALITY = "time_to_quality_s"  # full fine-tunes: training seconds until accuracy and F1 reach their band
SAMPLES_TO_QUALITY = "samples_to_quality"  # and the training samples
ACHIEVED_TFLOPS = "achieved_tflops"
ENERGY = "energy_j"
# The headline memory figure, read from the first of MEMORY_BY_PREFERENCE a result holds.
PEAK_MEMORY = "peak_memory"
# Counts a result records beside its figures, with no unit or direction to declare.
THROTTLED = "throttled"  # 1 where the GPU throttled during training
WORLD_SIZE = "world_size"  # processes of a multi-process cell
REPEATS = "repeats"  # measurements the figures are the median of
# Where a step's time goes (``steps.PHASES``): mean seconds per timed step, and its share.
PHASE_NAMES = ("data", "forward_backward", "optimizer", "other")
PHASE_TIMES = tuple(f"phase_{name}_s" for name in PHASE_NAMES)
PHASE_LABELS = {"data": "data", "forward_backward": "fwd+bwd", "optimizer": "optimizer", "other": "other"}

FIGURES: dict[str, Figure] = {f.name: f for f in (
    Figure(THROUGHPUT, "samples/s", FALL, "samples/s", "speed", gated=True),
    Figure(STEPS_PER_S, "steps/s", FALL, "steps/s", "speed", gated=True),
    Figure(REAL_TOKENS_PER_S, "tokens/s", FALL, "real tok/s", "speed", gated=True),
    Figure(PADDED_TOKENS_PER_S, "tokens/s", FALL, "padded tok/s", "speed", gated=True),
    Figure(EVAL_SAMPLES_PER_S, "samples/s", FALL, "eval samples/s", "speed", gated=True),
    Figure(TRAIN_WALL, "s", RISE, "train s", "time", gated=True),
    Figure(EVAL_WALL, "s", RISE, "eval s", "time", gated=True),
    Figure(ALLOCATED, "bytes", RISE, "allocated", "memory", gated=True),
    Figure(RESERVED, "bytes", RISE, "reserved", "memory", gated=True),
    Figure(DEVICE_USED, "bytes", RISE, "device used", "memory", gated=True),
    Figure(RSS, "bytes", RISE, "peak RSS", "memory", gated=True),
    Figure(ACCURACY, "fraction", FALL, "acc", "quality"),
    Figure(F1, "fraction", FALL, "f1", "quality"),
    Figure(PADDING_EFFICIENCY, "fraction", NEITHER, "pad eff", "efficiency"),
    Figure(STEP_TIME, "s", RISE, "step s", "time"),
    Figure(ENERGY_PER_SAMPLE, "J", RISE, "J/sample", "energy"),
    Figure(MFU, "fraction", FALL, "MFU", "efficiency"),
    Figure(FINAL_LOSS, "loss", RISE, "loss", "quality"),
    Figure(LOSS_DETERMINISM, "fraction", RISE, "loss spread", "numerics"),
    Figure(LOSS_MEAN, "loss", NEITHER, "mean loss", "numerics"),
    Figure(LOSS_LAST, "loss", NEITHER, "last loss", "numerics"),
    Figure(PRECISION_DEVIATION, "fraction", RISE, "vs fp32", "numerics"),
    Figure(TIME_TO_QUALITY, "s", RISE, "s to quality", "quality", gated=True),
    Figure(SAMPLES_TO_QUALITY, "samples", RISE, "samples to quality", "quality", gated=True),
    Figure(ACHIEVED_TFLOPS, "TFLOP/s", FALL, "TFLOP/s", "efficiency"),
    Figure(ENERGY, "J", RISE, "energy J", "energy"),
    Figure(PEAK_MEMORY, "bytes", RISE, "peak mem", "memory"),
    *(Figure(f"phase_{name}_s", "s", RISE, f"{PHASE_LABELS[name]} s/step", "time") for name in PHASE_NAMES),
    *(Figure(f"phase_{name}_share", "fraction", NEITHER, f"{PHASE_LABELS[name]} share", "time") for name in PHASE_NAMES),
)}

# Threshold-able figures and the way that is a regression.
GATED: dict[str, int] = {f.name: f.worse for f in FIGURES.values() if f.gated}
QUALITY = (ACCURACY, F1)  # the gated quality figures, held against a band
# The rates of the timed training steps: one slowdown of the steps scales all four.
TRAINING_RATES = (THROUGHPUT, STEPS_PER_S, REAL_TOKENS_PER_S, PADDED_TOKENS_PER_S)
# Device memory as the report shows it: the allocator's reserved peak on a GPU, RSS on a CPU.
MEMORY_BY_PREFERENCE = (RESERVED, RSS)
# Which memory the headline is, as a word beside it: "1.3 GiB (rss)".
MEMORY_SOURCE = {RESERVED: "reserved", RSS: "rss"}


def kind_of(name: str) -> str:
    """A figure's kind; an undeclared ``*_bytes`` figure is memory, anything else speed."""
    figure = FIGURES.get(name)
    if figure is not None:
        return figure.kind
    return "memory" if name.endswith("_bytes") else "speed"


def label_of(name: str) -> str:
    figure = FIGURES.get(name)
    return figure.label if figure is not None else name
