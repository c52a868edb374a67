"""The chat app: routes between the picker, chat, history and pop-up screens.

Screens get a `ChatContext` (tui/context.py: language, translator, history, settings, a
language-change signal), never the app, and post typed messages (tui/messages.py) that the app
routes. The backend is injected as a factory (path -> unloaded backend) so tests drive the app
with a fake one; the model loads in a worker thread, so the first screen paints at once, and is
handed to the chat screen's session, its only holder. `make_app` builds the app for the CLI, the
tests and lab/perf/tui_overhead.py alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from globmed_edge.tui.builds import BuildChoice
from globmed_edge.tui.context import BuildFinder, ChatContext, ChatSettings, find_builds
from globmed_edge.tui.i18n import Translator, language_name
from globmed_edge.tui.loader import BackendFactory, build_label, load_backend
from globmed_edge.tui.messages import (
    BuildChosen,
    Exported,
    LanguageChosen,
    ModelFailed,
    ModelLoaded,
    OpenConversation,
    PickBuild,
    ReloadRequested,
)
from globmed_edge.tui.screen_chat import ChatScreen
from globmed_edge.tui.screen_history import HistoryScreen
from globmed_edge.tui.screen_modals import HelpScreen, LanguageScreen
from globmed_edge.tui.screen_picker import PickerScreen
from globmed_edge.tui.session import DEFAULT_REPETITION_PENALTY
from globmed_edge.tui.store import ChatStore


class ChatApp(App[None]):
    CSS_PATH = "chat.tcss"
    TITLE = "globmed-edge chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "show_help", "Help"),
    ]

    def __init__(self, build: Path | None = None, *, lang: str = "en",
                 store: ChatStore | None = None, settings: ChatSettings | None = None,
                 backend_factory: BackendFactory | None = None, conversation: int | None = None,
                 builds: BuildFinder = find_builds) -> None:
        super().__init__()
        self.build = build
        self.ctx = ChatContext(self, lang=lang, store=store, settings=settings or ChatSettings())
        self.backend_factory = backend_factory
        self.find_builds = builds
        self._initial_conversation = conversation
        self.path: Path | None = None  # the build open now
        self.chat: ChatScreen | None = None  # the chat screen, while there is one
        self._draft = ""  # text typed in the chat before F9 chose another model
        self.started = time.perf_counter()  # start-up timings (lab/perf/tui_overhead.py)
        self.first_paint: float | None = None
        self.model_ready: float | None = None

    @property
    def lang(self) -> str:
        return self.ctx.lang

    @property
    def tr(self) -> Translator:
        return self.ctx.tr

    @property
    def store(self) -> ChatStore | None:
        return self.ctx.store

    def on_mount(self) -> None:
        if self.build is not None:
            self.open_build(self.build, conversation=self._initial_conversation)
        else:
            self._show_picker(self._initial_conversation)
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        self.first_paint = time.perf_counter() - self.started

    def _show_picker(self, conversation: int | None) -> None:
        choices, free = self.find_builds()
        picker = PickerScreen(self.ctx, choices, free, conversation=conversation)
        if self.chat is not None:  # F9: the chat screen goes (and closes its backend)
            self.chat = None
            self.switch_screen(picker)
        else:
            self.push_screen(picker)

    # ------------------------------------------------------------------ model

    def open_build(self, path: Path, name: str | None = None, conversation: int | None = None) -> None:
        self.path = path
        self._remember("last_build", str(path))
        draft, self._draft = self._draft, ""
        self.chat = ChatScreen(self.ctx, name or build_label(path), conversation=conversation, draft=draft)
        if isinstance(self.screen, PickerScreen):
            self.switch_screen(self.chat)
        else:
            self.push_screen(self.chat)
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
        self.model_ready = time.perf_counter() - self.started
        loaded = ModelLoaded(backend, time.perf_counter() - start,
                             verification.reason if verification.unverified else None)
        if not screen.post_message(loaded):  # the screen went (F9, quit) while the model loaded
            backend.close()

    @on(BuildChosen)
    def _build_chosen(self, message: BuildChosen) -> None:
        self.open_build(message.path, message.name, message.conversation)

    @on(ReloadRequested)
    def _reload(self) -> None:
        if self.path is not None and self.chat is not None:
            self._load(self.path, self.chat)

    @on(PickBuild)
    def _pick_build(self, message: PickBuild) -> None:
        """F9 in the chat: the picker, with the conversation and the typed text to come along."""
        self._draft = message.draft
        self._show_picker(message.conversation)

    def action_pick_build(self) -> None:
        self._chat_action("pick_build")

    # ------------------------------------------------------------------ language

    def _remember(self, key: str, value: str) -> None:
        """A setting for the next start (history file); a read-only history only loses the memory."""
        if self.store is not None:
            import sqlite3

            with contextlib.suppress(OSError, sqlite3.Error):
                self.store.set_setting(key, value)

    def set_language(self, lang: str) -> None:
        self.ctx.switch_language(lang)  # every screen (and the chat's session) follows the signal
        self._remember("ui_lang", self.lang)
        self.notify(self.tr("language_set", name=language_name(self.lang)), markup=False)

    @on(LanguageChosen)
    def _language_chosen(self, message: LanguageChosen) -> None:
        self.set_language(message.lang)

    def action_choose_language(self) -> None:
        def chosen(code: str | None) -> None:
            if code:
                self.set_language(code)

        self.push_screen(LanguageScreen(self.ctx), chosen)

    # ------------------------------------------------------------------ screens

    def action_show_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.ctx))

    def action_show_history(self) -> None:
        if self.store is None or isinstance(self.screen, HistoryScreen):
            return

        def chosen(conv: int | None) -> None:
            if conv is None:
                return
            if self.chat is not None:
                self.chat.post_message(OpenConversation(conv))
            elif isinstance(self.screen, PickerScreen):  # F2 before a model is loaded
                self.screen.post_message(OpenConversation(conv))

        self.push_screen(HistoryScreen(self.ctx), chosen)

    @on(Exported)
    def _exported(self, message: Exported) -> None:
        paths = message.paths
        shown = f"{paths[0].with_suffix('')}.{{{','.join(p.suffix.lstrip('.') for p in paths)}}}"
        self.notify(self.tr("exported", path=shown), timeout=15, markup=False)

    def _chat_action(self, name: str) -> None:
        """A chat screen action from the command palette, as its key would run it."""
        if self.chat is not None:
            self.call_later(self.run_action, name, self.chat)

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
                yield SystemCommand(tr(key), keys, partial(self._chat_action, name))
            yield SystemCommand(tr("key_pick"), "F9", self.action_pick_build)
        if self.store is not None:
            yield SystemCommand(tr("key_history"), "F2", self.action_show_history)
        yield SystemCommand(tr("key_language"), "F4", self.action_choose_language)
        yield SystemCommand(tr("key_help"), "F1", self.action_show_help)
        yield SystemCommand(tr("key_quit"), "Ctrl+Q", self.action_quit)


def make_app(build: Path | None = None, *, lang: str = "en", store: ChatStore | None = None,
             backend_factory: BackendFactory | None = None, conversation: int | None = None,
             max_new_tokens: int = 256, repetition_penalty: float | None = None,
             export_dir: Path | None = None, freeze_timings: bool = False,
             choices: list[BuildChoice] | None = None, free_memory: int | None = None) -> ChatApp:
    """The chat app, as `globmed-edge chat`, the tests and lab/perf/tui_overhead.py make it.

    `build`: open it at once (else the picker). `choices` and `free_memory` replace what the
    picker finds on this machine; `freeze_timings` shows speeds as "–" (the snapshot tests)."""
    penalty = DEFAULT_REPETITION_PENALTY if repetition_penalty is None else repetition_penalty
    settings = ChatSettings(max_new_tokens=max_new_tokens, repetition_penalty=penalty,
                            export_dir=export_dir, freeze_timings=freeze_timings)

    def builds() -> tuple[list[BuildChoice], int]:  # what was given, else what this machine has
        from globmed_edge.tui.builds import discover_builds
        from globmed_edge.tui.builds import free_memory as probe

        return (choices if choices is not None else discover_builds(),
                free_memory if free_memory is not None else probe())

    return ChatApp(build, lang=lang, store=store, settings=settings, backend_factory=backend_factory,
                   conversation=conversation, builds=builds)
