"""Log-likelihood scoring of multiple-choice items through any backend (the one rule for all).

For every item the prompt (`globmed_edge.mcq.prompts.mcq_prompt`) is the context and two sets of
continuations are scored in the same `backend.score` batch:

* letter rule: `" A"`, `" B"`, ... -> prediction = argmax of log P(" X" | prompt);
* text rule: `" <option text>"` -> prediction = argmax of log P(text | prompt) divided by the
  option text's length in characters, leading space excluded (exactly lm-evaluation-harness's
  `acc_norm`; characters, not tokens, so builds with different tokenizers are normalised alike).

Ties go to the earliest option (numpy argmax). A NaN log-likelihood (a broken build) counts as
-inf, so it can never be the prediction. Backends get whole batches (`batch_items` items, all
options of an item sharing one context) and reuse the shared prompt prefix internally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from globmed_edge.backends.base import Backend, ScoreRequest, ScoreResult
from globmed_edge.data.schema import LETTERS, MCQItem
from globmed_edge.errors import BackendError, ConfigError
from globmed_edge.mcq.prompts import letter_continuations, mcq_prompt, text_continuations

Rule = Literal["letter", "text"]

# Items handed to `backend.score` at once: enough for the transformers backend to pack many
# contexts into each forward pass (it bounds its own memory per pass).
DEFAULT_BATCH_ITEMS = 32


@dataclass(frozen=True)
class ItemScore:
    item_id: str
    lang: str
    gold: str
    pred_letter: str  # argmax of log P(" X" | prompt) over option letters
    pred_text: str  # argmax of length-normalised log P(option text | prompt)
    letter_logprobs: tuple[float, ...]
    text_logprobs_norm: tuple[float, ...]

    @property
    def correct_letter(self) -> bool:
        return self.pred_letter == self.gold

    @property
    def correct_text(self) -> bool:
        return self.pred_text == self.gold

    def correct(self, rule: Rule = "letter") -> bool:
        return self.correct_letter if rule == "letter" else self.correct_text

    def pred(self, rule: Rule = "letter") -> str:
        return self.pred_letter if rule == "letter" else self.pred_text

    def distribution(self, rule: Rule = "letter") -> tuple[float, ...]:
        """Softmax over the option scores: the model's answer distribution (for drift/KL)."""
        return softmax(self.letter_logprobs if rule == "letter" else self.text_logprobs_norm)


def _clean(x: float) -> float:
    return -math.inf if math.isnan(x) else float(x)


def argmax(values: Sequence[float]) -> int:
    best, best_i = -math.inf, 0
    for i, v in enumerate(values):
        if v > best:
            best, best_i = v, i
    return best_i


def chance_level(letter_logprobs: Sequence[Sequence[float]]) -> float:
    """Accuracy of guessing over scored items: the mean of 1 / number of options, from each item's
    letter log-probabilities (items without any skipped; 4 options when none is recorded)."""
    ks = [len(lp) for lp in letter_logprobs if lp]
    return sum(1 / k for k in ks) / len(ks) if ks else 0.25


def softmax(values: Sequence[float]) -> tuple[float, ...]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return tuple(1.0 / len(values) for _ in values)
    m = max(finite)
    exps = [math.exp(v - m) if math.isfinite(v) else 0.0 for v in values]
    total = sum(exps)
    return tuple(e / total for e in exps)


def build_requests(item: MCQItem, context: str) -> list[ScoreRequest]:
    """Letter continuations then text continuations, all on one context."""
    return [ScoreRequest(context, c) for c in letter_continuations(item) + text_continuations(item)]


def score_from_results(item: MCQItem, letter_lps: Sequence[float], text_lps: Sequence[float]) -> ItemScore:
    texts = text_continuations(item)
    letter = tuple(_clean(x) for x in letter_lps)
    # lm-eval's acc_norm divides by the option's length without the leading delimiter
    norm = tuple(_clean(x) / max(1, len(t) - 1) for x, t in zip(text_lps, texts, strict=True))
    return ItemScore(
        item_id=item.id, lang=item.lang, gold=item.answer,
        pred_letter=LETTERS[argmax(letter)], pred_text=LETTERS[argmax(norm)],
        letter_logprobs=letter, text_logprobs_norm=norm,
    )


def score_mcq(
    backend: Backend,
    items: Sequence[MCQItem],
    *,
    shots: Mapping[str, Sequence[MCQItem]] | None = None,
    batch_items: int = DEFAULT_BATCH_ITEMS,
    progress: bool = False,
) -> list[ItemScore]:
    """Score `items` (in order) with a loaded backend; `shots` maps lang -> solved examples."""
    if batch_items < 1:
        raise ConfigError(f"batch_items must be >= 1, got {batch_items}")
    from globmed_edge.clikit import item_progress

    langs = sorted({item.lang for item in items})
    bar = item_progress(len(items), f"scoring {','.join(langs[:3])}{',...' if len(langs) > 3 else ''}", progress)
    out: list[ItemScore] = []
    try:
        for start in range(0, len(items), batch_items):
            chunk = items[start: start + batch_items]
            per_item = [build_requests(item, mcq_prompt(item, (shots or {}).get(item.lang, ()))) for item in chunk]
            requests: list[ScoreRequest] = [r for reqs in per_item for r in reqs]
            results = _score_naming_the_item(backend, requests, chunk, per_item)
            if len(results) != len(requests):
                raise BackendError(
                    f"{getattr(backend, 'path', backend)}: score() returned {len(results)} results "
                    f"for {len(requests)} requests")
            pos = 0
            for item in chunk:
                n = len(item.options)
                lps = [r.logprob for r in results[pos: pos + 2 * n]]
                out.append(score_from_results(item, lps[:n], lps[n:]))
                pos += 2 * n
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return out


def _score_naming_the_item(backend: Backend, requests: list[ScoreRequest], chunk: Sequence[MCQItem],
                           per_item: Sequence[list[ScoreRequest]]) -> list[ScoreResult]:
    """backend.score(requests); a failure names the item it came from ("6014 tokens exceed the
    context length 2048" alone did not say which of 30,000 items to fix). After a failed batch
    each item is tried alone to find it, unless the runtime itself crashed."""
    from globmed_edge.errors import GlobmedError

    try:
        return list(backend.score(requests))
    except GlobmedError as exc:
        culprits = [chunk[0]] if len(chunk) == 1 else []
        if len(chunk) > 1 and type(exc).__name__ != "RuntimeCrash":  # a crashed runtime cannot be asked again
            for item, reqs in zip(chunk, per_item, strict=True):
                try:
                    backend.score(reqs)
                except GlobmedError:
                    culprits = [item]
                    break
        where = (f"item {culprits[0].id!r} (dataset {culprits[0].dataset}, {culprits[0].lang})" if culprits
                 else f"items {chunk[0].id!r}..{chunk[-1].id!r}")
        raise BackendError(f"{where}: {exc}") from None


def accuracy_by_lang(scores: Sequence[ItemScore], *, rule: Rule = "letter") -> dict[str, tuple[float, int]]:
    """lang -> (accuracy, n), languages sorted by code."""
    if rule not in ("letter", "text"):
        raise ConfigError(f"rule must be 'letter' or 'text', got {rule!r}")
    hits: dict[str, list[int]] = {}
    for s in scores:
        hits.setdefault(s.lang, []).append(int(s.correct(rule)))
    return {lang: (sum(h) / len(h), len(h)) for lang, h in sorted(hits.items())}
