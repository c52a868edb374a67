"""The item schema (see ../shared/data/README.md) and its validation.

Two item forms share the identifying fields:

* `MCQItem`: `id, dataset, lang, split, question, options{A..}, answer, rationale?, license?`
* `ChatItem`: `id, dataset, lang, split, messages[{role, content}], license?` (SFT data)

`parse_item` turns one decoded JSON object into an item or raises `DataError` with the reason;
the readers add the file and line. Fields we do not know are kept in `meta` (datasets often
carry a subject or source id) rather than rejected: the schema fixes what we need, not all a
publisher may add.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from globmed_edge.errors import DataError
from globmed_edge.languages import is_valid_code

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"validation": "dev", "val": "dev", "valid": "dev", "eval": "dev"}
LETTERS = string.ascii_uppercase
MAX_OPTIONS = 26
ROLES = ("system", "user", "assistant")

_MCQ_FIELDS = {"id", "dataset", "lang", "split", "question", "options", "answer", "rationale", "license"}
_CHAT_FIELDS = {"id", "dataset", "lang", "split", "messages", "license"}


@dataclass(frozen=True)
class MCQItem:
    id: str
    dataset: str
    lang: str
    split: str
    question: str
    options: dict[str, str]
    answer: str
    rationale: str | None = None
    license: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    kind = "mcq"

    @property
    def letters(self) -> list[str]:
        return list(self.options)

    @property
    def answer_index(self) -> int:
        return self.letters.index(self.answer)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "dataset": self.dataset, "lang": self.lang, "split": self.split,
            "question": self.question, "options": dict(self.options), "answer": self.answer,
        }
        if self.rationale is not None:
            out["rationale"] = self.rationale
        if self.license is not None:
            out["license"] = self.license
        out.update(self.meta)
        return out


@dataclass(frozen=True)
class ChatItem:
    id: str
    dataset: str
    lang: str
    split: str
    messages: tuple[dict[str, str], ...]
    license: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    kind = "chat"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "dataset": self.dataset, "lang": self.lang, "split": self.split,
            "messages": [dict(m) for m in self.messages],
        }
        if self.license is not None:
            out["license"] = self.license
        out.update(self.meta)
        return out


Item = MCQItem | ChatItem


@dataclass(frozen=True)
class Problem:
    """One bad record: where it is and why. Collected by `validate`, raised under --strict."""

    path: str
    line: int | None
    reason: str
    item_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


def _text(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise DataError(f"missing field {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise DataError(f"field {key!r} is empty")
    return value


def normalise_split(split: str) -> str:
    s = split.strip().lower()
    s = SPLIT_ALIASES.get(s, s)
    if s not in SPLITS:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return s


def check_options(options: Any) -> dict[str, str]:
    """Options must be a non-empty mapping A, B, C... (contiguous) to non-empty strings."""
    if not isinstance(options, dict):
        raise DataError(f"field 'options' must be an object of letter -> text, got {type(options).__name__}")
    if len(options) < 2:
        raise DataError(f"field 'options' needs at least 2 options, got {len(options)}")
    if len(options) > MAX_OPTIONS:
        raise DataError(f"field 'options' has {len(options)} options, at most {MAX_OPTIONS} allowed")
    expected = list(LETTERS[: len(options)])
    keys = list(options)
    if keys != expected:
        raise DataError(f"option keys must be {', '.join(expected)} in order, got {', '.join(map(str, keys))}")
    for k, v in options.items():
        if not isinstance(v, str) or not v.strip():
            raise DataError(f"option {k} is empty" if isinstance(v, str) else f"option {k} must be a string")
    return dict(options)


def _common(obj: dict[str, Any]) -> tuple[str, str, str, str, str | None]:
    item_id = _text(obj, "id")
    dataset = _text(obj, "dataset")
    lang = _text(obj, "lang")
    split = _text(obj, "split")
    assert item_id is not None and dataset is not None and lang is not None and split is not None
    if not is_valid_code(lang):
        raise DataError(f"lang {lang!r} is not an ISO 639 code (like 'en', 'sw', 'nso', 'pt-BR')")
    license_ = _text(obj, "license", required=False)
    return item_id, dataset, lang, normalise_split(split), license_


def parse_item(obj: Any) -> Item:
    """Validate one decoded JSON object and return the typed item; DataError says why not."""
    if not isinstance(obj, dict):
        raise DataError(f"record must be a JSON object, got {type(obj).__name__}")
    if "messages" in obj and "question" not in obj:
        return _parse_chat(obj)
    item_id, dataset, lang, split, license_ = _common(obj)
    question = _text(obj, "question")
    assert question is not None
    if "options" not in obj:
        raise DataError("missing field 'options'")
    options = check_options(obj["options"])
    answer = _text(obj, "answer")
    assert answer is not None
    if answer not in options:
        raise DataError(f"answer {answer!r} is not among the options ({', '.join(options)})")
    gold = options[answer].strip().casefold()
    for k, v in options.items():
        if k != answer and v.strip().casefold() == gold:
            raise DataError(f"gold option {answer} has the same text as option {k} (ambiguous item)")
    rationale = _text(obj, "rationale", required=False)
    meta = {k: v for k, v in obj.items() if k not in _MCQ_FIELDS}
    return MCQItem(item_id, dataset, lang, split, question, options, answer, rationale, license_, meta)


def _parse_chat(obj: dict[str, Any]) -> ChatItem:
    item_id, dataset, lang, split, license_ = _common(obj)
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError("field 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m or "content" not in m:
            raise DataError(f"message {i} must be an object with exactly 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise DataError(f"message {i} has empty content")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError("messages contain no assistant turn to learn from")
    if out[0]["role"] == "assistant":
        raise DataError("messages must not start with an assistant turn")
    meta = {k: v for k, v in obj.items() if k not in _CHAT_FIELDS}
    return ChatItem(item_id, dataset, lang, split, tuple(out), license_, meta)
