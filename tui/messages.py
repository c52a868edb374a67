"""Typed messages: from worker threads to the chat screen (Textual's post_message is
thread-safe), from the screens to the app, which routes them, and from the app to a screen."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from globmed_edge.backends.base import Backend
from globmed_edge.tui.session import StreamStats


class ModelLoaded(Message):
    def __init__(self, backend: Backend, seconds: float, unverified: str | None = None) -> None:
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


# ---------------------------------------------------------------- screens -> app (the app routes them)


class BuildChosen(Message):
    """The picker chose a build; `conversation` is the saved one to continue with it, if any."""

    def __init__(self, path: Path, name: str, conversation: int | None = None) -> None:
        super().__init__()
        self.path = path
        self.name = name
        self.conversation = conversation


class PickBuild(Message):
    """F9 in the chat: back to the picker; the conversation and the typed text come along."""

    def __init__(self, draft: str, conversation: int | None) -> None:
        super().__init__()
        self.draft = draft
        self.conversation = conversation


class ReloadRequested(Message):
    """F8: load the chat's build again (its old backend is already closed)."""


class LanguageChosen(Message):
    """Switch the interface and reply language (a reopened conversation's language)."""

    def __init__(self, lang: str) -> None:
        super().__init__()
        self.lang = lang


class Exported(Message):
    """A conversation was exported to these files (one per format)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self.paths = paths


# ---------------------------------------------------------------- app -> a screen


class OpenConversation(Message):
    """Show this saved conversation (chosen in the history)."""

    def __init__(self, conv_id: int) -> None:
        super().__init__()
        self.conv_id = conv_id
