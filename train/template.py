"""Render chats with the base model's own template and mark the tokens the loss is taken on.

Any template works, not only the few TRL ships `{% generation %}` versions of: the assistant
spans are found in characters by rendering each prefix of the conversation (up to the turn,
with the generation prompt; then including the turn), and mapped onto the tokens of the whole
rendered chat through the tokenizer's offsets. A span covers the reply and the template's
end-of-turn marker (`<|im_end|>`, `<end_of_turn>`, ...), so the model learns to stop; trailing
whitespace after the marker is left out. A template that does not render earlier turns
identically when more turns follow cannot be masked this way and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from globmed_edge.errors import ModelError

Messages = Sequence[dict[str, str]]


def check_template(tokenizer: Any, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{where}: the tokenizer has no chat template; add one to tokenizer_config.json "
                         "or chat_template.jinja (training must use the format the model is served with)")
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{where}: training needs a fast tokenizer (tokenizer.json) for offset mapping")


def _render(tokenizer: Any, messages: Messages, generation_prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=generation_prompt))


def assistant_spans(tokenizer: Any, messages: Messages) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the [start, end) character spans of its assistant turns."""
    full = _render(tokenizer, messages, False)
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], True)
        upto = _render(tokenizer, messages[: k + 1], False)
        if not (full.startswith(before) and full.startswith(upto) and len(upto) > len(before)):
            raise ModelError("the chat template does not render earlier turns identically when more "
                             "turns follow, so the assistant tokens cannot be located; "
                             "use a prefix-preserving template")
        end = len(upto.rstrip())
        spans.append((len(before), max(end, len(before) + 1)))
    return full, spans


def tokenize_chat(tokenizer: Any, messages: Messages) -> tuple[list[int], list[int]]:
    """input_ids of the rendered chat and labels: the id on assistant tokens, -100 elsewhere.

    The rendered text already holds the template's special tokens (BOS where the template puts
    one), so it is tokenized without adding more, as `apply_chat_template(tokenize=True)` does.
    """
    full, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [-100] * len(ids)
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if b > a and any(s <= a < e for s, e in spans):
            labels[i] = ids[i]
    return ids, labels


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The token(s) that close an assistant turn in this template (to stop generation on)."""
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ids, labels = tokenize_chat(tokenizer, msgs)
    masked = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(
        getattr(tokenizer, "added_tokens_decoder", {}) or {})
    out = [t for t in masked[-1:] if t in special]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in out:
        out.append(int(tokenizer.eos_token_id))
    return out
