#!/usr/bin/env bash
# GPU first light, in one call on a lent GPU machine:  bash gpu-kit/first_light.sh
#
# Steps, each under its own `timeout` inside one budget (FIRST_LIGHT_BUDGET_S, default 390 s);
# FIRST_LIGHT_STEPS names the ones to run (default: all, in this order):
#   facts      nvidia-smi -q, library versions, the packages there (and again at the end)
#   kit        the kit's model loads in fp32, MRPC reads whole
#   ceilings   bf16/fp16 8192^3 and fp32/tf32 4096^3 matmuls, a 2 GiB device copy (event-timed)
#   reference  a bare PyTorch loop and a bare Trainer on the bf16 batch-32 cell (reference.py)
#   slice      the gpu-slice matrix without `compiled`, 2 repeats
#   tests      tests/test_gpu.py without the max-batch search
#   overhead   the bare Trainer against the harness on the bf16 batch-32 cell (ABBA, 2 repeats)
# then the summary (first-light.md).  On the H200 lent on 2026-11-30 a bert-base child took
# about 28 s (a host-bound 53 ms step), so all of it is two calls of about 6 minutes:
#   FIRST_LIGHT_STEPS="facts kit ceilings reference slice", then "facts ceilings tests overhead".
# Everything is written under a scratch folder and packed into $OUT/bundle.tar.gz after every
# step and on exit, whatever ended the script; $OUT's top level holds only summary.txt,
# first-light.md and bundle.tar.gz (a device call returns at most 8 files, 2 folders down).
set -u
KIT=$(cd "$(dirname "$0")" && pwd)
ROOT=${HARNESS_ROOT:-$(cd "$KIT/.." && pwd)}   # the project checkout (the kit lives in it)
OUT=${OUT:-$KIT/out}
PY=${PYTHON:-python3}   # the interpreter with torch (the GPU machines have python3, no python)
BUDGET=${FIRST_LIGHT_BUDGET_S:-390}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/first-light.XXXXXX")
T0=$(date +%s)
mkdir -p "$OUT" "$WORK/logs" "$WORK/facts" "$WORK/results"
: >"$WORK/summary.txt"

say() { echo "$*" | tee -a "$WORK/summary.txt"; }
pack() {
    cp "$WORK/summary.txt" "$OUT/summary.txt" 2>/dev/null
    [ -f "$WORK/first-light.md" ] && cp "$WORK/first-light.md" "$OUT/first-light.md"
    tar -czf "$OUT/.bundle.tmp" -C "$WORK" . 2>/dev/null && mv -f "$OUT/.bundle.tmp" "$OUT/bundle.tar.gz"
}
reap() {  # a step killed at its timeout must not leave cells training on the GPU
    pkill -TERM -f "harness.worker|harness.launch.zygote|reference.py --mrpc" 2>/dev/null
    sleep 1
    pkill -KILL -f "harness.worker|harness.launch.zygote|reference.py --mrpc" 2>/dev/null
    return 0
}
trap 'say "stopped by a signal after $(( $(date +%s) - T0 )) s"; reap; pack; exit 143' TERM INT HUP
trap 'pack' EXIT

# step NAME SECONDS COMMAND...: runs COMMAND under `timeout` for at most SECONDS (less when
# the budget has less left), logs to logs/NAME.log, says how it ended, and packs.
STEPS=" ${FIRST_LIGHT_STEPS:-facts kit ceilings reference slice tests overhead} "
step() {
    local name=$1 want=$2; shift 2
    case "$STEPS" in *" ${name%%-*} "*|*" $name "*) ;; *) [ "$name" != summarize ] && return ;; esac
    local left=$(( BUDGET - ($(date +%s) - T0) - 10 ))
    local limit=$(( want < left ? want : left ))
    if [ "$limit" -lt 15 ]; then say "$name: not run (${left} s of the budget left)"; return; fi
    local t=$(date +%s)
    # In a new bash that knows this script's functions (`timeout` runs commands, not functions);
    # `timeout` signals its whole process group, and reap() takes the cells' own groups.
    timeout -k 5 "$limit" bash -c "$(declare -f); \"\$@\"" "$name" "$@" >"$WORK/logs/$name.log" 2>&1
    local rc=$?
    local how="exit $rc"; [ $rc -eq 124 ] && how="stopped at its ${limit} s limit"
    say "$name: $how in $(( $(date +%s) - t )) s ($(tail -n 1 "$WORK/logs/$name.log" | cut -c1-160))"
    [ $rc -eq 124 ] && reap
    pack
}

cd "$ROOT"
if ! "$PY" -c "import psutil, tabulate, pynvml" 2>/dev/null; then
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/first-light-site.XXXXXX")
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$KIT"/wheels/*.whl >"$WORK/logs/pip.log" 2>&1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT:$KIT/py${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GLUE_DIR="$KIT/glue" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HARNESS_CACHE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/first-light-cache.XXXXXX")   # not packed
export HARNESS_MEASURED_PEAKS="$WORK/ceilings.json"
export PY WORK KIT ROOT
PLUGIN="-p harness.pytest_plugin"
# Installed (an entry point registers the plugin): no -p, or pytest would register it twice.
"$PY" -c "import importlib.metadata as m; m.version('trainer-bench-harness')" 2>/dev/null && PLUGIN=""
export PLUGIN
CUDA=0; "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && CUDA=1

facts() {
    date -u
    nvidia-smi -q 2>&1 || echo "no nvidia-smi"
    "$PY" -c "import sys, torch, transformers, accelerate
print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda)
print('transformers', transformers.__version__, 'accelerate', accelerate.__version__)
print('cuda available', torch.cuda.is_available())"
}
step facts-before 20 facts
cp "$WORK/logs/facts-before.log" "$WORK/facts/nvidia-smi-before.txt" 2>/dev/null
"$PY" -m pip list >"$WORK/facts/pip-list.txt" 2>&1
step kit 60 "$PY" -c "
from harness.data import load_task
from harness.models import load_model, load_tokenizer, resolve
data = load_task('mrpc')
print('mrpc', len(data.train), 'train pairs,', len(data.validation), 'validation pairs')
model, _ = load_model('all-MiniLM-L6-v2', weights='pretrained', num_labels=2)
print('all-MiniLM-L6-v2 resolves to', resolve('all-MiniLM-L6-v2'), 'loads as', {p.dtype for p in model.parameters()})
print('tokenizer', type(load_tokenizer('all-MiniLM-L6-v2')).__name__)"

export MATRIX=${FIRST_LIGHT_MATRIX:-gpu-slice}   # another matrix: the CPU test of this script runs a tiny one
slice() {
    "$PY" -m pytest $PLUGIN benchmarks/test_mrpc.py "$@" --matrix "$MATRIX" \
        -k "not compiled" --repeats 2 -p no:cacheprovider --results-dir "$WORK/results" \
        --baselines-dir "$WORK/baselines" --update-baselines -rsf
}
if [ "$CUDA" = 1 ]; then
    step ceilings 60 "$PY" -m harness ceilings --out "$WORK/ceilings.json"
    step reference 100 "$PY" "$KIT/reference.py" --mrpc "$KIT/glue/MRPC" --tokenizer "$KIT/minilm" \
        --out "$WORK/reference.json" --repeats 2
    step slice 200 slice --gpu
    step tests 200 "$PY" -m pytest $PLUGIN tests/test_gpu.py -m gpu -k "not max_batch" -v -rs -p no:cacheprovider \
        --junitxml "$WORK/gpu-tests.xml" --gpu-out "$WORK"
    step overhead 120 "$PY" -m pytest $PLUGIN benchmarks/test_overhead.py --gpu --matrix "$MATRIX" -p no:cacheprovider \
        --results-dir "$WORK/results" -rsf
    step facts-after 20 nvidia-smi -q
else
    say "no CUDA device: ceilings, reference and the GPU tests not run (CPU-safe parts only)"
    [ -n "${FIRST_LIGHT_MATRIX:-}" ] && step slice 200 slice
    step tests 120 "$PY" -m pytest $PLUGIN tests/test_gpu.py -m gpu -v -rs -p no:cacheprovider --gpu-out "$WORK"
fi
step summarize 30 "$PY" -m harness.gpukit.summarize "$WORK" --out "$WORK/first-light.md"
say "first light: $(( $(date +%s) - T0 )) s in all"
cat "$WORK/first-light.md" 2>/dev/null
