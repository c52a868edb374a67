"""Answer extraction for generative MCQ scoring: ask through a chat template, read the letter back.

Instruct models are asked the question with its options and told to reply with the letter; the
reply is read by `extract_answer`, which accepts the shapes models actually produce in many
languages and scripts, in this order:

1. an answer marker followed by a letter: "Answer: B", "The answer is (B)", "Réponse : B",
   "答案：B", "答案是B", "正解はB", "الإجابة: ب", "उत्तर: B", "Ответ: B", "Jibu: B", "תשובה: B"
   (the markers are every language pack's `answer_markers`, edge/langpacks/<code>.json);
2. a reply that starts with the letter: "B", "B.", "(B)", "B)", "**B**";
3. a lone "(B)" anywhere;
4. exactly one option's text contained in the reply.

Text is NFKC-normalised first (full-width "Ｂ" and "：" become "B" and ":"). Arabic option letters
(أ ب ج د هـ) after a marker map to A-E. Anything else is an extraction failure (counted, and
scored as wrong): the failure rate is reported beside the accuracy.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache

from globmed_edge import langpacks
from globmed_edge.backends.base import Message
from globmed_edge.data.schema import MCQItem
from globmed_edge.mcq.prompts import render_question

INSTRUCTION = "Reply with the letter of the correct option only."
ARABIC_LETTERS = {"أ": "A", "ا": "A", "ب": "B", "ج": "C", "د": "D", "ه": "E", "هـ": "E"}


def _marker_re() -> re.Pattern[str]:
    """Any language pack's answer marker (`answer_markers`), then a letter."""
    return _compile_markers(langpacks.load().answer_markers)


@cache
def _compile_markers(markers: tuple[str, ...]) -> re.Pattern[str]:
    if not markers:  # "(?:)" would take any capital letter for an answer
        return re.compile(r"(?!)")
    return re.compile(
        r"(?:" + "|".join(markers) + r")\s*[:：\-–]?\s*(?:is\s+|est\s+|es\s+|:\s*)?[\(\[\*\"'«]*\s*"
        r"(?P<letter>(?-i:[A-Z])|هـ|[أابجده])(?![A-Za-z\u0600-\u06FF])",
        re.IGNORECASE)


_LEADING_RE = re.compile(r"^[\s\*\(\[\"'«]*(?P<letter>[A-Z])(?:\s*[\)\]\.:\*\"'»]|\s*$)")
_PAREN_RE = re.compile(r"\((?P<letter>[A-Z])\)")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _fold(text: str) -> str:
    return re.sub(r"[\W_]+", " ", _norm(text).casefold()).strip()


def extract_answer(reply: str, options: Sequence[str] | dict[str, str]) -> str | None:
    """The option letter a reply chooses, or None when it cannot be told."""
    letters = list(options)
    text = _norm(reply).strip()
    for m in _marker_re().finditer(text):
        raw = m.group("letter")
        letter = ARABIC_LETTERS.get(raw, raw)
        if letter in letters:
            return letter
    lead = _LEADING_RE.match(text)
    if lead and lead.group("letter") in letters:
        return lead.group("letter")
    found = {m.group("letter") for m in _PAREN_RE.finditer(text)} & set(letters)
    if len(found) == 1:
        return found.pop()
    if isinstance(options, dict):
        folded = f" {_fold(text)} "
        hits = [k for k, v in options.items() if _fold(v) and f" {_fold(v)} " in folded]
        if len(hits) == 1:
            return hits[0]
    return None


def chat_messages(item: MCQItem, shots: Sequence[MCQItem] = ()) -> tuple[Message, ...]:
    msgs: list[Message] = []
    for s in shots:
        msgs += [Message("user", f"{render_question(s)}\n{INSTRUCTION}"), Message("assistant", s.answer)]
    msgs.append(Message("user", f"{render_question(item)}\n{INSTRUCTION}"))
    return tuple(msgs)
