"""The build picker shown when `globmed-edge chat` gets no BUILD argument."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Static

from globmed_edge.tui.builds import BuildChoice, best_choice, human_bytes
from globmed_edge.tui.context import ChatContext
from globmed_edge.tui.messages import BuildChosen, OpenConversation


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _clip_middle(text: str, width: int, tail: int = 13) -> str:
    """Cut from the middle: builds of one model differ at the end of their names (-gguf-q4_k_m),
    so the end stays and the shared model name gives way."""
    if len(text) <= width:
        return text
    tail = min(tail, width // 2)
    return text[: width - tail - 1] + "…" + text[-tail:]


class PickerScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "app.show_help", "Help", priority=True),
        Binding("f2", "app.show_history", "History", priority=True),
        Binding("f4,ctrl+l", "app.choose_language", "Language", priority=True),
        Binding("escape", "app.quit", "Quit"),
    ]

    def __init__(self, ctx: ChatContext, choices: list[BuildChoice], free: int, *,
                 conversation: int | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.choices = choices
        self.free = free
        self.conversation = conversation  # the saved conversation to continue with the build chosen
        self._confirm: int | None = None  # row waiting for a second Enter (RAM warning)
        best = best_choice(choices, self.free)  # the same rule as `chat --prompt` without BUILD
        self.recommended = next((i for i, c in enumerate(choices) if c is best), None)

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        yield Static(id="notice")
        yield DataTable(id="builds", cursor_type="row", zebra_stripes=True)
        yield Static(id="details")
        yield Static(id="hint")

    def on_mount(self) -> None:
        self.ctx.language_changed.subscribe(self, lambda _lang: self.apply_language(), immediate=True)
        self.apply_language()
        self.query_one(DataTable).focus()

    def apply_language(self) -> None:
        tr = self.ctx.tr
        self.query_one("#title", Static).update(f"{tr('title')} · {tr('pick_title')}")
        self.query_one("#notice", Static).update("⚕ " + tr("safety_notice"))
        hint = tr("pick_hint") if self.choices else tr("no_builds")
        self.query_one("#hint", Static).update(f"{hint}  [b]F1[/b] {tr('key_help')}  "
                                               f"[b]F2[/b] {tr('key_history')}  [b]F4[/b] {tr('key_language')}")
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_columns(tr("col_name"), tr("col_size"), tr("col_memory"), tr("col_speed"),
                          tr("col_langs"))
        for i, c in enumerate(self.choices):
            mark = "★ " if i == self.recommended else "⚠ " if c.expected_memory > self.free or c.problem else ""
            speed = f"{c.decode_tokens_per_s:.0f} tok/s" if c.decode_tokens_per_s else "–"
            name = _clip_middle(f"{mark}{c.name}", 26)
            memory = ("" if c.memory_measured else "≈") + human_bytes(c.expected_memory)
            table.add_row(name, human_bytes(c.size_bytes), memory, speed, _clip(c.language_column(), 16), key=str(i))
        last = self._last_build()
        start = last if last is not None else (self.recommended or 0)  # last time's build, else the ★ one
        if start:
            table.move_cursor(row=start)
        self._show_details(start)

    def _last_build(self) -> int | None:
        """The row of the build opened last time (remembered in the history file), if listed."""
        store = self.ctx.store
        last = store.get_setting("last_build") if store is not None else None
        return next((i for i, c in enumerate(self.choices) if last and str(c.path) == last), None)

    def on_open_conversation(self, message: OpenConversation) -> None:
        """F2 in the picker chose a saved conversation: open it with the build it was held with
        when that build is listed here, else keep the picker up to choose one for it."""
        conv = self.conversation = message.conv_id
        store = self.ctx.store
        name = store.get_conversation(conv).build if store is not None else ""
        match = next((c for c in self.choices if c.name == name and not c.problem), None)
        if match is not None:
            self.post_message(BuildChosen(match.path, match.name, conv))
        else:
            self.notify(self.ctx.tr("history_pick_build"), markup=False)

    def _show_details(self, index: int) -> None:
        if not self.choices:
            self.query_one("#details", Static).update("")
            return
        c = self.choices[index]
        # The grade tells builds of one model apart; the 80-column row has no room left for it.
        parity = c.parity_text()
        star = "★ " if index == self.recommended else ""
        text = f"{star}{c.name} · {c.format} {c.quantization}{' · ' + parity if parity else ''} · {c.languages}"
        summary = c.measured_summary()
        if summary is not None:  # what bench measured comes before the path, which matters least
            text += "\n" + self.ctx.tr(summary[0], **summary[1])
        if index == self.recommended:
            text += f"\n★ {self.ctx.tr('recommended')}"
        if c.problem:
            text += f"\n⚠ {c.problem}"
        elif c.expected_memory > self.free:
            text += f"\n⚠ {self.ctx.tr('ram_warning', name=c.name, need=human_bytes(c.expected_memory), free=human_bytes(self.free))}"
        text += f"\n{c.path}"
        self.query_one("#details", Static).update(Text(text))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_details(int(str(event.row_key.value)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        index = int(str(event.row_key.value))
        choice = self.choices[index]
        tr = self.ctx.tr
        if choice.problem:
            self.notify(tr("load_failed", error=choice.problem), severity="error", timeout=15, markup=False)
            return
        if choice.expected_memory > self.free and self._confirm != index:
            self._confirm = index
            self.notify(tr("ram_warning", name=choice.name, need=human_bytes(choice.expected_memory),
                           free=human_bytes(self.free)), severity="warning", timeout=15, markup=False)
            return
        self.post_message(BuildChosen(choice.path, choice.name, self.conversation))
