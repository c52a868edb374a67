"""The conversation screen: messages, streaming answer, live speed, safety notice, keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import ProgressBar, Static

from globmed_edge.backends.base import Backend
from globmed_edge.textsafe import clean_line
from globmed_edge.tui.context import ChatContext
from globmed_edge.tui.i18n import Translator
from globmed_edge.tui.messages import (
    Exported,
    LanguageChosen,
    ModelFailed,
    ModelLoaded,
    OpenConversation,
    PickBuild,
    ReloadRequested,
    StreamDone,
    StreamFailed,
    StreamUpdate,
)
from globmed_edge.tui.safety import emergency_reminder
from globmed_edge.tui.session import ChatSession, StreamStats
from globmed_edge.tui.widgets import ChatInput, MessageBox, StatusLine

#: The screen repaints the streaming answer at most this often (the UI must not slow decoding).
UPDATE_SECONDS = 0.4


class ChatScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("f1", "app.show_help", "Help", priority=True),
        Binding("f2,ctrl+o", "app.show_history", "History", priority=True),
        Binding("f3", "export", "Export", priority=True),
        Binding("f4,ctrl+l", "app.choose_language", "Language", priority=True),
        Binding("f5,ctrl+r", "regenerate", "Regenerate", priority=True),
        Binding("f6", "copy", "Copy", priority=True),
        Binding("f7,ctrl+n", "new", "New", priority=True),
        Binding("f8", "reload", "Reload", priority=True),
        Binding("f9", "pick_build", "Models", priority=True),
    ]

    def __init__(self, ctx: ChatContext, build_name: str, *, conversation: int | None = None,
                 draft: str = "") -> None:
        super().__init__()
        self.ctx = ctx
        self.build_name = build_name
        self._conversation = conversation  # a saved conversation to show once mounted
        self._draft = draft  # typed in the chat before F9 chose this build: kept
        # The conversation and the model: the session is the one holder of the backend.
        self.session = self._new_session(None, None)
        self.generating = False
        self._cancel = threading.Event()
        self._load_started = time.monotonic()
        self._answer_box: MessageBox | None = None
        self._status: Callable[[], str] | None = None
        self.unverified: str | None = None  # set when the model runs with --unverified
        self.crashed: str | None = None  # set when the model's runtime process died (F8 reloads it)

    @property
    def backend(self) -> Backend | None:
        """The loaded model, None while loading or after its runtime crashed."""
        return self.session.backend

    def compose(self) -> ComposeResult:
        tr = self.ctx.tr
        yield Static(id="title")
        yield Static(tr("safety_notice"), id="notice")
        yield VerticalScroll(id="log")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="loading")
        yield StatusLine(id="status")
        yield ChatInput(id="input", placeholder=tr("input_placeholder"))
        yield Static(id="keys")

    def on_mount(self) -> None:
        self.ctx.language_changed.subscribe(self, self._language_changed, immediate=True)
        self.apply_language()
        if self._draft:
            self.query_one("#input", ChatInput).load_text(self._draft)
        self.query_one("#input").focus()
        self.set_status(lambda: self.ctx.tr("loading", name=self.build_name))
        if self._conversation is not None:
            self.call_after_refresh(self.show_conversation, self._conversation)

    def on_unmount(self) -> None:
        """F9 (another build) or quitting: the answer in progress stops, the backend is closed."""
        if self.generating:
            self._cancel.set()
        self.session.close()

    # ------------------------------------------------------------------ language

    def _language_changed(self, lang: str) -> None:
        self.session.set_language(lang)
        self.apply_language()

    def apply_language(self) -> None:
        tr = self.ctx.tr
        self.set_class(tr.rtl, "rtl")
        title = Text(f"{tr('title')} · {clean_line(self.build_name)}")
        if self.unverified:
            title.append(f" · ⚠ {tr('unverified')}", style="bold reverse red")
        self.query_one("#title", Static).update(title)
        self.query_one("#notice", Static).update("⚕ " + tr("safety_notice"))
        self.query_one("#input", ChatInput).placeholder = tr("input_placeholder")
        keys = [("F1", "key_help"), ("Esc", "key_stop"), ("^P", "key_palette"),
                ("F2", "key_history"), ("F4", "key_language")]
        self.query_one("#keys", Static).update("  ".join(f"[b]{k}[/b] {tr(v)}" for k, v in keys))
        for box in self.query(MessageBox):
            box.set_translator(tr)
        if self._status is not None:
            self.set_status(self._status)

    def set_status(self, text: str | Callable[[], str]) -> None:
        """Show a status; a callable is re-evaluated when the interface language changes."""
        self._status = text if callable(text) else (lambda: text)
        self.query_one("#status", StatusLine).update(Text(self._status()))

    def stats_text(self, stats: StreamStats) -> str:
        if self.ctx.settings.freeze_timings:
            return self.ctx.tr("stats", tps="–", ttft="–")
        tps, ttft = stats.tokens_per_second, stats.ttft
        return self.ctx.tr("stats", tps="–" if tps is None else f"{tps:.1f}",
                           ttft="–" if ttft is None else f"{ttft:.2f}")

    # ------------------------------------------------------------------ model

    def _drop_loading(self) -> None:
        # Removed, not hidden: a hidden indeterminate bar would keep animating (CPU taken from decoding).
        for bar in self.query("#loading"):
            bar.remove()

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.session.backend = message.backend
        if message.unverified:
            self.unverified = message.unverified
            self.apply_language()
            self.notify(f"{self.ctx.tr('unverified')}: {clean_line(message.unverified)}",
                        severity="warning", timeout=20, markup=False)
        self._drop_loading()
        self.set_status(lambda: self.ctx.tr("ready", name=self.build_name))

    def on_model_failed(self, message: ModelFailed) -> None:
        self._drop_loading()
        self.set_status(lambda: self.ctx.tr("load_failed", error=message.error))
        self.notify(self.ctx.tr("load_failed", error=message.error), severity="error", timeout=20, markup=False)

    # ------------------------------------------------------------------ conversation

    def _new_session(self, backend: Backend | None, conv_id: int | None) -> ChatSession:
        ctx = self.ctx
        return ChatSession(backend, lang=ctx.lang, store=ctx.store, build=self.build_name,
                           conv_id=conv_id, max_new_tokens=ctx.settings.max_new_tokens,
                           repetition_penalty=ctx.settings.repetition_penalty)

    def _switch_session(self, conv_id: int | None) -> None:
        """Another conversation (a saved one, or a new one) with the same backend."""
        backend, self.session.backend = self.session.backend, None
        self.session = self._new_session(backend, conv_id)

    def _log(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    def on_open_conversation(self, message: OpenConversation) -> None:
        self.show_conversation(message.conv_id)

    def show_conversation(self, conv_id: int) -> None:
        if self.generating:
            self.notify(self.ctx.tr("busy"), markup=False)
            return
        self._switch_session(conv_id)
        lang = self.session.lang
        # The conversation's language becomes the interface's (the app switches it and the
        # signal reaches this screen); its messages are shown in that language at once.
        tr = self.ctx.tr if lang == self.ctx.lang else Translator(lang)
        if lang != self.ctx.lang:
            self.post_message(LanguageChosen(lang))
        log = self._log()
        log.remove_children()
        for turn in self.session.turns:
            log.mount(MessageBox(turn.role, turn.content, lang, tr,
                                 status=turn.status, note=str(turn.meta.get("error", ""))))
            reminder = emergency_reminder(turn.content, lang) if turn.role == "user" else None
            if reminder:  # derived from the question, so it comes back with the conversation
                log.mount(MessageBox("emergency", reminder, lang, tr))
        log.scroll_end(animate=False)

    @on(ChatInput.Submitted)
    def ask(self, event: ChatInput.Submitted) -> None:
        text = event.text.strip()
        tr = self.ctx.tr
        if not text:
            return
        if self.generating:
            self.notify(tr("busy"), markup=False)
            return
        if self.backend is None:
            self.notify(tr("runtime_crashed", reason=self.crashed) if self.crashed else tr("not_ready"),
                        severity="warning", markup=False)
            return
        self.query_one("#input", ChatInput).clear()
        lang = self.ctx.lang
        self._log().mount(MessageBox("user", text, lang, tr))
        reminder = emergency_reminder(text, lang)
        if reminder:
            self._log().mount(MessageBox("emergency", reminder, lang, tr))
            self.notify(reminder, severity="warning", timeout=15, markup=False)
        self.session.add_question(text)
        self._start_answer()

    def _start_answer(self) -> None:
        self._answer_box = MessageBox("assistant", "", self.ctx.lang, self.ctx.tr, status="streaming")
        self._log().mount(self._answer_box)
        self._log().scroll_end(animate=False)
        self._cancel = threading.Event()
        self._set_generating(True)
        self.set_status(lambda: self.ctx.tr("waiting"))
        self._generate(self.session, self._cancel)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, session: ChatSession, cancel: threading.Event) -> None:
        last = 0.0
        stats: StreamStats | None = None
        turn = None
        try:
            for _delta, stats in session.stream_answer(cancel):
                turn = session.turns[-1]
                now = time.monotonic()
                if now - last >= UPDATE_SECONDS:
                    last = now
                    self.post_message(StreamUpdate(turn.content, stats))
        except Exception as exc:  # shown to the user; the conversation is kept
            from globmed_edge.backends.isolated import RuntimeCrash, signal_name

            text = session.turns[-1].content if session.turns else ""
            crashed = None
            if isinstance(exc, RuntimeCrash):
                crashed = signal_name(exc.signal_number) if exc.signal_number else "exit"
            self.post_message(StreamFailed(text, f"{type(exc).__name__}: {exc}", stats, crashed))
            return
        final = session.turns[-1]
        self.post_message(StreamDone(final.content, final.status,
                                     stats or StreamStats(time.perf_counter())))

    def on_stream_update(self, message: StreamUpdate) -> None:
        if self._answer_box is not None:
            self._answer_box.set_content(message.text)
            self._log().scroll_end(animate=False)
        self.set_status(self.stats_text(message.stats))

    def _set_generating(self, on: bool) -> None:
        """While an answer streams the input's cursor does not blink: each blink repaints the
        screen, and on a 2-core laptop every millisecond of UI work stalls llama.cpp's threads."""
        self.generating = on
        self.query_one("#input", ChatInput).cursor_blink = not on

    def on_stream_done(self, message: StreamDone) -> None:
        self._set_generating(False)
        if self._answer_box is not None:
            self._answer_box.set_content(message.text, message.status)
            self._log().scroll_end(animate=False)
        stats, status = message.stats, message.status
        self.set_status(lambda: (self.ctx.tr(status) + " " if status in ("stopped", "cut") else "")
                        + self.stats_text(stats))

    def on_stream_failed(self, message: StreamFailed) -> None:
        self._set_generating(False)
        text = self.ctx.tr("answer_failed", error=message.error)
        if message.crashed:  # the runtime is gone: say so in the user's language, keep everything else
            self.crashed = message.crashed
            self.session.close()
            text = self.ctx.tr("runtime_crashed", reason=message.crashed)
        if self._answer_box is not None:
            self._answer_box.set_content(message.text, "error", text)
        self.set_status(text)
        self.notify(text, severity="error", timeout=15, markup=False)

    # ------------------------------------------------------------------ actions

    def action_stop(self) -> None:
        if self.generating:
            self._cancel.set()

    def action_reload(self) -> None:
        """F8: load the same build again (after its runtime crashed, or at any time)."""
        if self.generating:
            self.notify(self.ctx.tr("busy"), markup=False)
            return
        self.crashed = None
        self.session.close()
        if not self.query("#loading"):
            self.mount(ProgressBar(total=None, show_eta=False, show_percentage=False, id="loading"),
                       before=self.query_one("#status"))
        self.set_status(lambda: self.ctx.tr("loading", name=self.build_name))
        self.post_message(ReloadRequested())

    def action_regenerate(self) -> None:
        tr = self.ctx.tr
        if self.generating:
            self.notify(tr("busy"), markup=False)
            return
        if self.backend is None:
            self.notify(tr("not_ready"), severity="warning", markup=False)
            return
        if not self.session.turns:
            self.notify(tr("nothing_yet"), markup=False)
            return
        if self.session.turns[-1].role == "assistant":
            self.session.drop_last_answer()
            boxes = [b for b in self.query(MessageBox) if b.role == "assistant"]
            if boxes:
                boxes[-1].remove()
        self._start_answer()

    def action_copy(self) -> None:
        last = self.session.last_answer()
        if last is None or not last.content:
            self.notify(self.ctx.tr("nothing_yet"), markup=False)
            return
        self.app.copy_to_clipboard(last.content)
        self.notify(self.ctx.tr("copied"), markup=False)

    def action_export(self) -> None:
        from globmed_edge.tui.export import export_all

        conv, store = self.session.conv_id, self.ctx.store
        if conv is None or store is None:
            self.notify(self.ctx.tr("nothing_yet"), markup=False)
            return
        self.post_message(Exported(export_all(store, conv, self.ctx.settings.export_dir)))

    def action_new(self) -> None:
        if self.generating:
            self.notify(self.ctx.tr("busy"), markup=False)
            return
        self._switch_session(None)
        self._log().remove_children()
        self.notify(self.ctx.tr("new_chat"), markup=False)

    def action_pick_build(self) -> None:
        """F9: choose another build; the conversation and the typed text come along."""
        if self.generating:
            self.notify(self.ctx.tr("busy"), markup=False)
            return
        self.post_message(PickBuild(self.query_one("#input", ChatInput).text, self.session.conv_id))
