"""Saved conversations: search, open, rename, delete, export."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from globmed_edge.textsafe import clean_line
from globmed_edge.tui.context import ChatContext
from globmed_edge.tui.messages import Exported


class HistoryScreen(Screen[int | None]):
    """Dismisses with the id of the conversation to open, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", priority=True),
        Binding("f2", "rename", "Rename", priority=True),
        Binding("f3", "export", "Export", priority=True),
        Binding("f8,delete", "delete", "Delete", priority=True),
    ]

    def __init__(self, ctx: ChatContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._confirm_delete: int | None = None
        self._renaming: int | None = None

    def compose(self) -> ComposeResult:
        tr = self.ctx.tr
        yield Static(tr("history_title"), id="title")
        yield Input(placeholder=tr("search_placeholder"), id="search")
        yield DataTable(id="conversations", cursor_type="row")
        yield Input(placeholder=tr("rename_placeholder"), id="rename")
        yield Static(id="keys")

    def on_mount(self) -> None:
        tr = self.ctx.tr
        self.query_one("#rename").display = False
        keys = [("Enter", "key_open"), ("F2", "key_rename"), ("F3", "key_export"),
                ("F8", "key_delete"), ("Esc", "key_close")]
        self.query_one("#keys", Static).update("  ".join(f"[b]{k}[/b] {tr(v)}" for k, v in keys))
        table = self.query_one(DataTable)
        table.add_columns(tr("history_title"), tr("language_title"), "#", "")
        self.reload()
        self.query_one("#search").focus()

    def reload(self) -> None:
        store = self.ctx.store
        table = self.query_one(DataTable)
        table.clear()
        if store is None:
            return
        query = self.query_one("#search", Input).value.strip()
        for c in store.list_conversations(query):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated_at))
            table.add_row(clean_line(c.title)[:44], clean_line(c.lang), str(c.n_messages), when, key=str(c.id))

    def _selected(self) -> int | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(str(key.value))

    @on(Input.Changed, "#search")
    def _search(self) -> None:
        self.reload()

    @on(Input.Submitted, "#search")
    def _search_enter(self) -> None:
        conv = self._selected()
        if conv is not None:
            self.dismiss(conv)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(int(str(event.row_key.value)))

    def action_back(self) -> None:
        if self._renaming is not None:
            self._renaming = None
            self.query_one("#rename").display = False
            self.query_one(DataTable).focus()
            return
        self.dismiss(None)

    def action_rename(self) -> None:
        conv = self._selected()
        store = self.ctx.store
        if conv is None or store is None:
            return
        self._renaming = conv
        box = self.query_one("#rename", Input)
        box.value = store.get_conversation(conv).title
        box.display = True
        box.focus()

    @on(Input.Submitted, "#rename")
    def _do_rename(self, event: Input.Submitted) -> None:
        store = self.ctx.store
        if self._renaming is None or store is None or not event.value.strip():
            return
        store.rename(self._renaming, event.value)
        self._renaming = None
        event.input.display = False
        self.reload()
        self.query_one(DataTable).focus()
        self.notify(self.ctx.tr("renamed"), markup=False)

    def action_delete(self) -> None:
        conv = self._selected()
        store = self.ctx.store
        if conv is None or store is None:
            return
        tr = self.ctx.tr
        if self._confirm_delete != conv:  # a second press deletes: no accidental loss
            self._confirm_delete = conv
            title = clean_line(store.get_conversation(conv).title)
            self.notify(f"{tr('key_delete')}: “{title}”? (F8)", severity="warning", markup=False)
            return
        store.delete(conv)
        self._confirm_delete = None
        self.reload()
        self.notify(tr("deleted"), markup=False)

    def action_export(self) -> None:
        from globmed_edge.tui.export import export_all

        conv, store = self._selected(), self.ctx.store
        if conv is None or store is None:
            return
        self.post_message(Exported(export_all(store, conv, self.ctx.settings.export_dir)))
