"""The MCQ prompt template and the log-likelihood scorer (tiny and default models)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import pytest

from globmed_edge.backends.base import Backend, ScoreRequest, ScoreResult
from globmed_edge.data.schema import MCQItem
from globmed_edge.errors import ConfigError
from globmed_edge.mcq.prompts import PromptTemplate, mcq_prompt
from globmed_edge.mcq.scorer import ItemScore, accuracy_by_lang, score_mcq, softmax


def item(i: int, lang: str = "en", split: str = "test", answer: str = "B", **kw: Any) -> MCQItem:
    opts = kw.pop("options", {"A": f"alpha {i}", "B": f"beta {i}", "C": f"gamma {i}", "D": f"delta {i}"})
    return MCQItem(f"t-{split}-{i}", "t", lang, split, kw.pop("question", f"Question number {i}?"),
                   opts, answer)


# ------------------------------------------------------------------ prompts


def test_two_items_render_two_prompts() -> None:
    a, b = item(1), item(2)
    pa, pb = mcq_prompt(a), mcq_prompt(b)
    assert pa != pb
    assert "Question number 1?" in pa and "beta 1" in pa and "{" not in pa
    assert pa == "Question: Question number 1?\nA. alpha 1\nB. beta 1\nC. gamma 1\nD. delta 1\nAnswer:"


def test_zero_shot_prompt_is_the_demo_prompt() -> None:
    from globmed_edge.cli import demo

    # one definition: `models demo` asks with the scorer's own prompt, not a copy of it
    assert demo.mcq_prompt is mcq_prompt
    it = item(3, lang="ar", question="ما هو العلاج؟", options={"A": "أ", "B": "ب"})
    assert demo.mcq_prompt(it) == "Question: ما هو العلاج؟\nA. أ\nB. ب\nAnswer:"


def test_template_missing_or_empty_field_raises() -> None:
    t = PromptTemplate("x", "Q: {question}\n{options}")
    with pytest.raises(ConfigError, match="missing field 'options'"):
        t.render({"question": "q"})
    with pytest.raises(ConfigError, match="field 'question' is empty"):
        t.render({"question": "  ", "options": "o"})
    with pytest.raises(ConfigError, match="only named fields"):
        PromptTemplate("y", "Q: {}").render({})


def test_shots_prepended_and_test_leak_refused() -> None:
    shots = [item(10, split="dev", answer="C"), item(11, split="train", answer="A")]
    p = mcq_prompt(item(1), shots)
    blocks = p.split("\n\n")
    assert len(blocks) == 3
    assert blocks[0].endswith("Answer: C") and blocks[1].endswith("Answer: A")
    assert blocks[2].endswith("Answer:") and "Question number 1?" in blocks[2]
    with pytest.raises(ConfigError, match="test split"):
        mcq_prompt(item(1), [item(5, split="test")])
    with pytest.raises(ConfigError, match="its own shots"):
        mcq_prompt(item(1, split="dev"), [item(1, split="dev")])


# ------------------------------------------------------------------ scorer mechanics


class FakeBackend:
    """Scores by a fixed table so argmax and normalisation can be checked by hand."""

    path = Path("<fake>")

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls: list[list[ScoreRequest]] = []

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self.calls.append(list(requests))
        return [ScoreResult(self.table.get(r.continuation, -10.0), 1, False) for r in requests]


def test_scorer_rules_by_hand() -> None:
    it = item(1, answer="C", options={"A": "aa", "B": "bbbbbbbbb", "C": "c"})
    # letter: B wins. text / len(option text): A -3/2 = -1.5, B -4/9 = -0.444, C -1.5/1 = -1.5
    be = FakeBackend({" A": -2.0, " B": -0.5, " C": -1.0, " aa": -3.0, " bbbbbbbbb": -4.0, " c": -1.5})
    (s,) = score_mcq(cast(Backend, be), [it])  # score_mcq only calls score()
    assert s.pred_letter == "B" and s.pred_text == "B"
    assert s.letter_logprobs == (-2.0, -0.5, -1.0)
    assert s.text_logprobs_norm == pytest.approx((-1.5, -4 / 9, -1.5))
    assert not s.correct_letter and not s.correct_text
    assert sum(s.distribution()) == pytest.approx(1.0)


def test_scorer_batches_and_keeps_order() -> None:
    items = [item(i, answer="A") for i in range(5)]
    be = FakeBackend({})
    scores = score_mcq(cast(Backend, be), items, batch_items=2)
    assert [s.item_id for s in scores] == [i.id for i in items]
    assert [len(c) for c in be.calls] == [16, 16, 8]
    # ties go to the first option
    assert all(s.pred_letter == "A" for s in scores)


def test_scorer_nan_never_wins() -> None:
    be = FakeBackend({" A": math.nan, " B": -5.0})
    (s,) = score_mcq(cast(Backend, be), [item(1, options={"A": "x", "B": "y"})])
    assert s.pred_letter == "B" and s.letter_logprobs[0] == -math.inf


def test_accuracy_by_lang() -> None:
    def sc(lang: str, ok: bool) -> ItemScore:
        return ItemScore("i", lang, "A", "A" if ok else "B", "B", (0.0, -1.0), (0.0, -1.0))

    scores = [sc("sw", True), sc("sw", False), sc("en", True), sc("sw", True)]
    acc = accuracy_by_lang(scores)
    assert list(acc) == ["en", "sw"]
    assert acc["sw"] == (pytest.approx(2 / 3), 3) and acc["en"] == (1.0, 1)
    assert accuracy_by_lang(scores, rule="text")["en"] == (0.0, 1)


def test_softmax_handles_infinities() -> None:
    assert softmax([-math.inf, 0.0]) == (0.0, 1.0)
    assert softmax([-math.inf, -math.inf]) == (0.5, 0.5)


# ------------------------------------------------------------------ real models


def _direct_letter_logprobs(backend: object, it: MCQItem) -> list[float]:
    res = backend.score([ScoreRequest(mcq_prompt(it), f" {k}") for k in it.options])  # type: ignore[attr-defined]
    return [r.logprob for r in res]


def test_scorer_on_tiny_model(tiny_model: Path) -> None:
    from globmed_edge.backends import open_backend

    be = open_backend(tiny_model)
    be.load()
    try:
        items = [item(i, lang=lang) for i, lang in enumerate(["en", "sw", "am"])]
        scores = score_mcq(be, items, batch_items=2)
        for it, s in zip(items, scores, strict=True):
            assert s.letter_logprobs == pytest.approx(_direct_letter_logprobs(be, it), abs=1e-4)
            assert all(x < 0 for x in s.letter_logprobs + s.text_logprobs_norm)
        # batching does not change the numbers (to float32 round-off: the packed forward passes
        # differ in shape, and on AVX-512/AMX CPUs torch's kernels then round differently, ~1e-6)
        again = score_mcq(be, items, batch_items=1)
        assert len(again) == len(scores)
        for a, b in zip(again, scores, strict=True):
            assert len(a.letter_logprobs) == len(b.letter_logprobs) == len(a.text_logprobs_norm)
            assert list(a.letter_logprobs) == pytest.approx(list(b.letter_logprobs), abs=1e-4)
            assert list(a.text_logprobs_norm) == pytest.approx(list(b.text_logprobs_norm), abs=1e-4)
    finally:
        be.close()


@pytest.mark.slow
def test_scorer_on_default_model_matches_plain_forward(default_model: Path) -> None:
    """Every option's log-likelihood equals a plain, uncached forward pass over prompt+option."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from globmed_edge.backends import open_backend

    items = [
        MCQItem("e-1", "easy", "en", "test", "Which organ pumps blood around the body?",
                {"A": "The liver", "B": "The lungs", "C": "The heart", "D": "The skin"}, "C"),
        MCQItem("e-2", "easy", "fr", "test", "Quel organe filtre le sang ?",
                {"A": "Le rein", "B": "Le cœur", "C": "La peau"}, "A"),
    ]
    shots = {"en": [MCQItem("s-1", "easy", "en", "dev", "What is 2 + 2?", {"A": "3", "B": "4"}, "B")]}
    be = open_backend(default_model)
    be.load()
    try:
        scores = score_mcq(be, items, shots=shots)
    finally:
        be.close()
    tok = AutoTokenizer.from_pretrained(default_model)
    model = AutoModelForCausalLM.from_pretrained(default_model, dtype=torch.float32).eval()

    def plain(context: str, cont: str) -> float:
        ctx = tok(context)["input_ids"]
        whole = tok(context + cont)["input_ids"]
        assert whole[: len(ctx)] == ctx
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
        return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))

    for it, s in zip(items, scores, strict=True):
        context = mcq_prompt(it, shots.get(it.lang, []))
        want_letter = [plain(context, f" {k}") for k in it.options]
        want_text = [plain(context, f" {v}") / len(v) for v in it.options.values()]
        assert s.letter_logprobs == pytest.approx(want_letter, abs=2e-3)
        assert s.text_logprobs_norm == pytest.approx(want_text, abs=2e-3)
        assert s.pred_letter == "ABCD"[max(range(len(want_letter)), key=want_letter.__getitem__)]
