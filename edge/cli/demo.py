"""The main job on a model: a short greedy chat reply and one MCQ answered by log-likelihood."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from globmed_edge.backends.base import GenerationRequest, ScoreRequest
from globmed_edge.backends.timing import StreamTiming
from globmed_edge.data.schema import MCQItem
from globmed_edge.mcq.prompts import letter_continuations, mcq_prompt


@dataclass(frozen=True)
class DemoResult:
    model: str
    reply: str
    reply_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    item_id: str
    item_lang: str
    predicted: str
    gold: str
    option_logprobs: dict[str, float]
    unverified: bool = False  # run with --unverified (no valid manifest)


def sample_items(lang: str | None = None) -> list[MCQItem]:
    from importlib.resources import files

    from globmed_edge.data.readers import iter_items

    path = Path(str(files("globmed_edge.samples").joinpath("mcq_sample.jsonl")))
    items = [i for i in iter_items([path]) if isinstance(i, MCQItem)]
    return [i for i in items if lang is None or i.lang == lang]


def run_demo(model_dir: Path, prompt: str, item: MCQItem, *, max_new_tokens: int = 48,
             backend: str | None = None, threads: int | None = None) -> DemoResult:
    from globmed_edge.backends import open_backend
    from globmed_edge.trust import check_model

    verification = check_model(model_dir)  # the manifest rule, also where the backend is isolated
    be = open_backend(model_dir, backend, threads=threads)
    be.load()
    try:
        timing = StreamTiming(time.perf_counter())
        pieces: list[str] = []
        for ev in be.stream(GenerationRequest.from_text(prompt, max_new_tokens=max_new_tokens)):
            pieces.append(ev.text)
            timing = timing.add(ev)
        context = mcq_prompt(item)
        letters = list(item.options)
        scores = be.score([ScoreRequest(context, c) for c in letter_continuations(item)])
        lps = {k: s.logprob for k, s in zip(letters, scores, strict=True)}
        predicted = max(lps, key=lambda k: lps[k])
    finally:
        be.close()
    return DemoResult(
        model=str(model_dir), reply="".join(pieces).strip(), reply_tokens=timing.tokens,
        ttft_s=_or_nan(timing.ttft_s), decode_tokens_per_s=_or_nan(timing.decode_tokens_per_s),
        item_id=item.id, item_lang=item.lang, predicted=predicted,
        gold=item.answer, option_logprobs={k: round(v, 3) if math.isfinite(v) else v for k, v in lps.items()},
        unverified=verification.unverified,
    )


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value
