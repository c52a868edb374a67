#!/usr/bin/env bash
# CUDA run of issues #3/#4 on a GPU machine: GPTQ 4-bit and 8-bit builds of one model (through
# GPTQModel, calibrated on the multilingual medical calibration set), then accuracy per language,
# drift against the 16-bit source and throughput (prefill/decode tokens/s, TTFT, CUDA peak
# allocated/reserved memory) of the source and both builds on the GPU, and the report.
#
#   bash lab/gpu/cuda_bench.sh [MODEL] [DATA] [LIMIT]
#     MODEL  HF folder or embedded model name (default: smollm2-135m-instruct, prepared first)
#     DATA   benchmark data in the project schema (default: ../shared/data/mcq, else the sample)
#     LIMIT  items per language (default 100)
#
# Outputs (kept in the repository after a run): lab/gpu/results/cuda_bench.{log,jsonl} and
# lab/gpu/results/cuda_report/. Needs torch with CUDA, gptqmodel and optimum (the [gptq] extra).
# Status: written and checked for syntax on CPU; not yet run on a GPU (none was available).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-smollm2-135m-instruct}
DATA=${2:-}
LIMIT=${3:-100}
OUT=lab/gpu/results
BUILDS=${BUILDS_DIR:-$OUT/builds}
mkdir -p "$OUT"
exec > >(tee "$OUT/cuda_bench.log") 2>&1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
if [[ "$MODEL" != */* ]]; then globmed-edge models prepare "$MODEL"; fi
SRC=$(python -c "import sys; from globmed_edge.models import resolve_model; print(resolve_model(sys.argv[1]))" "$MODEL")
DATA_ARGS=()
if [[ -n "$DATA" ]]; then DATA_ARGS=(--data "$DATA"); fi
time globmed-edge quantize "$SRC" --format gptq:4bit,8bit --out "$BUILDS" --json | tee "$OUT/quantize.json"
mapfile -t GPTQ < <(ls -d "$BUILDS"/*-gptq-*)
time globmed-edge bench run "$SRC" "${GPTQ[@]}" --reference "$SRC" "${DATA_ARGS[@]}" --limit "$LIMIT" \
  --device cuda --throughput --repeats 5 --new-tokens 128 --out "$OUT/cuda_bench.jsonl"
globmed-edge bench report "$OUT/cuda_bench.jsonl" --out "$OUT/cuda_report"
