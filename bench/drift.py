"""Drift of a build against a reference build, per language, from their accuracy records.

Items are paired by id (both records must cover the same item set: same `items_hash`). For
each language: accuracy delta, flips (items whose correctness differs) and their rate, the exact
McNemar p-value on the right->wrong / wrong->right counts, top-1 agreement (same predicted
letter), and the mean KL(reference || build) of the answer distribution, the softmax over the
option-letter log-likelihoods (log-likelihood mode only). `resolves_2pt` is False when the
language's n is too small for its 95% CI to resolve a 2-point accuracy change.
"""

from __future__ import annotations

from collections.abc import Sequence

from globmed_edge.bench.records import AccuracyRecord, DriftRecord, Record
from globmed_edge.bench.stats import kl_divergence, mcnemar_exact, resolves
from globmed_edge.errors import DataError
from globmed_edge.mcq.scorer import softmax


def compute_drift(rec: AccuracyRecord, ref: AccuracyRecord) -> DriftRecord:
    if rec.items_hash != ref.items_hash or sorted(rec.item_ids) != sorted(ref.item_ids):
        raise DataError(f"{rec.build.name} and {ref.build.name} ({rec.lang}) were scored on different items")
    pos = {item_id: i for i, item_id in enumerate(ref.item_ids)}
    r2w = w2r = agree = 0
    kls: list[float] = []
    for i, item_id in enumerate(rec.item_ids):
        j = pos[item_id]
        ok, ref_ok = rec.pred[i] == rec.gold[i], ref.pred[j] == ref.gold[j]
        r2w += ref_ok and not ok
        w2r += ok and not ref_ok
        agree += rec.pred[i] == ref.pred[j] and rec.pred[i] != ""
        if rec.letter_logprobs and ref.letter_logprobs:
            kls.append(kl_divergence(softmax(ref.letter_logprobs[j]), softmax(rec.letter_logprobs[i])))
    n = rec.n
    return DriftRecord(
        build=rec.build.name, reference=ref.build.name, device=rec.device, task=rec.task, lang=rec.lang,
        n=n, accuracy=rec.accuracy, reference_accuracy=ref.accuracy, delta=rec.accuracy - ref.accuracy,
        flips=r2w + w2r, flip_rate=(r2w + w2r) / n if n else 0.0, right_to_wrong=r2w, wrong_to_right=w2r,
        mcnemar_p=mcnemar_exact(r2w, w2r), top1_agreement=agree / n if n else 0.0,
        mean_kl=sum(kls) / len(kls) if kls else None,
        resolves_2pt=resolves(ref.correct_letter, ref.n, 0.02), items_hash=rec.items_hash)


def drift_records(records: Sequence[Record], reference: str) -> list[DriftRecord]:
    """Drift of every build against `reference`, matched on device, task, language and items."""
    acc = [r for r in records if isinstance(r, AccuracyRecord)]
    refs = {(r.device, r.task, r.lang, r.items_hash): r for r in acc if r.build.name == reference}
    out = []
    for r in acc:
        ref = refs.get((r.device, r.task, r.lang, r.items_hash))
        if r.build.name != reference and ref is not None:
            out.append(compute_drift(r, ref))
    return out
