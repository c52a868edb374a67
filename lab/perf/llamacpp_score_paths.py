"""Does a llama.cpp score depend on what the KV cache held before? And how far do `score`,
`logprobs` and the transformers reference lie apart on this CPU's kernels?

For a few (context, continuation) pairs of the default model's packaged Q4_1 GGUF, scored with
one thread: the score in a fresh call, the same request again (its context now cached), the
whole batch against each request alone (reversed order), the sum of `logprobs` over the
continuation, and the transformers backend on the prepared bf16 folder when it is given.

    python lab/perf/llamacpp_score_paths.py [--hf PREPARED_FOLDER]
"""

from __future__ import annotations

import argparse

from globmed_edge.backends import open_backend
from globmed_edge.backends.base import ScoreRequest
from globmed_edge.backends.llamacpp_runtime import runtime_info
from globmed_edge.models import DEFAULT_MODEL, MODELS

MCQ = "Question: Which drug treats malaria?\nA. Artemether\nB. Insulin\nC. Aspirin\nAnswer:"
REQUESTS = [ScoreRequest(MCQ, c) for c in (" A", " B", " Artemether", " Artemether-lumefantrine")]
REQUESTS += [ScoreRequest("The capital of France is", " Paris"), ScoreRequest("La fièvre est ", "un symptôme"),
             ScoreRequest("病人", "发烧"), ScoreRequest("The dos", "age forms differ")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf", help="the prepared HF folder of the default model (adds the transformers column)")
    args = ap.parse_args()
    be = open_backend(MODELS[DEFAULT_MODEL].locate(), threads=1, verify=False)
    be.load()
    info = runtime_info()
    print(f"llama.cpp {info.version} ({info.kind}), CPU kernels: {info.loaded_variant or 'built in'}")
    rows = []
    for r in REQUESTS:
        fresh = be.score([r])[0].logprob
        again = be.score([r])[0].logprob
        ids = be.tokenize(r.context + r.continuation, add_special=True)
        n_ctx = len(be.tokenize(r.context, add_special=True))
        lp = be.logprobs(ids)
        direct = sum(float(lp[i - 1, ids[i]]) for i in range(n_ctx, len(ids)))
        rows.append([r, fresh, again, direct])
    batch = be.score(REQUESTS)
    singles = [be.score([r])[0] for r in reversed(REQUESTS)][::-1]
    be.close()
    ref = None
    if args.hf:
        hf = open_backend(args.hf, threads=1)
        hf.load()
        ref = [s.logprob for s in hf.score(REQUESTS)]
        hf.close()
    print(f"{'request':44} {'fresh':>9} {'again-fresh':>11} {'logprobs-fresh':>14} {'batch-single':>12}"
          + (f" {'fresh-transformers':>18}" if ref else ""))
    for k, (r, fresh, again, direct) in enumerate(rows):
        label = (r.context[-18:] + "|" + r.continuation).replace("\n", "⏎")
        line = (f"{label:44} {fresh:9.4f} {again - fresh:11.4f} {direct - fresh:14.4f} "
                f"{batch[k].logprob - singles[k].logprob:12.4f}")
        print(line + (f" {fresh - ref[k]:18.4f}" if ref else ""))


if __name__ == "__main__":
    main()
