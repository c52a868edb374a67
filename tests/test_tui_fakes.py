"""A deterministic fake backend for the chat app's tests (and checks that it keeps the protocol).

It replays queued token lists with controllable delays, can fail mid-stream, honours the cancel
event between tokens, and records every request it was given. Imported by the other
test_tui_* files and by the subprocess in the kill test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal, NoReturn

from globmed_edge.backends.base import (
    Backend,
    Capabilities,
    GenerationRequest,
    MemoryReport,
    Message,
    ScoreRequest,
    ScoreResult,
    TokenEvent,
)
from globmed_edge.errors import BackendError

DEFAULT_TOKENS = ["Give ", "oral ", "rehydration ", "salts ", "and ", "refer ", "if ", "worse."]


class FakeBackend:
    name: ClassVar[str] = "fake"
    capabilities: ClassVar[Capabilities] = Capabilities(score=False, logprobs=False)

    def __init__(self, path: str | Path = "fake-build", *, replies: Sequence[Sequence[str]] = (),
                 delay: float = 0.0, fail_at: int | None = None, load_delay: float = 0.0,
                 load_error: str | None = None, gate: threading.Event | None = None) -> None:
        self.path = Path(path)
        self.replies = [list(r) for r in replies]
        self.delay = delay
        self.fail_at = fail_at
        self.load_delay = load_delay
        self.load_error = load_error
        self.gate = gate  # when set, each token waits for it (tests release tokens one by one)
        self.requests: list[GenerationRequest] = []
        self.loaded = False
        self.closed = False

    def load(self) -> None:
        time.sleep(self.load_delay)
        if self.load_error:
            raise BackendError(self.load_error)
        self.loaded = True

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        text = "".join(f"<{m.role}>{m.content}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def stream(self, request: GenerationRequest, *,
               cancel: threading.Event | None = None) -> Iterator[TokenEvent]:
        if not self.loaded:
            raise BackendError("backend used before load()")
        self.requests.append(request)
        tokens = self.replies.pop(0) if self.replies else list(DEFAULT_TOKENS)
        # As the real backends: a reply longer than the budget ends with "length" (cut).
        end: Literal["length", "stop"] = "length" if len(tokens) > request.max_new_tokens else "stop"
        tokens = tokens[: request.max_new_tokens]
        prompt_tokens = len(self.tokenize(self.render_chat(request.messages)))
        for i, tok in enumerate(tokens):
            if self.gate is not None:
                while not self.gate.wait(0.01):
                    if cancel is not None and cancel.is_set():
                        break
            elif self.delay:
                time.sleep(self.delay)
            if cancel is not None and cancel.is_set():
                yield TokenEvent("", i, time.perf_counter(), finish_reason="cancelled")
                return
            if self.fail_at is not None and i == self.fail_at:
                raise BackendError("injected failure mid-stream")
            last = i == len(tokens) - 1
            yield TokenEvent(tok, i, time.perf_counter(), token_id=i,
                             finish_reason=end if last else None,
                             prompt_tokens=prompt_tokens if i == 0 else None)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        raise BackendError("the fake backend does not score")

    def logprobs(self, token_ids: Sequence[int]) -> NoReturn:
        raise BackendError("the fake backend has no logprobs")

    def memory(self) -> MemoryReport:
        return MemoryReport(0, 0)

    def close(self) -> None:
        self.closed = True


def test_fake_backend_keeps_the_protocol():
    be = FakeBackend(replies=[["a", "b"]])
    assert isinstance(be, Backend)
    be.load()
    events = list(be.stream(GenerationRequest.from_text("hi")))
    assert [e.text for e in events] == ["a", "b"]
    assert events[-1].finish_reason == "stop" and events[0].prompt_tokens


def test_fake_backend_cancel_and_failure():
    be = FakeBackend(fail_at=1)
    be.load()
    cancel = threading.Event()
    it = be.stream(GenerationRequest.from_text("hi"), cancel=cancel)
    assert next(it).text == DEFAULT_TOKENS[0]
    cancel.set()
    assert next(it).finish_reason == "cancelled"
    it2 = be.stream(GenerationRequest.from_text("hi"))
    next(it2)
    try:
        next(it2)
    except BackendError as exc:
        assert "injected" in str(exc)
    else:
        raise AssertionError("the injected failure did not fire")
