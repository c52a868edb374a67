"""Widgets of the chat screen: the multi-line input and one box per message."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import Static, TextArea

from globmed_edge.textsafe import clean_line, clean_text
from globmed_edge.tui.i18n import Translator

#: Keys that insert a new line. Most terminals send the same byte for Enter and Shift+Enter;
#: Ctrl+J (a line feed) works everywhere, Shift+Enter only where the terminal reports it.
NEWLINE_KEYS = ("ctrl+j", "newline", "shift+enter")


class ChatInput(TextArea):
    """Multi-line input: Enter sends, Ctrl+J (or Shift+Enter) adds a line."""

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         compact=True, **kwargs)  # type: ignore[arg-type]

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self.text))
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)


#: ISO 15924 scripts written right to left (Arabic, Hebrew, Syriac, Thaana, N'Ko)
RTL_SCRIPTS = frozenset({"Arab", "Hebr", "Syrc", "Thaa", "Nkoo"})


def _is_rtl(lang: str, text: str) -> bool:
    """Right-aligned when the message's own letters are mostly of a right-to-left script (an
    Arabic question typed with the Swahili interface), else by the language: the script of the
    text decides, not the interface (issue #15 item 11)."""
    from globmed_edge.languages import lookup
    from globmed_edge.tui.textlang import detect_script

    script = detect_script(text)
    if script:
        return script in RTL_SCRIPTS
    return lookup(lang, text).is_rtl


class MessageBox(Static):
    """One message. Assistant answers always carry the localized 'AI answer' marker.

    Text is shown in logical order (terminals do not reorder right-to-left text); messages in
    right-to-left languages are right-aligned, and the HTML export renders them fully.
    """

    def __init__(self, role: str, content: str, lang: str, tr: Translator, *,
                 status: str = "complete", note: str = "") -> None:
        super().__init__(classes=f"msg {role}")
        self.role = role
        self.body = content
        self.lang = lang
        self.tr = tr
        self.status = status
        self.note = note
        self._sync_classes()

    def _sync_classes(self) -> None:
        self.set_class(_is_rtl(self.lang, self.body), "rtl")
        self.set_class(self.status in ("error", "interrupted"), "failed")

    def set_translator(self, tr: Translator) -> None:
        self.tr = tr
        self.refresh_text()

    def set_content(self, content: str, status: str | None = None, note: str | None = None) -> None:
        self.body = content
        if status is not None:
            self.status = status
        if note is not None:
            self.note = note
        self._sync_classes()
        self.refresh_text()

    def on_mount(self) -> None:
        self.refresh_text()

    def refresh_text(self) -> None:
        tr = self.tr
        text = Text()
        if self.role == "user":
            text.append(tr("you"), style="bold")
            text.append("\n")
            text.append(clean_text(self.body))
        elif self.role == "assistant":
            text.append("⚕ " + tr("answer_marker"), style="bold italic")
            text.append("\n")
            if self.body:
                text.append(clean_text(self.body))  # model output and saved text are data
            elif self.status == "streaming":
                text.append(tr("waiting"), style="dim")
            if self.status in ("stopped", "cut", "interrupted", "error"):
                label = {"stopped": tr("stopped"), "cut": tr("cut"), "interrupted": tr("interrupted"),
                         "error": clean_line(self.note)}[self.status]
                text.append("\n" + label, style="italic")
        else:  # emergency reminder
            text.append("⚠ " + clean_text(self.body), style="bold")
        self.update(text)


class StatusLine(Static):
    """One line under the conversation: loading state, then live speed of the answer."""
