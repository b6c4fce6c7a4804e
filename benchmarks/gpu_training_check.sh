#!/usr/bin/env bash
# Issue 4's GPU checks in one command, on SmolLM2-135M's shape built from a config (no weights
# travel), bf16. Run from the repo root on a CUDA machine:
#
#     OUT=/tmp/gpu-check BUDGET=400 bash benchmarks/gpu_training_check.sh
#     SMOKE=1 PY=.venv/bin/python bash benchmarks/gpu_training_check.sh    # CPU, tiny sizes
#
# 1. crosscheck: our GRPO loss and gradients vs TRL's GRPOTrainer in bf16 (and fp32) on the GPU;
# 2. sft: 8 SFT steps through train/sft.py (TRL SFTTrainer, bf16);
# 3. grpo: TRL GRPOTrainer vs ours (max_staleness 0 and 2), 6 steps, 8 prompts × group 8 = 64
#    completions × 256 tokens per step, same prompts, reward and model;
# 4. grpo_extra: TRL without gradient checkpointing (TRL defaults it on), if time is left; or,
#    if ours failed in 3 with the compiled engine, ours again with --no-compile.
# Wheels in .whl/ (trl, datasets, pydantic, … for a machine without them) are installed to
# /tmp/site first. Each step has a time limit inside BUDGET seconds; results land in $OUT as
# JSON (written after each trainer) and one log, all.log.
set -u
OUT=${OUT:-/tmp/gpu-check}
BUDGET=${BUDGET:-400}
mkdir -p "$OUT"
LOG="$OUT/all.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_DISABLE_PROGRESS_BARS=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
export PYTHONPATH=pkg${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
left() { echo $((BUDGET - SECONDS)); }

if [ "${SMOKE:-0}" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    wheels=$(ls .whl/*.whl | grep -v '/pyarrow-')
    # datasets 5.2 wants pyarrow >= 24: install the carried one only when the machine's is older.
    if ! $PY -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)" 2>/dev/null; then
        wheels="$wheels $(ls .whl/pyarrow-*.whl 2>/dev/null)"
    fi
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site $wheels >>"$LOG" 2>&1 || { echo "wheel install failed"; tail -20 "$LOG"; exit 1; }
    export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch, transformers, trl, datasets, accelerate, pyarrow, pydantic
print('torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__,
      '| datasets', datasets.__version__, '| accelerate', accelerate.__version__,
      '| pyarrow', pyarrow.__version__, '| pydantic', pydantic.__version__)"
} 2>&1 | tee -a "$LOG"

step() {  # step NAME LIMIT ARGS…: run python ARGS under `timeout LIMIT`, log, report rc and time
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    if [ "$limit" -lt 20 ]; then echo "== $name skipped (${limit}s left)" | tee -a "$LOG"; return 99; fi
    echo "== $name (limit ${limit}s)" >>"$LOG"
    timeout --kill-after=10 "$limit" $PY "$@" >>"$LOG" 2>&1
    rc=$?
    echo "== $name rc=$rc in $((SECONDS - started))s" | tee -a "$LOG"
    return $rc
}
GRPO=(benchmarks/grpo_vs_trl.py --device cuda --shape smollm2 --steps 6 --group-size 8
      --prompts-per-step 8 --completion-length 256 --threads 8)
CHECK=()
if [ "${SMOKE:-0}" = 1 ]; then  # a CPU run of this script on tiny sizes, to catch typos
    GRPO=(benchmarks/grpo_vs_trl.py --device cpu --shape smollm2 --hidden 72 --layers 2
          --intermediate 128 --vocab 2048 --steps 2 --prompts-per-step 2 --completion-length 16)
    CHECK=(--small --device cpu)
fi

step crosscheck 90 benchmarks/gpu_training_check.py crosscheck "${CHECK[@]}" --json "$OUT/crosscheck.json"
step sft 90 benchmarks/gpu_training_check.py sft "${CHECK[@]}" --steps 8 --json "$OUT/sft.json"
limit=$(($(left) - 75)); [ "$limit" -gt 260 ] && limit=260
step grpo "$limit" "${GRPO[@]}" --trainers trl,ours0,ours2 --json "$OUT/grpo.json"
if grep -q '"ours, max_staleness 2"' "$OUT/grpo.json" 2>/dev/null; then
    step grpo_extra "$(($(left) - 5))" "${GRPO[@]}" --trainers trl-nogc --json "$OUT/grpo_extra.json"
else
    step grpo_extra "$(($(left) - 5))" "${GRPO[@]}" --trainers ours0,ours2 --no-compile \
        --json "$OUT/grpo_extra.json"
fi

echo "== summary ($SECONDS s)"
grep -E '^\{"trl"|"check"' "$LOG" | cut -c1-1500
grep -E '^(model |\| )' "$LOG" | tail -n 14
grep -E 'Error|error:|Traceback' "$LOG" | grep -v -i warn | tail -n 15
