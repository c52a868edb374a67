"""Wall time and peak RSS of GGUF export (convert + quantize), per model and quantization.

Each export runs in a fresh child process (`--one`), which reports its own peak RSS and the peak
RSS of the processes it waited for (the converter and the llama.cpp quantizer), read with
resource.getrusage; the larger is the export's peak. The random model is built in a child too:
on Linux a child's ru_maxrss starts from its parent's size at fork, so the parent stays small. The issue's target: peak RSS below 2x the
fp16 size of the model. Models: the embedded default (SmolLM2-135M, Llama architecture) and a
randomly initialised Qwen3-architecture model at Qwen3-1.7B's shape (hidden 2048, 28 layers,
intermediate 6144, 16/8 heads, head_dim 128, tied embedding) with the SmolLM2 tokenizer, so its
vocabulary is 49,152 instead of 151,936: ~1.5B parameters. It is written in bf16, like real
checkpoints. No importance matrix (that adds a torch forward pass over the calibration set).

    nice python lab/perf/gguf_export.py [--layers 28] [--work DIR] [--skip-big]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANTS = ("q8_0", "q4_k_m")


def build_random_qwen3(out: Path, layers: int) -> Path:
    if (out / "config.json").is_file():
        return out
    import torch
    import transformers

    from globmed_edge.models import DEFAULT_MODEL, prepare

    tok = transformers.AutoTokenizer.from_pretrained(prepare(DEFAULT_MODEL, progress=False))
    config = transformers.Qwen3Config(
        vocab_size=len(tok), hidden_size=2048, intermediate_size=6144, num_hidden_layers=layers,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
        max_position_embeddings=4096, initializer_range=0.02, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.config.architectures = ["Qwen3ForCausalLM"]
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def one(src: str, quant: str, out: str) -> None:
    """Child: one export; prints a JSON line with its wall time and peak RSS."""
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.gguf import GGUFExporter

    start = time.perf_counter()
    res = GGUFExporter().export(ExportRequest(source=Path(src), out_dir=Path(out), quantization=quant))
    wall = time.perf_counter() - start
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"wall_s": round(wall, 1), "peak_rss_mb": round(kib / 1024, 1),
                      "bpw": res.bits_per_weight,
                      "size_mb": round(next(Path(out).glob("*.gguf")).stat().st_size / 2**20, 1)}))


def fp16_mb(src: Path) -> float:
    """fp16 size of the weights: 2 bytes per parameter, from the safetensors headers."""
    from globmed_edge.quantize.source import parameter_count

    return parameter_count(src) * 2 / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", nargs=3, metavar=("SRC", "QUANT", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, metavar=("OUT", "LAYERS"), help=argparse.SUPPRESS)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args()
    if args.one:
        one(*args.one)
        return
    if args.build:
        build_random_qwen3(Path(args.build[0]), int(args.build[1]))
        return
    from globmed_edge.models import DEFAULT_MODEL, prepared_path

    work = args.work or Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    # `models prepare` first (in a child, like everything that loads weights)
    subprocess.run([sys.executable, "-c", "from globmed_edge.models import prepare; prepare()"], check=True)
    models = [("smollm2-135m (default)", prepared_path(DEFAULT_MODEL))]
    if not args.skip_big:
        t = time.perf_counter()
        big = work / f"random-qwen3-{args.layers}l"
        subprocess.run([sys.executable, __file__, "--build", str(big), str(args.layers)], check=True)
        print(f"built/found random Qwen3 ({args.layers} layers) in {time.perf_counter() - t:.0f} s",
              flush=True)
        models.append((f"random qwen3 {args.layers}L", big))
    print(f"{'model':26} {'quant':7} {'fp16 MB':>8} {'wall s':>7} {'peak RSS MB':>11} "
          f"{'RSS/fp16':>8} {'out MB':>7} {'bpw':>6}", flush=True)
    for label, src in models:
        size = fp16_mb(src)
        for q in QUANTS:
            out = work / f"{src.name}-{q}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            proc = subprocess.run([sys.executable, __file__, "--one", str(src), q, str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{label:26} {q:7} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{label:26} {q:7} {size:8.0f} {r['wall_s']:7.1f} {r['peak_rss_mb']:11.0f} "
                  f"{r['peak_rss_mb'] / size:8.2f} {r['size_mb']:7.0f} {r['bpw']:6.2f}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
