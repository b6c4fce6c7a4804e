#!/usr/bin/env bash
# Issue 13's GPU check in one command: the learner and SFT at the paper's scale on one GPU, with a
# config-built model of Qwen2.5-1.5B's shape (random weights, vocabulary 151,936). Under 8 minutes
# on one H100/H200. Run from the repo root:
#
#     OUT=/tmp/paper-scale BUDGET=460 bash benchmarks/gpu_paper_scale.sh
#     SMOKE=1 PY=.venv/bin/python bash benchmarks/gpu_paper_scale.sh     # CPU, tiny sizes
#
# 1. grpo: one rollout batch of 256 prompts × 16 completions of 1,024 tokens, mini-batch 32
#    (8 updates), bf16-mixed, gradient checkpointing: seconds per update, peak memory, and the
#    memory plan's estimate of the same configuration; stops between updates at its time limit;
# 2. sft: one SFT step at lr 1e-6 on 4,096-token chats under bf16-mixed and pure bf16: the share
#    of the weights the step changed.
# Results land in $OUT as JSON, with one log, all.log.
set -u
OUT=${OUT:-/tmp/paper-scale}
BUDGET=${BUDGET:-460}
mkdir -p "$OUT"
LOG="$OUT/all.log"
: >"$LOG"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=pkg${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
TINY=()
[ "${SMOKE:-0}" = 1 ] && TINY=(--tiny --device cpu)
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"; } | tee -a "$LOG"

step() {  # step NAME LIMIT ARGS…
    local name=$1 limit=$2 started=$SECONDS rc
    shift 2
    echo "== $name (limit ${limit}s)" >>"$LOG"
    timeout --kill-after=10 "$limit" $PY "$@" >>"$LOG" 2>&1
    rc=$?
    echo "== $name rc=$rc in $((SECONDS - started))s" | tee -a "$LOG"
}
grpo_limit=$((BUDGET * 6 / 10))
step grpo "$grpo_limit" benchmarks/gpu_paper_scale.py grpo "${TINY[@]}" \
    --seconds $((grpo_limit - 90)) --json "$OUT/grpo.json"
step sft $((BUDGET - SECONDS - 5)) benchmarks/gpu_paper_scale.py sft "${TINY[@]}" --json "$OUT/sft.json"
echo "== summary ($SECONDS s)"
cat "$OUT"/grpo.json "$OUT"/sft.json 2>/dev/null | cut -c1-1500
grep -E 'Error|Traceback' "$LOG" | tail -n 10
