"""llama.cpp decode speed when other programs use the CPU: fixed thread counts versus "auto".

A clinic laptop is rarely idle (an antivirus scan, a browser). llama.cpp's threads wait for each
other at every step, so a thread that shares its core with another program slows all of them.
This script starts `--busy` spinning processes, then decodes `--tokens` greedy tokens of the
chat prompt through the llama.cpp backend with threads = the physical cores, 1, and "auto"
(what the chat app uses: before each answer, the physical cores other work leaves free),
alternating over `--rounds`, and prints the median tokens/s of each.

    python lab/perf/llamacpp_under_load.py BUILD [--busy 0,1] [--rounds 3] [--tokens 96]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUESTION = "What are the danger signs of dehydration in a young child?"


def decode_rate(build: Path, threads: int | str, tokens: int) -> tuple[float, int]:
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.backends.llamacpp_backend import LlamaCppBackend

    be = LlamaCppBackend(build, threads=threads, verify=False)  # a measurement: loose GGUF files too
    be.load()
    try:
        req = GenerationRequest.from_text(QUESTION, max_new_tokens=tokens)
        times = [ev.time for ev in be.stream(req) if ev.token_id is not None]
        return (len(times) - 1) / (times[-1] - times[0]), be.current_threads
    finally:
        be.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", type=Path)
    ap.add_argument("--busy", default="0,1", help="numbers of spinning processes to run beside it")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=96)
    args = ap.parse_args()

    from globmed_edge.backends.llamacpp_backend import physical_cores

    physical = physical_cores()
    configs: list[int | str] = [physical, 1, "auto"] if physical > 1 else [1, "auto"]
    for busy in (int(b) for b in args.busy.split(",")):
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(1.0)
            rates: dict[str, list[float]] = {str(c): [] for c in configs}
            used: dict[str, set[int]] = {str(c): set() for c in configs}
            for _ in range(args.rounds):
                for c in configs:
                    rate, n = decode_rate(args.build, c, args.tokens)
                    rates[str(c)].append(rate)
                    used[str(c)].add(n)
            for c in configs:
                r = rates[str(c)]
                print(f"busy processes {busy}  threads {c!s:>4} (used {sorted(used[str(c)])}): "
                      f"median {statistics.median(r):6.1f} tok/s  runs {[round(x, 1) for x in r]}", flush=True)
        finally:
            for s in spinners:
                s.kill()


if __name__ == "__main__":
    main()
