"""What do llama.cpp's extra buffer types and CPU kernel variants cost or give? (the AMX rule's price)

On CPUs with Intel AMX, llama.cpp's AMX weight repack crashes on the first decode (ggml-org/llama.cpp
issue 20824). Only the portable wheel's `sapphirerapids` variant has AMX kernels, so on such CPUs
globmed_edge.backends.llamacpp_runtime loads the best variant without AMX and keeps extra buffer
types on; where AMX kernels are loaded anyway (a native build, or that variant asked for by name) it
loads models with `use_extra_bufts=False`, which also turns off the CPU_REPACK buffer type that
re-lays Q4_0 / Q4_K / IQ4_NL / Q8_0 weights for AVX2/AVX-512 kernels.

This script measures prefill and decode tokens/s of the same GGUF files under several settings
KERNELS:EXTRA (KERNELS: `auto`, what the project loads, or a variant name such as `sapphirerapids`,
set through $GLOBMED_EDGE_LLAMA_KERNELS; EXTRA: `on` or `off`), each measurement in a fresh process
(a model loaded once per process, as the chat does), rotating the settings round by round so that
background load hits all alike. It prints medians, min-max spreads and each setting's ratio to the
first one. A setting that crashes (SIGSEGV on an AMX machine with AMX kernels and extra buffer
types on) is reported as such.

    python lab/perf/llamacpp_extra_bufts.py BUILD_OR_GGUF... [--settings auto:on,auto:off]
        [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
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
    from globmed_edge.backends.llamacpp_runtime import load, loaded_kernels, new_llama

    llama_cpp = load()
    llm = new_llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, n_batch=512,
                    n_ubatch=512, verbose=False, seed=0, overrides={"use_extra_bufts": extra})
    ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out: dict[str, object] = {}
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
            out = {"kernels": loaded_kernels() or "built in", "prefill_tok_s": len(ids) / (t1 - t0),
                   "decode_tok_s": (n - 1) / (t2 - t_first) if n > 1 else float("nan"), "tokens": n}
    llm.close()
    print(MARK + json.dumps(out), flush=True)


Setting = tuple[str, bool]  # (kernels: "auto" or a variant name, extra buffer types on)


def parse_settings(text: str) -> list[Setting]:
    out: list[Setting] = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        kernels, _, extra = item.rpartition(":")
        if extra not in ("on", "off") or not kernels:
            raise SystemExit(f"--settings: {item!r} is not KERNELS:on or KERNELS:off (e.g. auto:on, sapphirerapids:off)")
        out.append((kernels, extra == "on"))
    if not out:
        raise SystemExit("--settings: give at least one KERNELS:EXTRA")
    return out


def label(setting: Setting) -> str:
    return f"{setting[0]}:{'on' if setting[1] else 'off'}"


def measure(path: Path, setting: Setting, threads: int, tokens: int) -> dict[str, float] | str:
    cmd = [sys.executable, __file__, "--child", str(path), "--extra", str(int(setting[1])), "--threads",
           str(threads), "--tokens", str(tokens)]
    env = dict(os.environ)
    env.pop("GLOBMED_EDGE_LLAMA_KERNELS", None)
    if setting[0] != "auto":
        env["GLOBMED_EDGE_LLAMA_KERNELS"] = setting[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])  # type: ignore[no-any-return]
    signal = f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
    return f"exit {proc.returncode}{signal}: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}"


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
    ap.add_argument("--settings", default="auto:on,auto:off",
                    help="comma-separated KERNELS:EXTRA settings; ratios are to the first (default: auto:on,auto:off)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--extra", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, bool(args.extra), args.threads, args.tokens)
        return
    settings = parse_settings(args.settings)
    from globmed_edge.backends.llamacpp_runtime import model_overrides, runtime_info
    from globmed_edge.cpu import cpu_info

    cpu, rt = cpu_info(), runtime_info()
    print(f"CPU: {cpu.model} ({', '.join(cpu.features)}); llama-cpp-python {rt.version} {rt.kind}, "
          f"auto = kernels {rt.loaded_variant or 'built in'} with extra bufts "
          f"{'on' if model_overrides()['use_extra_bufts'] else 'off'} (the project's choice here); "
          f"threads {args.threads}, {args.rounds} rounds, {args.tokens} decode tokens")
    print(f"{'build':<36} {'setting':<20} {'kernels':<16} {'prefill tok/s med (min-max)':<28} "
          f"{'decode tok/s med (min-max)':<28} ratio prefill/decode")
    for build in args.builds:
        path = gguf_of(build)
        runs: dict[Setting, list[dict[str, float]]] = {s: [] for s in settings}
        crashed: dict[Setting, str] = {}
        for r in range(args.rounds):
            for setting in settings[r % len(settings):] + settings[:r % len(settings)]:
                if setting in crashed:
                    continue
                res = measure(path, setting, args.threads, args.tokens)
                if isinstance(res, str):
                    crashed[setting] = res
                else:
                    runs[setting].append(res)
        base = runs[settings[0]]
        for setting in settings:
            if setting in crashed:
                print(f"{build.name:<36} {label(setting):<20} FAILED: {crashed[setting]}")
                continue
            pre = [x["prefill_tok_s"] for x in runs[setting]]
            dec = [x["decode_tok_s"] for x in runs[setting]]
            ratio = ""
            if base:
                ratio = (f"x{statistics.median(pre) / statistics.median(x['prefill_tok_s'] for x in base):.3f} / "
                         f"x{statistics.median(dec) / statistics.median(x['decode_tok_s'] for x in base):.3f}")
            print(f"{build.name:<36} {label(setting):<20} {runs[setting][0]['kernels']!s:<16} "
                  f"{fmt(pre):<28} {fmt(dec):<28} {ratio}")


if __name__ == "__main__":
    main()
