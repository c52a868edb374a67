"""Per-language accuracy of each build in a bench results file, against chance and each other.

For the lab's results READMEs (issue #17): one Markdown table per results file with, for every
build and language, n, letter-rule accuracy with its 95% Wilson interval, the chance level of
those items (mean of 1 / options), and the one-sided exact p-value that the build beats guessing
(Poisson-binomial over the items' own chances: each item is guessed right with 1 / its options).
With --reference, a second table gives each build's paired difference from the reference per
language with the exact McNemar p-value (same items, counted flips).

    python lab/experiments/accuracy_summary.py RESULTS.jsonl [--reference BUILD]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from globmed_edge.bench.drift import compute_drift
from globmed_edge.bench.records import AccuracyRecord, iter_records
from globmed_edge.bench.stats import wilson


def beats_chance_p(correct: int, chances: list[float]) -> float:
    """P(at least `correct` right by guessing), each item right with its own chance (exact DP)."""
    dist = [1.0]
    for p in chances:
        nxt = [0.0] * (len(dist) + 1)
        for k, mass in enumerate(dist):
            nxt[k] += mass * (1 - p)
            nxt[k + 1] += mass * p
        dist = nxt
    return sum(dist[correct:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--reference")
    args = ap.parse_args()
    recs: dict[tuple[str, str], AccuracyRecord] = {}
    for rec in iter_records(args.results):
        if isinstance(rec, AccuracyRecord):
            recs[(rec.build.name, rec.lang)] = rec  # a later record replaces an earlier one
    builds = sorted({b for b, _ in recs}, key=lambda b: (b != args.reference, b))
    langs = sorted({lang for _, lang in recs})
    print("| build | lang | n | accuracy % [95% CI] | chance % | beats chance (one-sided p) |")
    print("|---|---|---:|---|---:|---|")
    for b in builds:
        for lang in langs:
            r = recs.get((b, lang))
            if r is None:
                continue
            n, k = r.n, r.correct_letter
            chances = [1 / len(lp) for lp in r.letter_logprobs]
            low, high = wilson(k, n)
            p = beats_chance_p(k, chances)
            print(f"| {b} | {lang} | {n} | {100 * k / n:.1f} [{100 * low:.1f}-{100 * high:.1f}] | "
                  f"{100 * sum(chances) / n:.1f} | {'yes' if p < 0.05 else 'no'} (p = {p:.3g}) |")
    if not args.reference:
        return
    print()
    print(f"| build | lang | n | minus {args.reference} (points) | flips right->wrong / wrong->right | McNemar p |")
    print("|---|---|---:|---:|---|---:|")
    for b in builds:
        if b == args.reference:
            continue
        for lang in langs:
            r, ref = recs.get((b, lang)), recs.get((args.reference, lang))
            if r is None or ref is None:
                continue
            if sorted(r.item_ids) != sorted(ref.item_ids):
                print(f"| {b} | {lang} | - | scored on other items than the reference | - | - |")
                continue
            d = compute_drift(r, ref)  # the flips and McNemar test bench's drift records hold
            print(f"| {b} | {lang} | {d.n} | {100 * d.delta:+.1f} | {d.right_to_wrong} / {d.wrong_to_right} | "
                  f"{d.mcnemar_p:.3g} |")


if __name__ == "__main__":
    main()
