"""A conversation with one backend: builds requests, streams answers, checkpoints them.

Plain Python (no textual): the app runs `stream_answer` in a worker thread, the one-shot
`--prompt` mode runs it directly, and the kill test runs it in a subprocess. The system prompt
is the short per-language one from the locale files; only complete, stopped or cut answers (and
the questions they answer) are sent back to the model, so a failed answer never confuses the next
one. Every answer is generated with the repetition guard (`repetition_penalty`, recorded in its
meta) and an answer that reached the max-new-tokens limit is saved with status ``cut``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from globmed_edge.backends.base import Backend, GenerationRequest, Message
from globmed_edge.backends.common import loaded
from globmed_edge.backends.timing import StreamTiming
from globmed_edge.tui.i18n import normalize, system_prompt
from globmed_edge.tui.store import ChatStore
from globmed_edge.tui.textlang import detect_language, detect_script

CHECKPOINT_SECONDS = 0.5
CHECKPOINT_TOKENS = 16
#: The chat's repetition guard (GenerationRequest.repetition_penalty). Tried on the default
#: model's q4_k_m and Q4_1 GGUF builds with French and Swahili dehydration questions (greedy,
#: 256 tokens): 1.0 looped to the cap ("kuwa kuwa, kuwa kuwa, ..." 36 times), 1.1 still repeated a
#: French sentence three times, 1.15 left no repeated 4-gram in either build or language.
DEFAULT_REPETITION_PENALTY = 1.15


def short_title(text: str, limit: int = 48) -> str:
    """The first words of `text` that fit in `limit` characters, never cut mid-word (a first word
    longer than `limit` is cut); "…" marks that words were left out."""
    words = " ".join(text.split())
    if len(words) <= limit:
        return words
    cut = words[:limit].rfind(" ")  # the title with its "…" fits in `limit`
    return (words[:cut] if cut > 0 else words[: limit - 1]).rstrip(" ,;:.-") + "…"


def text_meta(text: str, ui_lang: str) -> dict[str, Any]:
    """What is known about a message's language: its script, and the interface language."""
    return {"ui_lang": ui_lang, "script": detect_script(text)}


@dataclass
class Turn:
    role: str
    content: str
    status: str = "complete"
    msg_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamStats(StreamTiming):
    """Timings of one answer (the one timing type, backends/timing.py), under the names the
    chat screens read. `ttft` is from the request to the first token."""

    @property
    def ttft(self) -> float | None:
        return self.ttft_s

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first over the time since the first."""
        return self.decode_tokens_per_s

    def as_meta(self) -> dict[str, Any]:
        tps = self.tokens_per_second
        return {"tokens": self.tokens, "prompt_tokens": self.prompt_tokens,
                "ttft_s": None if self.ttft is None else round(self.ttft, 4),
                "tokens_per_s": None if tps is None else round(tps, 2)}


class ChatSession:
    def __init__(self, backend: Backend | None, *, lang: str = "en", store: ChatStore | None = None,
                 build: str = "", conv_id: int | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, title: str | None = None,
                 repetition_penalty: float = DEFAULT_REPETITION_PENALTY) -> None:
        self.backend: Backend | None = backend  # None while a model loads
        self.lang = normalize(lang)
        self.store = store
        self.build = build
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.repetition_penalty = repetition_penalty
        self.conv_id = conv_id
        self.turns: list[Turn] = []
        self._title = title
        if store is not None and conv_id is not None:
            conv = store.get_conversation(conv_id)
            self.lang = normalize(conv.lang)
            self.turns = [Turn(m.role, m.content, m.status, m.id, m.meta)
                          for m in store.messages(conv_id) if m.role != "system"]

    # ------------------------------------------------------------------ state

    def set_language(self, lang: str) -> None:
        self.lang = normalize(lang)
        if self.store is not None and self.conv_id is not None:
            self.store.set_language(self.conv_id, self.lang)

    def _ensure_conversation(self, first_text: str) -> None:
        if self.store is None or self.conv_id is not None:
            return
        title = self._title or short_title(first_text) or "…"
        self.conv_id = self.store.new_conversation(title, self.lang, self.build)

    def request(self) -> GenerationRequest:
        """The request for the answer to the last question, with this language's system prompt."""
        msgs: list[Message] = [Message("system", system_prompt(self.lang))]
        pending: Turn | None = None
        for turn in self.turns:
            if turn.role == "user":
                pending = turn
            elif pending is not None and turn.status in ("complete", "stopped", "cut") and turn.content:
                msgs += [Message("user", pending.content), Message("assistant", turn.content)]
                pending = None
        if pending is None:
            raise ValueError("no question waiting for an answer")
        msgs.append(Message("user", pending.content))
        return GenerationRequest(messages=tuple(msgs), max_new_tokens=self.max_new_tokens,
                                 temperature=self.temperature, repetition_penalty=self.repetition_penalty)

    def add_question(self, text: str) -> Turn:
        self._ensure_conversation(text)
        turn = Turn("user", text, meta=text_meta(text, self.lang))
        if self.store is not None and self.conv_id is not None:
            turn.msg_id = self.store.add_message(self.conv_id, "user", text, lang=detect_language(text),
                                                 meta=turn.meta)
        self.turns.append(turn)
        return turn

    def last_answer(self) -> Turn | None:
        return next((t for t in reversed(self.turns) if t.role == "assistant"), None)

    def close(self) -> None:
        """Close the backend (a crashed runtime's child is reaped); the conversation stays, and a
        backend loaded again is set as `backend`. The session is the only holder of its backend."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()

    def drop_last_answer(self) -> None:
        """Forget the last answer (for regenerate); the question stays."""
        if self.turns and self.turns[-1].role == "assistant":
            turn = self.turns.pop()
            if self.store is not None and turn.msg_id is not None:
                self.store.delete_message(turn.msg_id)

    # ------------------------------------------------------------------ streaming

    def stream_answer(self, cancel: threading.Event | None = None) -> Iterator[tuple[str, StreamStats]]:
        """Yield (text delta, stats) while the answer streams; the answer is saved as it goes.

        On a backend error the partial answer is kept with status ``error`` and the error is
        re-raised; on cancel it is kept with status ``stopped``.
        """
        req = self.request()
        stats = StreamStats(started=time.perf_counter())
        turn = Turn("assistant", "", "streaming",
                    meta={"ui_lang": self.lang, "repetition_penalty": req.repetition_penalty,
                          "max_new_tokens": req.max_new_tokens})
        if self.store is not None and self.conv_id is not None:
            turn.msg_id = self.store.add_message(self.conv_id, "assistant", "", status="streaming",
                                                 meta=turn.meta)
        self.turns.append(turn)
        parts: list[str] = []
        saved_at, saved_tokens = time.monotonic(), 0
        status = "complete"
        try:
            for ev in loaded(self.backend).stream(req, cancel=cancel):
                stats = stats.add(ev, time.perf_counter())
                if ev.text:
                    parts.append(ev.text)
                    turn.content = "".join(parts)
                    yield ev.text, stats
                if ev.finish_reason == "cancelled":
                    status = "stopped"
                elif ev.finish_reason == "length":
                    status = "cut"
                if (self.store is not None and turn.msg_id is not None
                        and (stats.tokens - saved_tokens >= CHECKPOINT_TOKENS
                             or time.monotonic() - saved_at >= CHECKPOINT_SECONDS)):
                    self.store.checkpoint(turn.msg_id, turn.content)
                    saved_at, saved_tokens = time.monotonic(), stats.tokens
            if cancel is not None and cancel.is_set():
                status = "stopped"
        except Exception as exc:
            self._finish(turn, "error", stats, error=f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:  # GeneratorExit when a caller abandons the stream
            self._finish(turn, "stopped", stats)
            raise
        self._finish(turn, status, stats)

    def _finish(self, turn: Turn, status: str, stats: StreamStats, error: str | None = None) -> None:
        turn.status = status
        turn.meta = {**turn.meta, **stats.as_meta(), "build": self.build,
                     "script": detect_script(turn.content)}
        if error:
            turn.meta["error"] = error
        if self.store is not None and turn.msg_id is not None:
            self.store.finish_message(turn.msg_id, turn.content, status, turn.meta,
                                      lang=detect_language(turn.content))
