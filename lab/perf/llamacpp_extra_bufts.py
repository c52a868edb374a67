"""Does switching off llama.cpp's extra buffer types cost speed? (the AMX rule's price)

On CPUs with Intel AMX, llama.cpp's AMX weight repack crashes on the first decode (ggml-org/llama.cpp
issue 20824), so globmed_edge.backends.llamacpp_runtime loads models with `use_extra_bufts=False`
there. The same switch also turns off the CPU_REPACK buffer type that re-lays Q4_0 / Q4_K / IQ4_NL
/ Q8_0 weights for AVX2/AVX-512 kernels. This script measures prefill and decode tokens/s of the
same GGUF files with extra buffer types on and off, each measurement in a fresh process (a model
loaded once per process, as the chat does), alternating the two settings round by round so that
background load hits both alike. It prints medians, min-max spreads and the off/on ratio.

    python lab/perf/llamacpp_extra_bufts.py BUILD_OR_GGUF... [--rounds 5] [--threads 2]

A setting that crashes (SIGSEGV on an AMX machine with extra buffer types on) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MARK = "EXTRA_BUFTS_JSON "
PROMPT = ("<|im_start|>user\nA 3-year-old child has had watery diarrhoea for two days and is now very "
          "sleepy. What danger signs should a health worker check, and when is urgent referral needed?"
          "<|im_end|>\n<|im_start|>assistant\n")


def child(path: str, extra: bool, threads: int, tokens: int) -> None:
    """One measurement in this process: load, warm up, time prefill and `tokens` greedy decodes."""
    from globmed_edge.backends.llamacpp_runtime import load, new_llama

    llama_cpp = load()
    llm = new_llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512,
                    n_ubatch=512, verbose=False, seed=0, overrides={"use_extra_bufts": extra})
    ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out = {}
    for phase in ("warm-up", "timed"):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        n = 0
        for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=False):
            n += 1
            if n == 1:
                t_first = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(vocab, tok) or n >= (4 if phase == "warm-up" else tokens):
                break
        t2 = time.perf_counter()
        if phase == "timed":
            out = {"prefill_tok_s": len(ids) / (t1 - t0),
                   "decode_tok_s": (n - 1) / (t2 - t_first) if n > 1 else float("nan"), "tokens": n}
    llm.close()
    print(MARK + json.dumps(out), flush=True)


def measure(path: Path, extra: bool, threads: int, tokens: int) -> dict[str, float] | str:
    cmd = [sys.executable, __file__, "--child", str(path), "--extra", str(int(extra)), "--threads",
           str(threads), "--tokens", str(tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])  # type: ignore[no-any-return]
    return f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"


def gguf_of(arg: Path) -> Path:
    if arg.is_file():
        return arg
    files = [p for p in sorted(arg.glob("*.gguf")) if "imatrix" not in p.name]
    if len(files) != 1:
        raise SystemExit(f"{arg}: expected one .gguf file, found {len(files)}")
    return files[0]


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="*", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--extra", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, bool(args.extra), args.threads, args.tokens)
        return
    from globmed_edge.backends.llamacpp_runtime import runtime_info
    from globmed_edge.cpu import cpu_info

    cpu, rt = cpu_info(), runtime_info()
    print(f"CPU: {cpu.model} ({', '.join(cpu.features)}); llama-cpp-python {rt.version} {rt.kind}, "
          f"kernels {rt.loaded_variant or 'built in'}; threads {args.threads}, {args.rounds} rounds, "
          f"{args.tokens} decode tokens")
    print(f"{'build':<44} {'extra bufts':<11} {'prefill tok/s med (min-max)':<28} {'decode tok/s med (min-max)':<28}")
    for build in args.builds:
        path = gguf_of(build)
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        crashed: dict[bool, str] = {}
        for r in range(args.rounds):
            for extra in ((True, False) if r % 2 == 0 else (False, True)):
                if extra in crashed:
                    continue
                res = measure(path, extra, args.threads, args.tokens)
                if isinstance(res, str):
                    crashed[extra] = res
                else:
                    runs[extra].append(res)
        for extra in (True, False):
            label = "on" if extra else "off"
            if extra in crashed:
                print(f"{build.name:<44} {label:<11} FAILED: {crashed[extra]}")
                continue
            pre = [x["prefill_tok_s"] for x in runs[extra]]
            dec = [x["decode_tok_s"] for x in runs[extra]]
            print(f"{build.name:<44} {label:<11} {fmt(pre):<28} {fmt(dec):<28}")
        if runs[True] and runs[False]:
            ratio_p = statistics.median(x["prefill_tok_s"] for x in runs[False]) / statistics.median(
                x["prefill_tok_s"] for x in runs[True])
            ratio_d = statistics.median(x["decode_tok_s"] for x in runs[False]) / statistics.median(
                x["decode_tok_s"] for x in runs[True])
            print(f"{'':<44} {'off/on':<11} prefill x{ratio_p:.3f}{'':<14} decode x{ratio_d:.3f}")


if __name__ == "__main__":
    main()
