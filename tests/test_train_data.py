"""Training data: MCQ -> chat, language-balanced sampling, dev split, assistant-only labels, packing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from globmed_edge.data.schema import ChatItem, MCQItem, parse_item
from globmed_edge.errors import DataError
from globmed_edge.train.data import (
    Example,
    allocate,
    balanced_sample,
    build_splits,
    language_weights,
    load_splits,
    mcq_to_messages,
)


def mcq(i: int, lang: str, split: str = "train", rationale: str | None = None) -> MCQItem:
    obj = {"id": f"t-{split}-{lang}-{i}", "dataset": "t", "lang": lang, "split": split,
           "question": f"Question {i} in {lang}?", "options": {"A": f"alpha {i}", "B": f"beta {i}",
                                                                "C": f"gamma {i}"},
           "answer": "ABC"[i % 3]}
    if rationale:
        obj["rationale"] = rationale
    item = parse_item(obj)
    assert isinstance(item, MCQItem)
    return item


def chat(i: int, lang: str) -> ChatItem:
    item = parse_item({"id": f"c-{lang}-{i}", "dataset": "c", "lang": lang, "split": "train",
                       "messages": [{"role": "user", "content": f"hello {i}"},
                                    {"role": "assistant", "content": f"reply {i}"}]})
    assert isinstance(item, ChatItem)
    return item


def test_mcq_becomes_question_then_letter_and_rationale() -> None:
    item = mcq(1, "sw", rationale="Because beta.")
    msgs = mcq_to_messages(item)
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["content"] == "Question: Question 1 in sw?\nA. alpha 1\nB. beta 1\nC. gamma 1\nAnswer:"
    assert msgs[1]["content"] == "B. beta 1\n\nBecause beta."
    assert mcq_to_messages(item, include_rationale=False)[1]["content"] == "B. beta 1"
    with_system = mcq_to_messages(item, system_prompt="You are a nurse.")
    assert with_system[0] == {"role": "system", "content": "You are a nurse."}
    # two different items render two different prompts (STYLE rule 8)
    assert mcq_to_messages(mcq(2, "sw"))[0]["content"] != msgs[0]["content"]


def test_language_weights_follow_the_temperature() -> None:
    counts = {"en": 900, "sw": 100}
    w1 = language_weights(counts, 1.0)
    assert w1 == pytest.approx({"en": 0.9, "sw": 0.1})
    w2 = language_weights(counts, 2.0)  # sqrt: 30 vs 10
    assert w2 == pytest.approx({"en": 0.75, "sw": 0.25})
    wbig = language_weights(counts, 1e6)
    assert wbig["sw"] == pytest.approx(0.5, abs=1e-3)


def test_allocate_sums_and_keeps_every_language() -> None:
    counts = allocate({"a": 0.97, "b": 0.02, "c": 0.01}, 10)
    assert sum(counts.values()) == 10 and min(counts.values()) >= 1


def test_balanced_sample_upsamples_low_resource_and_is_deterministic() -> None:
    by_lang = {"en": [Example(f"en{i}", "en", ()) for i in range(90)],
               "zu": [Example(f"zu{i}", "zu", ()) for i in range(10)]}
    a = balanced_sample(by_lang, 100, temperature=1e6, seed=3)
    b = balanced_sample(by_lang, 100, temperature=1e6, seed=3)
    assert [e.id for e in a] == [e.id for e in b]
    n = Counter(e.lang for e in a)
    assert n == {"en": 50, "zu": 50}
    zu = Counter(e.id for e in a if e.lang == "zu")
    assert set(zu.values()) == {5}  # whole passes: every zu item exactly 5 times
    assert len({e.id for e in a if e.lang == "en"}) == 50  # en subsampled without repeats
    assert [e.id for e in balanced_sample(by_lang, 100, 1e6, seed=4)] != [e.id for e in a]


def test_splits_use_dev_items_hold_out_otherwise_and_never_test() -> None:
    items = ([mcq(i, "en") for i in range(40)] + [mcq(i, "en", "dev") for i in range(5)]
             + [mcq(i, "zu") for i in range(40)] + [mcq(i, "en", "test") for i in range(5)]
             + [chat(i, "zu") for i in range(3)])
    s = build_splits(items, dev_fraction=0.25, temperature=1.0, seed=1)
    dev_ids = {i.id for i in s.dev}
    assert {f"t-dev-en-{i}" for i in range(5)} == {i.id for i in s.dev if i.lang == "en"}
    zu_dev = [i for i in s.dev if i.lang == "zu"]
    assert 3 <= len(zu_dev) <= 20  # ~25% of 40 held out by id hash
    train_ids = {e.id for e in s.train}
    assert not train_ids & dev_ids
    assert not any("test" in i for i in train_ids)
    assert "c-zu-0" in train_ids  # chat items are trained on as they are
    assert s.train_counts == {"en": 40, "zu": 40 - len(zu_dev) + 3}
    assert len(s.train) == 80 + 3 - len(zu_dev)


def test_requested_language_without_items_is_an_error() -> None:
    items = [mcq(i, "en") for i in range(4)] + [mcq(0, "zu", "test")]
    with pytest.raises(DataError, match=r"no train items for language 'zu' in my.jsonl \(languages with train items: en\)"):
        build_splits(items, languages=["en", "zu"], source="my.jsonl")


def test_load_splits_reads_files_and_hashes_them(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(mcq(i, "fr").to_dict()) for i in range(6)) + "\n", encoding="utf-8")
    s = load_splits([tmp_path], dev_fraction=0.0)
    assert list(s.files) == [str(path)] and len(next(iter(s.files.values()))) == 64
    assert len(s.train) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:1"):
        load_splits([bad])


# ----------------------------------------------------------------- labels on assistant turns only


def _tok(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


CONV = [{"role": "user", "content": "Question: fever?\nA. yes\nB. no\nAnswer:"},
        {"role": "assistant", "content": "A. yes"},
        {"role": "user", "content": "Pourquoi ? Eleza kwa Kiswahili."},
        {"role": "assistant", "content": "Kwa sababu homa ni dalili. ☤"}]


def test_labels_cover_exactly_the_assistant_tokens(tiny_model: Path) -> None:
    from globmed_edge.train.template import end_of_turn_ids, tokenize_chat

    tok = _tok(tiny_model)
    ids, labels = tokenize_chat(tok, CONV)
    assert ids == tok(tok.apply_chat_template(CONV, tokenize=False), add_special_tokens=False)["input_ids"]
    kept = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
    assert all(lab in (-100, i) for i, lab in zip(ids, labels, strict=True))
    # exactly: each reply followed by the template's end-of-turn token, nothing else
    assert tok.decode(kept) == "A. yes<|im_end|>Kwa sababu homa ni dalili. ☤<|im_end|>"
    runs = "".join("1" if lab != -100 else "0" for lab in labels).strip("0").split("0")
    assert len([r for r in runs if r]) == 2  # two contiguous spans, one per assistant turn
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_masking_works_with_another_template(tiny_model: Path) -> None:
    from globmed_edge.models import PLAIN_CHAT_TEMPLATE
    from globmed_edge.train.template import tokenize_chat

    tok = _tok(tiny_model)
    tok.chat_template = PLAIN_CHAT_TEMPLATE  # Gemma's turn format, no {% generation %} markers
    ids, labels = tokenize_chat(tok, CONV)
    kept = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    assert kept == "A. yes<end_of_turn>Kwa sababu homa ni dalili. ☤<end_of_turn>"


def test_model_without_chat_template_is_refused(tiny_model: Path) -> None:
    from globmed_edge.errors import ModelError
    from globmed_edge.train.template import check_template

    tok = _tok(tiny_model)
    tok.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        check_template(tok, "my-model")


def test_packed_examples_do_not_attend_across_boundaries(tiny_model: Path) -> None:
    """What TRL's padding-free packing feeds the model (position ids restart per example, no
    attention mask, use_cache=False as SFTTrainer.compute_loss sets) gives each example the same
    logits as running it alone, with the sdpa attention used on CPU."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from globmed_edge.train.template import tokenize_chat

    tok = _tok(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    a, la = tokenize_chat(tok, CONV[:2])
    b, lb = tokenize_chat(tok, CONV[2:])
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(
        [{"input_ids": a + b, "labels": la + lb, "seq_lengths": [len(a), len(b)]}])
    assert batch["position_ids"][0, len(a)] == 0 and "attention_mask" not in batch
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits[0]
        alone_b = model(input_ids=torch.tensor([b])).logits[0]
        alone_a = model(input_ids=torch.tensor([a])).logits[0]
    torch.testing.assert_close(packed[: len(a)], alone_a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed[len(a):], alone_b, atol=1e-4, rtol=1e-4)


def test_training_on_train_and_dev_holds_the_eval_set_out_of_both() -> None:
    items = [mcq(k, lang, split) for lang in ("en", "zu")
             for split, n in (("train", 4), ("dev", 20), ("test", 5)) for k in range(n)]
    plain = build_splits(items, dev_fraction=0.25, seed=1)
    assert {i.split for i in plain.dev} == {"dev"} and plain.train_counts == {"en": 4, "zu": 4}
    both = build_splits(items, dev_fraction=0.25, seed=1, train_splits=("train", "dev"))
    trained = {ex.id for ex in both.train}
    held = {i.id for i in both.dev}
    assert held and not held & trained and sum(both.train_counts.values()) == 48 - len(held)
    assert not any("-test-" in i for i in trained | held)
    with pytest.raises(DataError, match="train_splits"):
        build_splits(items, train_splits=("train", "test"))
    with pytest.raises(DataError, match="no train/dev items for language 'xh'"):
        build_splits(items, languages=["xh"], train_splits=("train", "dev"))
