"""Small pop-up screens: F1 help and the language chooser."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from globmed_edge.tui.context import ChatContext
from globmed_edge.tui.i18n import INTERFACE_LANGUAGES, language_name

HELP_KEYS = [
    ("Enter", "key_send"), ("Ctrl+J", "key_newline"), ("Esc", "key_stop"),
    ("F5 / Ctrl+R", "key_regenerate"), ("F6", "key_copy"), ("F2 / Ctrl+O", "key_history"),
    ("F3", "key_export"), ("F4 / Ctrl+L", "key_language"), ("F7 / Ctrl+N", "key_new"),
    ("F8", "key_reload"), ("F9", "key_pick"),
    ("Ctrl+P", "key_palette"), ("F1", "key_help"), ("Ctrl+Q", "key_quit"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,enter,q", "dismiss", "Back", priority=True)]

    def __init__(self, ctx: ChatContext) -> None:
        super().__init__()
        self.ctx = ctx

    def compose(self) -> ComposeResult:
        tr = self.ctx.tr
        width = max(len(k) for k, _ in HELP_KEYS)
        lines = [f"[b]{k.ljust(width)}[/b]  {tr(v)}" for k, v in HELP_KEYS]
        with Vertical(id="dialog"):
            yield Static(f"[b]{tr('help_title')}[/b]", classes="dialog-title")
            yield Static("\n".join(lines))
            yield Static("⚕ " + tr("safety_notice"), classes="dialog-note")


class LanguageScreen(ModalScreen[str | None]):
    """Dismisses with the chosen language code (interface and reply language)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Back", priority=True)]

    def __init__(self, ctx: ChatContext) -> None:
        super().__init__()
        self.ctx = ctx

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"[b]{self.ctx.tr('language_title')}[/b]", classes="dialog-title")
            yield OptionList(*[Option(language_name(code), id=code) for code in INTERFACE_LANGUAGES],
                             id="languages")

    def on_mount(self) -> None:
        lang = self.ctx.lang
        options = self.query_one(OptionList)
        options.highlighted = INTERFACE_LANGUAGES.index(lang) if lang in INTERFACE_LANGUAGES else 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
