"""The bench scorer vs lm-evaluation-harness's multiple-choice log-likelihood scoring.

Same model (the embedded default, transformers on CPU, float32), same items (a stratified sample
of ../shared/data/mcq, else the packaged sample), same prompts and continuations: for every item
the option letters " A", " B", ... and the option texts " <text>" after the bench prompt. lm-eval
scores them through `HFLM.loglikelihood` (its API, its tokenisation and batching) and picks
answers the way its multiple_choice tasks do: `acc` = argmax of the log-likelihoods, `acc_norm` =
argmax of log-likelihood / len(option text). The bench scorer (`score_mcq`) gives `pred_letter`
and `pred_text`. Reported: per-item agreement of both choices, the largest log-likelihood
difference, and items/s of each (medians over --runs alternating runs after a warm-up).

    python lab/perf/scorer_vs_lmeval.py --langs en,fr,es,zh,zu --per-lang 8 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="en,fr,es,zh,zu")
    ap.add_argument("--per-lang", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8, help="lm-eval HFLM batch size")
    ap.add_argument("--batch-items", type=int, default=None, help="bench scorer items per call (default: its own)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import numpy as np
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from globmed_edge.backends import open_backend
    from globmed_edge.mcq.prompts import letter_continuations, mcq_prompt, text_continuations
    from globmed_edge.mcq.scorer import score_mcq
    from globmed_edge.bench.tasks import TaskSpec, default_sources, load_task
    from globmed_edge.models import prepare

    if args.threads:
        torch.set_num_threads(args.threads)
    model = prepare("smollm2-135m-instruct", progress=False)
    data = load_task(TaskSpec(sources=default_sources(), langs=tuple(args.langs.split(",")), limit=args.per_lang))
    items = [i for lang in sorted(data.items) for i in data.items[lang]]
    print(f"model {model.name}, {len(items)} items ({', '.join(f'{k}={len(v)}' for k, v in data.items.items())}), "
          f"torch threads {torch.get_num_threads()}")

    be = open_backend(model)
    be.load()
    lm = HFLM(pretrained=str(model), device="cpu", dtype="float32", batch_size=args.batch_size)

    def lmeval_run() -> tuple[list[str], list[str], list[float]]:
        reqs, spans = [], []
        for it in items:
            ctx = mcq_prompt(it)
            conts = letter_continuations(it) + text_continuations(it)
            spans.append(len(conts))
            reqs += [Instance(request_type="loglikelihood", doc={}, arguments=(ctx, c), idx=k)
                     for k, c in enumerate(conts)]
        res = lm.loglikelihood(reqs, disable_tqdm=True)
        letters, texts, lls = [], [], []
        pos = 0
        for it, span in zip(items, spans, strict=True):
            ll = np.array([r[0] for r in res[pos: pos + span]])
            n = span // 2
            lengths = np.array([float(len(t)) for t in it.options.values()])  # lm-eval acc_norm
            letters.append("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[int(np.argmax(ll[:n]))])
            texts.append("ABCDEFGHIJKLMNOPQRSTUVWXYZ"[int(np.argmax(ll[n:] / lengths))])
            lls += list(ll[:n])
            pos += span
        return letters, texts, lls

    # warm-up both (first-call allocations, thread pools)
    score_mcq(be, items[:2])
    lm.loglikelihood([Instance("loglikelihood", {}, (mcq_prompt(items[0]), " A"), 0)], disable_tqdm=True)

    ours_t, theirs_t = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        ours = score_mcq(be, items, **({"batch_items": args.batch_items} if args.batch_items else {}))
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        l_letters, l_texts, l_lls = lmeval_run()
        theirs_t.append(time.perf_counter() - t)

    agree_letter = sum(s.pred_letter == x for s, x in zip(ours, l_letters, strict=True))
    agree_text = sum(s.pred_text == x for s, x in zip(ours, l_texts, strict=True))
    our_lls = [x for s in ours for x in s.letter_logprobs]
    diff = max(abs(a - b) for a, b in zip(our_lls, l_lls, strict=True))
    n = len(items)
    ours_ips, theirs_ips = n / statistics.median(ours_t), n / statistics.median(theirs_t)
    print(f"agreement, letter rule (acc):      {agree_letter}/{n} = {100 * agree_letter / n:.1f}%")
    print(f"agreement, option-text rule (acc_norm): {agree_text}/{n} = {100 * agree_text / n:.1f}%")
    print(f"max |log-likelihood difference| over letter options: {diff:.2e}")
    print(f"bench scorer: {ours_ips:.2f} items/s (runs: {', '.join(f'{x:.1f}s' for x in ours_t)})")
    print(f"lm-eval HFLM (batch_size={args.batch_size}): {theirs_ips:.2f} items/s "
          f"(runs: {', '.join(f'{x:.1f}s' for x in theirs_t)})")
    print(f"speed ratio (bench / lm-eval, medians): {ours_ips / theirs_ips:.2f}x")


if __name__ == "__main__":
    main()
