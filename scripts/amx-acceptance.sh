#!/bin/sh
# The acceptance run of issue #10 on an Intel CPU with AMX (Sapphire Rapids or later), in one go.
#
#   sh scripts/amx-acceptance.sh [OUT]     # OUT: default lab/results/native-runtimes-<date>-amx
#
# Refuses to run on a CPU without amx_int8 (the point is to check that machine). Each step's
# output goes to OUT/<step>.txt and its exit code to OUT/summary.txt; a failing step does not stop
# the later ones, so one run shows everything. Steps: the test suite (make test), quantize of the
# default model (the four default builds), bench run with throughput on the GGUF builds, a one-shot
# chat answer from each GGUF build, doctor, and llama.cpp's extra-buffer-types speed check.
set -u
cd "$(dirname "$0")/.."
if ! grep -q amx_int8 /proc/cpuinfo; then
  echo "error: this CPU has no AMX (no amx_int8 in /proc/cpuinfo); run this on a Sapphire Rapids class Xeon" >&2
  exit 2
fi
OUT=${1:-lab/results/native-runtimes-$(date -u +%Y-%m-%d)-amx}
mkdir -p "$OUT"
HOME_DIR=$(mktemp -d "${TMPDIR:-/tmp}/amx-home-XXXXXX")
export GLOBMED_EDGE_HOME="$HOME_DIR"
BIN=.venv/bin
: > "$OUT/summary.txt"

step() {  # step NAME COMMAND...: run, keep its output and exit code
  name=$1; shift
  echo "== $name: $*" >&2
  start=$(date +%s)
  "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  echo "$name: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt" >&2
}

{ lscpu | grep -E 'Model name|^CPU\(s\)'; grep -o -E 'amx_[a-z0-9]+' /proc/cpuinfo | sort -u; } > "$OUT/cpu.txt"
step make-test make test
step quantize "$BIN/globmed-edge" quantize smollm2-135m-instruct
BUILDS=$(ls -d "$HOME_DIR"/builds/*-gguf-* 2>/dev/null)
step bench-run "$BIN/globmed-edge" bench run $BUILDS --langs en,fr,ar --limit 5 --throughput --out "$OUT/results.jsonl"
for b in $BUILDS; do
  step "chat-$(basename "$b")" "$BIN/globmed-edge" chat "$b" --prompt "What are the danger signs of dehydration in a child?" --max-tokens 48
done
step doctor "$BIN/globmed-edge" doctor
step doctor-json "$BIN/globmed-edge" doctor --json --no-canary
# auto = what the project loads here (the best variant without AMX, extra buffer types on), against
# the AMX variant without extra buffer types (the rule before), and the AMX variant as llama.cpp
# would load it (the crash of issue 20824)
step extra-bufts "$BIN/python" lab/perf/llamacpp_extra_bufts.py $BUILDS --rounds 5 --threads 1 \
  --settings auto:on,sapphirerapids:off,auto:off,sapphirerapids:on
rm -rf "$HOME_DIR"
echo "done: $OUT/summary.txt" >&2
cat "$OUT/summary.txt"
