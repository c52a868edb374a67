"""The `mcq-generate` task: each item asked through the build's chat template, greedy, and the
reply read back by `globmed_edge.mcq.extract.extract_answer` (the shapes it accepts are listed
there); an unreadable reply is an extraction failure, counted and scored as wrong."""

from __future__ import annotations

from collections.abc import Sequence

from globmed_edge.backends.base import Backend, GenerationRequest
from globmed_edge.bench.tasks import LangOutcome
from globmed_edge.data.schema import MCQItem
from globmed_edge.mcq.extract import chat_messages, extract_answer


def generate_answers(backend: Backend, items: Sequence[MCQItem], shots: Sequence[MCQItem] = (), *,
                     max_new_tokens: int = 24, progress: bool = False) -> list[tuple[str, str | None]]:
    """(reply, extracted letter or None) per item, greedy decoding."""
    from globmed_edge.clikit import item_progress

    bar = item_progress(len(items), f"generating {items[0].lang}" if items else "generating", progress)
    out = []
    try:
        for item in items:
            req = GenerationRequest(messages=chat_messages(item, shots), max_new_tokens=max_new_tokens)
            reply = "".join(ev.text for ev in backend.stream(req))
            out.append((reply, extract_answer(reply, item.options)))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def run_generate(backend: Backend, items: Sequence[MCQItem], shots: Sequence[MCQItem], *,
                 batch_items: int = 8, max_new_tokens: int = 24, progress: bool = False) -> LangOutcome:
    """The `mcq-generate` task: a LangOutcome of extracted letters ("" = extraction failure)."""
    answers = generate_answers(backend, items, shots, max_new_tokens=max_new_tokens, progress=progress)
    pred = tuple(letter or "" for _, letter in answers)
    return LangOutcome(pred=pred, pred_text=(), letter_logprobs=(),
                       failures=sum(1 for p in pred if not p))
