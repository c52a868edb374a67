"""The conversation screen: messages, streaming answer, live speed, safety notice, keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import ProgressBar, Static

from globmed_edge.textsafe import clean_line
from globmed_edge.tui.messages import (
    ModelFailed,
    ModelLoaded,
    StreamDone,
    StreamFailed,
    StreamUpdate,
)
from globmed_edge.tui.safety import emergency_reminder
from globmed_edge.tui.session import ChatSession, StreamStats
from globmed_edge.tui.widgets import ChatInput, MessageBox, StatusLine

if TYPE_CHECKING:
    from globmed_edge.tui.app import ChatApp

#: The screen repaints the streaming answer at most this often (the UI must not slow decoding).
UPDATE_SECONDS = 0.4


class ChatScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop", priority=True),
        Binding("f1", "help", "Help", priority=True),
        Binding("f2,ctrl+o", "history", "History", priority=True),
        Binding("f3", "export", "Export", priority=True),
        Binding("f4,ctrl+l", "language", "Language", priority=True),
        Binding("f5,ctrl+r", "regenerate", "Regenerate", priority=True),
        Binding("f6", "copy", "Copy", priority=True),
        Binding("f7,ctrl+n", "new", "New", priority=True),
        Binding("f8", "reload", "Reload", priority=True),
        Binding("f9", "app.pick_build", "Models", priority=True),
    ]

    def __init__(self, build_name: str) -> None:
        super().__init__()
        self.build_name = build_name
        self.backend: Any = None
        self.session: ChatSession | None = None
        self.generating = False
        self._cancel = threading.Event()
        self._load_started = time.monotonic()
        self._answer_box: MessageBox | None = None
        self._status: Callable[[], str] | None = None
        self.unverified: str | None = None  # set when the model runs with --unverified
        self.crashed: str | None = None  # set when the model's runtime process died (F8 reloads it)

    @property
    def chat_app(self) -> ChatApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        tr = self.chat_app.tr
        yield Static(id="title")
        yield Static(tr("safety_notice"), id="notice")
        yield VerticalScroll(id="log")
        yield ProgressBar(total=None, show_eta=False, show_percentage=False, id="loading")
        yield StatusLine(id="status")
        yield ChatInput(id="input", placeholder=tr("input_placeholder"))
        yield Static(id="keys")

    def on_mount(self) -> None:
        self.apply_language()
        draft, self.chat_app.draft = self.chat_app.draft, ""
        if draft:  # typed before another model was chosen (F9): kept
            self.query_one("#input", ChatInput).load_text(draft)
        self.query_one("#input").focus()
        self.set_status(lambda: self.chat_app.tr("loading", name=self.build_name))

    # ------------------------------------------------------------------ language

    def apply_language(self) -> None:
        tr = self.chat_app.tr
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
        if self.chat_app.freeze_timings:
            return self.chat_app.tr("stats", tps="–", ttft="–")
        tps, ttft = stats.tokens_per_second, stats.ttft
        return self.chat_app.tr("stats", tps="–" if tps is None else f"{tps:.1f}",
                                ttft="–" if ttft is None else f"{ttft:.2f}")

    # ------------------------------------------------------------------ model

    def _drop_loading(self) -> None:
        # Removed, not hidden: a hidden indeterminate bar would keep animating (CPU taken from decoding).
        for bar in self.query("#loading"):
            bar.remove()

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.backend = message.backend
        if self.session is not None:
            self.session.backend = message.backend
        if message.unverified:
            self.unverified = message.unverified
            self.apply_language()
            self.notify(f"{self.chat_app.tr('unverified')}: {clean_line(message.unverified)}",
                        severity="warning", timeout=20, markup=False)
        self._drop_loading()
        self.set_status(lambda: self.chat_app.tr("ready", name=self.build_name))

    def on_model_failed(self, message: ModelFailed) -> None:
        self._drop_loading()
        self.set_status(lambda: self.chat_app.tr("load_failed", error=message.error))
        self.notify(self.chat_app.tr("load_failed", error=message.error), severity="error", timeout=20, markup=False)

    # ------------------------------------------------------------------ conversation

    def _new_session(self, conv_id: int | None = None) -> ChatSession:
        app = self.chat_app
        return ChatSession(self.backend, lang=app.lang, store=app.store, build=self.build_name,
                           conv_id=conv_id, max_new_tokens=app.max_new_tokens,
                           repetition_penalty=app.repetition_penalty)

    def _log(self) -> VerticalScroll:
        return self.query_one("#log", VerticalScroll)

    def show_conversation(self, conv_id: int) -> None:
        if self.generating:
            self.notify(self.chat_app.tr("busy"), markup=False)
            return
        self.session = self._new_session(conv_id)
        if self.session.lang != self.chat_app.lang:
            self.chat_app.set_language(self.session.lang)
        log = self._log()
        log.remove_children()
        for turn in self.session.turns:
            log.mount(MessageBox(turn.role, turn.content, self.session.lang, self.chat_app.tr,
                                 status=turn.status, note=str(turn.meta.get("error", ""))))
            reminder = emergency_reminder(turn.content, self.session.lang) if turn.role == "user" else None
            if reminder:  # derived from the question, so it comes back with the conversation
                log.mount(MessageBox("emergency", reminder, self.session.lang, self.chat_app.tr))
        log.scroll_end(animate=False)

    @on(ChatInput.Submitted)
    def ask(self, event: ChatInput.Submitted) -> None:
        text = event.text.strip()
        tr = self.chat_app.tr
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
        if self.session is None:
            self.session = self._new_session()
        lang = self.chat_app.lang
        self._log().mount(MessageBox("user", text, lang, tr))
        reminder = emergency_reminder(text, lang)
        if reminder:
            self._log().mount(MessageBox("emergency", reminder, lang, tr))
            self.notify(reminder, severity="warning", timeout=15, markup=False)
        self.session.add_question(text)
        self._start_answer()

    def _start_answer(self) -> None:
        assert self.session is not None
        self._answer_box = MessageBox("assistant", "", self.chat_app.lang, self.chat_app.tr,
                                      status="streaming")
        self._log().mount(self._answer_box)
        self._log().scroll_end(animate=False)
        self._cancel = threading.Event()
        self._set_generating(True)
        self.set_status(lambda: self.chat_app.tr("waiting"))
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
        self.set_status(lambda: (self.chat_app.tr(status) + " " if status in ("stopped", "cut") else "")
                        + self.stats_text(stats))

    def on_stream_failed(self, message: StreamFailed) -> None:
        self._set_generating(False)
        text = self.chat_app.tr("answer_failed", error=message.error)
        if message.crashed:  # the runtime is gone: say so in the user's language, keep everything else
            self.crashed = message.crashed
            self.backend = None
            self.chat_app.drop_backend()
            text = self.chat_app.tr("runtime_crashed", reason=message.crashed)
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
            self.notify(self.chat_app.tr("busy"), markup=False)
            return
        self.crashed = None
        self.backend = None
        self.chat_app.drop_backend()
        if not self.query("#loading"):
            self.mount(ProgressBar(total=None, show_eta=False, show_percentage=False, id="loading"),
                       before=self.query_one("#status"))
        self.set_status(lambda: self.chat_app.tr("loading", name=self.build_name))
        self.chat_app.reload_build(self)

    def action_regenerate(self) -> None:
        tr = self.chat_app.tr
        if self.generating:
            self.notify(tr("busy"), markup=False)
            return
        if self.backend is None:
            self.notify(tr("not_ready"), severity="warning", markup=False)
            return
        if self.session is None or not self.session.turns:
            self.notify(tr("nothing_yet"), markup=False)
            return
        if self.session.turns[-1].role == "assistant":
            self.session.drop_last_answer()
            boxes = [b for b in self.query(MessageBox) if b.role == "assistant"]
            if boxes:
                boxes[-1].remove()
        self._start_answer()

    def action_copy(self) -> None:
        last = self.session.last_answer() if self.session else None
        if last is None or not last.content:
            self.notify(self.chat_app.tr("nothing_yet"), markup=False)
            return
        self.app.copy_to_clipboard(last.content)
        self.notify(self.chat_app.tr("copied"), markup=False)

    def action_export(self) -> None:
        from globmed_edge.tui.export import FORMATS, export_conversation

        app = self.chat_app
        if self.session is None or self.session.conv_id is None or app.store is None:
            self.notify(app.tr("nothing_yet"), markup=False)
            return
        paths = [export_conversation(app.store, self.session.conv_id, fmt, app.export_dir)
                 for fmt in FORMATS]
        app.last_exports = paths
        self.notify(app.tr("exported", path=f"{paths[0].with_suffix('')}.{{md,json,html}}"),
                    timeout=15, markup=False)

    def action_new(self) -> None:
        if self.generating:
            self.notify(self.chat_app.tr("busy"), markup=False)
            return
        self.session = None
        self._log().remove_children()
        self.notify(self.chat_app.tr("new_chat"), markup=False)

    def action_help(self) -> None:
        self.chat_app.action_show_help()

    def action_history(self) -> None:
        self.chat_app.action_show_history()

    def action_language(self) -> None:
        self.chat_app.action_choose_language()
