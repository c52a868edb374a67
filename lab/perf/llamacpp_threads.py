"""llama.cpp decode speed by calling thread: why the chat app never decodes on its main thread.

One plain llama-cpp-python model, greedy decoding of --tokens tokens after a short chat prompt,
from these threads in this order:

  A      a first worker thread, which then stays alive (idle)
  B0,B1  two more workers, one after the other, while A is alive
  C0,C1  two more workers after A has exited
  main   the main thread
  D      a worker after the main thread has decoded (the main thread never exits)

With llama.cpp's OpenMP build on a 2-core machine, B and D were ~40% slower than A, C and main
(lab/results/perf-2026-11-29.md). Prints tokens/s per run.

    python lab/perf/llamacpp_threads.py BUILD_OR_GGUF [--threads 2] [--tokens 150]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", type=Path, help="a GGUF build folder or .gguf file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=150)
    args = ap.parse_args()

    from globmed_edge.backends.llamacpp_runtime import new_llama

    gguf = args.build if args.build.is_file() else next(args.build.glob("*.gguf"))
    llm = new_llama(model_path=str(gguf), n_ctx=512, n_threads=args.threads, verbose=False)
    prompt = llm.tokenize(b"<|im_start|>user\nWhat are the signs of malaria?<|im_end|>\n<|im_start|>assistant\n",
                          special=True)

    def run(tag: str) -> None:
        llm.reset()
        llm.eval(prompt)
        start = time.perf_counter()
        for _ in range(args.tokens):
            llm.eval([llm.sample(temp=0.0)])
        print(f"{tag:28s} {args.tokens / (time.perf_counter() - start):7.1f} tokens/s", flush=True)

    def in_thread(tag: str) -> None:
        t = threading.Thread(target=run, args=(tag,))
        t.start()
        t.join()

    done, release = threading.Event(), threading.Event()

    def first() -> None:
        run("A  first worker")
        done.set()
        release.wait()

    a = threading.Thread(target=first)
    a.start()
    done.wait()
    for i in range(2):
        in_thread(f"B{i} worker while A is alive")
    release.set()
    a.join()
    for i in range(2):
        in_thread(f"C{i} worker after A exited")
    run("main thread")
    in_thread("D  worker after main decoded")


if __name__ == "__main__":
    main()
