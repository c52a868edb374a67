"""Messages from worker threads to the chat screen (Textual's post_message is thread-safe)."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from globmed_edge.tui.session import StreamStats


class ModelLoaded(Message):
    def __init__(self, backend: Any, seconds: float, unverified: str | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.seconds = seconds
        self.unverified = unverified  # why the model runs unverified (chat --unverified), else None


class ModelFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class StreamUpdate(Message):
    """The whole answer so far (throttled: at most every UPDATE_SECONDS)."""

    def __init__(self, text: str, stats: StreamStats) -> None:
        super().__init__()
        self.text = text
        self.stats = stats


class StreamDone(Message):
    def __init__(self, text: str, status: str, stats: StreamStats) -> None:
        super().__init__()
        self.text = text
        self.status = status
        self.stats = stats


class StreamFailed(Message):
    def __init__(self, text: str, error: str, stats: StreamStats | None, crashed: str | None = None) -> None:
        super().__init__()
        self.text = text
        self.error = error
        self.stats = stats
        self.crashed = crashed  # the runtime's process died ("SIGSEGV"...): the model must be reloaded
