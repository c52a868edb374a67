"""What a screen may use, instead of the whole app: the interface language and its translator,
the history, the command line's settings, and a signal published when the language changes.

Screens read this and post messages (tui/messages.py) for everything else; the app owns it,
routes those messages and is the only one that changes the language (`switch_language`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual.signal import Signal

from globmed_edge.tui.builds import BuildChoice
from globmed_edge.tui.i18n import Translator, normalize
from globmed_edge.tui.session import DEFAULT_REPETITION_PENALTY
from globmed_edge.tui.store import ChatStore

if TYPE_CHECKING:
    from textual.dom import DOMNode

#: What the picker lists: the builds found on this machine and the free memory they are compared with.
BuildFinder = Callable[[], tuple[list[BuildChoice], int]]


def find_builds() -> tuple[list[BuildChoice], int]:
    """This machine's builds and free memory (tui/builds.py)."""
    from globmed_edge.tui.builds import discover_builds, free_memory

    return discover_builds(), free_memory()


@dataclass(frozen=True)
class ChatSettings:
    """The options of every answer and export (`chat --max-tokens`, `--repetition-penalty`,
    `--export-dir`). `freeze_timings` shows speeds as "–" (the snapshot tests)."""

    max_new_tokens: int = 256
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    export_dir: Path | None = None
    freeze_timings: bool = False


class ChatContext:
    """The interface language (`lang`, `tr`), the history (`store`, None in tests that need none),
    the settings, and `language_changed` (a Textual signal carrying the new language code;
    screens subscribe in `on_mount`, and a removed screen drops out by itself)."""

    def __init__(self, owner: DOMNode, *, lang: str, store: ChatStore | None,
                 settings: ChatSettings) -> None:
        self.lang = normalize(lang)
        self.tr = Translator(self.lang)
        self.store = store
        self.settings = settings
        self.language_changed: Signal[str] = Signal(owner, "language-changed")

    def switch_language(self, lang: str) -> None:
        """The app's part: change the language and tell every subscribed screen."""
        self.lang = normalize(lang)
        self.tr = Translator(self.lang)
        self.language_changed.publish(self.lang)
