"""Scoring a model folder in float32 against bfloat16 on this CPU (`bench run --torch-dtype`).

Both dtypes are loaded once (two copies of the weights), then the same items are scored with the
bench scorer in alternating rounds (float32, bfloat16, float32, ...), so that load on a shared
machine hits both alike. Prints each round's seconds, the medians, the spread, the ratio, and how
many predicted letters the two dtypes share, with the CPU's bfloat16 features (AVX-512-BF16, AMX).

    python lab/perf/torch_dtype_scoring.py MODEL_FOLDER_OR_NAME [--lang zh] [--items 10] [--rounds 3] [--threads 1]

Items: the seeded stratified sample `bench run --limit` takes from ../shared/data/mcq (test split).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model folder or an embedded model's name (e.g. qwen2.5-coder-1.5b-instruct)")
    ap.add_argument("--lang", default="zh")
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from globmed_edge.backends.transformers_backend import TransformersBackend
    from globmed_edge.bench.tasks import TaskSpec, default_sources, load_task
    from globmed_edge.cpu import cpu_info
    from globmed_edge.mcq.scorer import score_mcq
    from globmed_edge.models import resolve_model

    path = resolve_model(args.model)
    task = load_task(TaskSpec(sources=default_sources(), langs=(args.lang,), limit=args.items))
    items = task.items[args.lang]
    cpu = cpu_info()
    bf16 = [f for f in cpu.features if "BF16" in f or "AMX" in f]
    print(f"CPU: {cpu.model}; bfloat16 features: {', '.join(bf16) or 'none'}")
    print(f"{path.name}: {len(items)} {args.lang} items, {args.threads} thread(s), {args.rounds} rounds")
    backends = {d: TransformersBackend(path, threads=args.threads, dtype=d) for d in ("float32", "bfloat16")}
    for be in backends.values():
        be.load()
    seconds: dict[str, list[float]] = {d: [] for d in backends}
    letters: dict[str, list[str]] = {}
    for r in range(args.rounds):
        for dtype, be in backends.items():
            t0 = time.perf_counter()
            scored = score_mcq(be, items)
            seconds[dtype].append(time.perf_counter() - t0)
            letters[dtype] = [s.pred_letter for s in scored]
            print(f"round {r + 1} {dtype:9} {seconds[dtype][-1]:7.2f} s")
    med = {d: statistics.median(s) for d, s in seconds.items()}
    for d, s in seconds.items():
        print(f"{d:9} median {med[d]:7.2f} s  (runs {min(s):.2f}-{max(s):.2f})")
    same = sum(a == b for a, b in zip(letters["float32"], letters["bfloat16"], strict=True))
    print(f"float32 / bfloat16 = {med['float32'] / med['bfloat16']:.2f}x; the same predicted letter on "
          f"{same} of {len(items)} items")


if __name__ == "__main__":
    main()
