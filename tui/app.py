"""The chat app: routes between the picker, chat, history and pop-up screens.

The backend is injected as a factory (path -> unloaded backend) so tests drive the app with a
fake one; the model loads in a worker thread, so the first screen paints at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from globmed_edge.tui.builds import BuildChoice
from globmed_edge.tui.i18n import Translator, language_name, normalize
from globmed_edge.tui.loader import BackendFactory, build_label, load_backend
from globmed_edge.tui.messages import ModelFailed, ModelLoaded
from globmed_edge.tui.screen_chat import ChatScreen
from globmed_edge.tui.screen_history import HistoryScreen
from globmed_edge.tui.screen_modals import HelpScreen, LanguageScreen
from globmed_edge.tui.screen_picker import PickerScreen
from globmed_edge.tui.session import DEFAULT_REPETITION_PENALTY
from globmed_edge.tui.store import ChatStore
from globmed_edge.tui.widgets import ChatInput


class ChatApp(App[None]):
    CSS_PATH = "chat.tcss"
    TITLE = "globmed-edge chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "show_help", "Help"),
    ]

    def __init__(self, build: Path | None = None, *, lang: str = "en",
                 store: ChatStore | None = None, backend_factory: BackendFactory | None = None,
                 choices: list[BuildChoice] | None = None, free_memory: int | None = None,
                 export_dir: Path | None = None, max_new_tokens: int = 256,
                 freeze_timings: bool = False, conversation: int | None = None,
                 repetition_penalty: float | None = None) -> None:
        super().__init__()
        self.build = build
        self.lang = normalize(lang)
        self.tr = Translator(self.lang)
        self.store = store
        self.backend_factory = backend_factory
        self.choices = choices
        self.free_memory = free_memory
        self.export_dir = export_dir
        self.max_new_tokens = max_new_tokens
        # The repetition guard of every answer (chat --repetition-penalty; 1.0 = off).
        self.repetition_penalty = DEFAULT_REPETITION_PENALTY if repetition_penalty is None else repetition_penalty
        self.freeze_timings = freeze_timings
        self.initial_conversation = conversation
        self.backend: Any = None
        self.path: Path | None = None  # the build open now
        self.draft = ""  # text typed in the chat before F9 chose another model
        self.chat: ChatScreen | None = None
        self.last_exports: list[Path] = []
        self.started = time.perf_counter()
        self.first_paint: float | None = None
        self.model_ready: float | None = None

    def on_mount(self) -> None:
        if self.build is not None:
            self.open_build(self.build)
        else:
            from globmed_edge.tui.builds import discover_builds

            choices = self.choices if self.choices is not None else discover_builds()
            self.push_screen(PickerScreen(choices, self.free_memory))
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        self.first_paint = time.perf_counter() - self.started

    # ------------------------------------------------------------------ model

    def open_build(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self._remember("last_build", str(path))
        self.chat = ChatScreen(name or build_label(path))
        if isinstance(self.screen, PickerScreen):
            self.switch_screen(self.chat)
        else:
            self.push_screen(self.chat)
        if self.initial_conversation is not None:
            conv = self.initial_conversation
            self.call_after_refresh(lambda: self.chat and self.chat.show_conversation(conv))
        self._load(path, self.chat)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def _load(self, path: Path, screen: ChatScreen) -> None:
        from globmed_edge.trust import check_model

        start = time.perf_counter()
        try:
            # The manifest rule first, whatever the factory: a refused build never loads.
            verification = check_model(path)
            backend = load_backend(path, self.backend_factory)
        except Exception as exc:  # every failure is shown on screen, the app keeps running
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            screen.post_message(ModelFailed(msg))
            return
        self.backend = backend
        self.model_ready = time.perf_counter() - self.started
        screen.post_message(ModelLoaded(backend, time.perf_counter() - start,
                                        verification.reason if verification.unverified else None))

    def reload_build(self, screen: ChatScreen) -> None:
        if self.path is not None:
            self._load(self.path, screen)

    def drop_backend(self) -> None:
        """Close the backend (a crashed runtime's child is reaped); the screen keeps its state."""
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()

    def action_pick_build(self) -> None:
        """F9: choose another build; the conversation and the typed text come along."""
        from globmed_edge.tui.builds import discover_builds

        chat = self.chat
        if chat is not None:
            if chat.generating:
                self.notify(self.tr("busy"), markup=False)
                return
            self.draft = chat.query_one("#input", ChatInput).text
            conv = chat.session.conv_id if chat.session is not None else None
            self.initial_conversation = conv
        self.drop_backend()
        choices = self.choices if self.choices is not None else discover_builds()
        self.switch_screen(PickerScreen(choices, self.free_memory))

    def on_unmount(self) -> None:
        if self.chat is not None and self.chat.generating:
            self.chat._cancel.set()
        if self.backend is not None:
            self.backend.close()

    # ------------------------------------------------------------------ language

    def _remember(self, key: str, value: str) -> None:
        """A setting for the next start (history file); a read-only history only loses the memory."""
        if self.store is not None:
            import sqlite3

            with contextlib.suppress(OSError, sqlite3.Error):
                self.store.set_setting(key, value)

    def set_language(self, lang: str) -> None:
        self.lang = normalize(lang)
        self.tr = Translator(self.lang)
        self._remember("ui_lang", self.lang)
        if self.chat is not None and self.chat.session is not None:
            self.chat.session.set_language(self.lang)
        for screen in self.screen_stack:
            apply = getattr(screen, "apply_language", None)
            if apply is not None:
                apply()
        self.notify(self.tr("language_set", name=language_name(self.lang)), markup=False)

    def action_choose_language(self) -> None:
        def chosen(code: str | None) -> None:
            if code:
                self.set_language(code)

        self.push_screen(LanguageScreen(), chosen)

    # ------------------------------------------------------------------ screens

    def action_show_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_show_history(self) -> None:
        if self.store is None or isinstance(self.screen, HistoryScreen):
            return

        def chosen(conv: int | None) -> None:
            if conv is None:
                return
            if self.chat is not None:
                self.chat.show_conversation(conv)
            elif isinstance(self.screen, PickerScreen):  # F2 before a model is loaded
                self.screen.continue_conversation(conv)

        self.push_screen(HistoryScreen(), chosen)

    def _chat_action(self, name: str) -> None:
        if self.chat is not None:
            getattr(self.chat, f"action_{name}")()

    def action_command_palette(self) -> None:
        """Ctrl+P: Textual's palette with its search prompt in the interface language."""
        from textual.command import CommandPalette

        if self.use_command_palette and not CommandPalette.is_open(self):  # type: ignore[arg-type]
            self.push_screen(CommandPalette(placeholder=self.tr("search_placeholder"), id="--command-palette"))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette: this app's actions in the interface language, each once, with its
        key as the help line (it was the title again), and none of Textual's own English commands
        (theme, screenshot, maximize, keys) that a clinic does not need (issue #15 item 12)."""
        tr = self.tr
        if self.chat is not None:
            for name, key, keys in [("stop", "key_stop", "Esc"), ("regenerate", "key_regenerate", "F5"),
                                    ("copy", "key_copy", "F6"), ("export", "key_export", "F3"),
                                    ("new", "key_new", "F7"), ("reload", "key_reload", "F8")]:
                yield SystemCommand(tr(key), keys, lambda n=name: self._chat_action(n))  # type: ignore[misc]
            yield SystemCommand(tr("key_pick"), "F9", self.action_pick_build)
        if self.store is not None:
            yield SystemCommand(tr("key_history"), "F2", self.action_show_history)
        yield SystemCommand(tr("key_language"), "F4", self.action_choose_language)
        yield SystemCommand(tr("key_help"), "F1", self.action_show_help)
        yield SystemCommand(tr("key_quit"), "Ctrl+Q", self.action_quit)
