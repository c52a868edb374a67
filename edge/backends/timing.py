"""The timings of one streamed answer, computed one way for the demo, bench throughput and chat.

TTFT is from the request (`started`) to the first token; decode speed is the tokens after the
first over the time from the first to the last (the first token's time is the prompt's
evaluation, not decoding). A bare "cancelled" marker (no text, no token) is not a token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Self

from globmed_edge.backends.base import TokenEvent


@dataclass(frozen=True)
class StreamTiming:
    started: float  # time.perf_counter() when the request was made
    first: float | None = None  # when the first token was ready
    last: float | None = None  # when the last token was ready
    tokens: int = 0
    prompt_tokens: int | None = None

    def add(self, event: TokenEvent, now: float | None = None) -> Self:
        """This timing with `event` counted at `now` (default: `event.time`, when the backend
        had it; the chat passes the time it received it)."""
        prompt = event.prompt_tokens if event.prompt_tokens is not None else self.prompt_tokens
        if event.finish_reason is not None and not event.text and event.token_id is None:
            return dataclasses.replace(self, prompt_tokens=prompt)  # a bare "cancelled" marker
        at = event.time if now is None else now
        return dataclasses.replace(self, first=at if self.first is None else self.first, last=at,
                                   tokens=self.tokens + 1, prompt_tokens=prompt)

    @classmethod
    def of(cls, started: float, events: Iterable[TokenEvent]) -> Self:
        """The timing of a whole stream, from its events' own times."""
        timing = cls(started)
        for event in events:
            timing = timing.add(event)
        return timing

    @property
    def ttft_s(self) -> float | None:
        return None if self.first is None else self.first - self.started

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time since the first; None for fewer than two tokens."""
        if self.first is None or self.last is None or self.tokens < 2 or self.last <= self.first:
            return None
        return (self.tokens - 1) / (self.last - self.first)
