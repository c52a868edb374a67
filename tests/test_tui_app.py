"""Pilot-driven tests of the chat app with the deterministic fake backend (80x24)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from test_tui_fakes import DEFAULT_TOKENS, FakeBackend
from textual.widgets import DataTable, Input

import globmed_edge.tui.app as tui_app
from globmed_edge.tui.app import ChatApp
from globmed_edge.tui.builds import BuildChoice
from globmed_edge.tui.i18n import Translator
from globmed_edge.tui.messages import Exported, PickBuild
from globmed_edge.tui.screen_chat import ChatScreen
from globmed_edge.tui.screen_history import HistoryScreen
from globmed_edge.tui.screen_modals import HelpScreen, LanguageScreen
from globmed_edge.tui.screen_picker import PickerScreen
from globmed_edge.tui.store import ChatStore
from globmed_edge.tui.widgets import ChatInput, MessageBox

SIZE = (80, 24)


def make_app(tmp_path: Path, backend: FakeBackend | None, **kw) -> ChatApp:
    """The app on a fake build with `backend` (the shared factory, tui.app.make_app)."""
    store = kw.pop("store", None) or ChatStore(tmp_path / "history.sqlite3")
    kw.setdefault("backend_factory", lambda p: backend)
    return tui_app.make_app(Path("fake-build"), store=store, export_dir=tmp_path / "exports",
                            freeze_timings=True, **kw)


async def until(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached in time")


async def ready(pilot, app: ChatApp) -> ChatScreen:
    await until(pilot, lambda: app.chat is not None and app.chat.backend is not None)
    assert app.chat is not None
    return app.chat


async def ask(pilot, chat: ChatScreen, text: str, wait: bool = True) -> None:
    n = len(boxes(chat, "assistant"))
    chat.query_one(ChatInput).insert(text)
    await pilot.press("enter")
    await until(pilot, lambda: len(boxes(chat, "assistant")) > n)
    if wait:
        await until(pilot, lambda: not chat.generating)


def boxes(chat: ChatScreen, role: str) -> list[MessageBox]:
    return [b for b in chat.query(MessageBox) if b.role == role]


def notes(app: ChatApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_opens_at_once_loads_in_worker_then_streams(tmp_path):
    gate = threading.Event()
    be = FakeBackend(load_delay=0.3)
    app = make_app(tmp_path, be)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.chat
        assert chat is not None and chat.backend is None  # first screen is up before the model
        assert chat.query_one("#loading").display
        assert "Loading fake-build" in str(chat.query_one("#status").render())
        chat.query_one(ChatInput).insert("too early")
        await pilot.press("enter")
        assert "The model is still loading." in notes(app)
        chat.query_one(ChatInput).clear()
        chat = await ready(pilot, app)
        await until(pilot, lambda: not chat.query("#loading"))
        be.gate = gate
        await ask(pilot, chat, "What is ORS?", wait=False)
        assert boxes(chat, "assistant")[-1].status == "streaming"
        gate.set()
        await until(pilot, lambda: not chat.generating)
        answer = boxes(chat, "assistant")[-1]
        assert answer.body == "".join(DEFAULT_TOKENS) and answer.status == "complete"
        assert "AI answer" in str(answer.render())
        assert "tokens/s" in str(chat.query_one("#status").render())
        assert app.store is not None
        conv = app.store.list_conversations()[0]
        assert [m.content for m in app.store.messages(conv.id)] == ["What is ORS?", answer.body]


async def test_multiline_input_enter_sends_ctrl_j_newline(tmp_path):
    be = FakeBackend()
    app = make_app(tmp_path, be)
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await pilot.press("a", "ctrl+j", "b")
        assert chat.query_one(ChatInput).text == "a\nb"
        await pilot.press("enter")
        await until(pilot, lambda: not chat.generating and boxes(chat, "assistant"))
        assert be.requests[0].messages[-1].content == "a\nb"
        assert chat.query_one(ChatInput).text == ""


async def test_escape_stops_and_keys_work_while_streaming(tmp_path):
    be = FakeBackend(replies=[[f"w{i} " for i in range(400)]], delay=0.02)
    app = make_app(tmp_path, be)
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "long answer please", wait=False)
        await until(pilot, lambda: boxes(chat, "assistant")[-1].body)
        await pilot.press("x", "y")  # typing is handled while tokens stream
        assert chat.query_one(ChatInput).text == "xy" and chat.generating
        await pilot.press("escape")
        await until(pilot, lambda: not chat.generating)
        answer = boxes(chat, "assistant")[-1]
        assert answer.status == "stopped" and 0 < len(answer.body.split()) < 400
        assert app.store is not None
        stored = app.store.messages(app.store.list_conversations()[0].id)[-1]
        assert stored.status == "stopped" and stored.content == answer.body


async def test_regenerate_replaces_the_answer(tmp_path):
    be = FakeBackend(replies=[["first"], ["second"]])
    app = make_app(tmp_path, be)
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "q")
        await pilot.press("f5")
        await until(pilot, lambda: not chat.generating and boxes(chat, "assistant")[-1].body == "second")
        assert [b.body for b in boxes(chat, "assistant")] == ["second"]
        assert app.store is not None
        msgs = app.store.messages(app.store.list_conversations()[0].id)
        assert [(m.role, m.content) for m in msgs] == [("user", "q"), ("assistant", "second")]
        assert be.requests[0] == be.requests[1]  # same question, same prompt


async def test_error_mid_stream_is_shown_and_conversation_kept(tmp_path):
    be = FakeBackend(replies=[["a", "b", "c"], ["fine"]], fail_at=2)
    app = make_app(tmp_path, be)
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "first")
        failed = boxes(chat, "assistant")[-1]
        assert failed.status == "error" and failed.body == "ab" and "injected" in failed.note
        assert any("injected" in n for n in notes(app))
        be.fail_at = None
        await ask(pilot, chat, "second")
        assert boxes(chat, "assistant")[-1].body == "fine"
        assert [m.content for m in be.requests[-1].messages[1:]] == ["second"]
        assert app.store is not None
        assert len(app.store.messages(app.store.list_conversations()[0].id)) == 4


async def test_language_switch_changes_interface_and_reply_language(tmp_path):
    be = FakeBackend()
    app = make_app(tmp_path, be)
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "hello")
        await pilot.press("f4")
        assert isinstance(app.screen, LanguageScreen)
        for _ in range(12):  # en zh ja ko fr es de pt ru ar hi it -> sw is the 13th
            await pilot.press("down")
        await pilot.press("enter")
        await until(pilot, lambda: app.lang == "sw")
        sw = Translator("sw")
        assert sw("safety_notice") in str(chat.query_one("#notice").render())
        assert chat.query_one(ChatInput).placeholder == sw("input_placeholder")
        assert sw("answer_marker") in str(boxes(chat, "assistant")[0].render())
        await ask(pilot, chat, "homa")
        assert "Kiswahili" in be.requests[-1].messages[0].content
        assert app.store is not None
        assert app.store.list_conversations()[0].lang == "sw"


async def test_red_flag_shows_emergency_reminder(tmp_path):
    be = FakeBackend()
    app = make_app(tmp_path, be, lang="fr")
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "Enfant avec une raideur de la nuque et de la fièvre")
        (box,) = boxes(chat, "emergency")
        assert "protocole d'urgence" in box.body and "raideur de la nuque" in box.body
        await ask(pilot, chat, "Et la dose de paracétamol ?")
        assert len(boxes(chat, "emergency")) == 1


async def test_history_persists_across_restarts_and_can_be_managed(tmp_path):
    db = tmp_path / "history.sqlite3"
    app = make_app(tmp_path, FakeBackend(replies=[["saved answer"]]), store=ChatStore(db))
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "bleeding in pregnancy")
    assert app.store is not None
    app.store.close()
    app2 = make_app(tmp_path, FakeBackend(), store=ChatStore(db))
    async with app2.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app2)
        await pilot.press("f2")
        assert isinstance(app2.screen, HistoryScreen)
        await pilot.press(*"pregn")
        table = app2.screen.query_one("#conversations", DataTable)
        await until(pilot, lambda: table.row_count == 1)
        await pilot.press("f2")  # rename
        rename = app2.screen.query_one("#rename", Input)
        rename.value = "Antenatal malaria"
        await pilot.press("enter")
        assert app2.store is not None
        assert app2.store.list_conversations()[0].title == "Antenatal malaria"
        await pilot.press("enter")  # open
        await until(pilot, lambda: isinstance(app2.screen, ChatScreen))
        assert [(b.role, b.body[:8]) for b in chat.query(MessageBox)] == [
            ("user", "bleeding"), ("emergency", "Danger s"), ("assistant", "saved an")]
        await pilot.press("f2")
        await pilot.press("f8")
        assert app2.store.list_conversations()  # first press only asks
        await pilot.press("f8")
        assert app2.store.list_conversations() == []


async def test_export_writes_three_files(tmp_path):
    app = make_app(tmp_path, FakeBackend(replies=[["محلول الإماهة"]]), lang="ar")
    last_exports: list[Path] = []

    def exported(message) -> None:  # the files an export wrote (Exported, routed by the app)
        if isinstance(message, Exported):
            last_exports[:] = message.paths

    async with app.run_test(size=SIZE, message_hook=exported) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "ما علاج الجفاف؟")
        await pilot.press("f3")
        await until(pilot, lambda: len(last_exports) == 3)
    by_ext = {p.suffix: p for p in last_exports}
    assert set(by_ext) == {".md", ".json", ".html"}
    html = by_ext[".html"].read_text(encoding="utf-8")
    assert 'lang="ar" dir="rtl"' in html and "محلول الإماهة" in html
    data = json.loads(by_ext[".json"].read_text(encoding="utf-8"))
    assert [m["content"] for m in data["messages"]] == ["ما علاج الجفاف؟", "محلول الإماهة"]


async def test_copy_help_and_palette_commands(tmp_path):
    app = make_app(tmp_path, FakeBackend(replies=[["copy me"]]))
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await pilot.press("f6")
        assert "No answer yet." in notes(app)
        await ask(pilot, chat, "q")
        await pilot.press("f6")
        assert app.clipboard == "copy me"
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ChatScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Stop the answer", "Write the answer again", "Copy the last answer",
                "Export (Markdown, JSON, HTML)", "Change language"} <= set(titles)
        app.set_language("fr")  # every command in the interface language, each once, its key as help
        commands = list(app.get_system_commands(app.screen))
        titles = [c.title for c in commands]
        assert len(titles) == len(set(titles)) and all(c.help != c.title for c in commands)
        fr = Translator("fr")
        assert set(titles) == {fr(k) for k in ("key_stop", "key_regenerate", "key_copy", "key_export", "key_new",
                                               "key_reload", "key_pick", "key_history", "key_language",
                                               "key_help", "key_quit")}
        assert not {"Theme", "Quit", "Keys", "Screenshot", "Maximize"} & set(titles)


async def test_picker_warns_when_build_is_bigger_than_free_ram(tmp_path):
    be = FakeBackend()
    big = BuildChoice("big-build", tmp_path / "big", "gguf", "q4_k_m", 8 * 2**30, "en, sw",
                      10 * 2**30, 12.0)
    app = tui_app.make_app(None, store=ChatStore(tmp_path / "h.sqlite3"), backend_factory=lambda p: be,
                           choices=[big], free_memory=2 * 2**30, freeze_timings=True)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, PickerScreen)
        await pilot.press("enter")
        assert isinstance(app.screen, PickerScreen)
        assert any("only 2.0 GB" in n for n in notes(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        chat = await ready(pilot, app)
        assert chat.build_name == "big-build"


async def test_load_failure_is_shown(tmp_path):
    app = make_app(tmp_path, FakeBackend(load_error="model.gguf: sha256 differs"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any("sha256 differs" in n for n in notes(app)))
        assert app.chat is not None
        assert "Could not load the model" in str(app.chat.query_one("#status").render())


@pytest.mark.parametrize("env,expected", [({"LANG": "fr_FR.UTF-8"}, "fr"), ({"LANG": "C.UTF-8"}, "en"),
                                          ({"GLOBMED_EDGE_LANG": "sw", "LANG": "fr_FR"}, "sw")])
def test_default_language_from_environment(monkeypatch, env, expected):
    from globmed_edge.tui.cli import _default_lang

    for var in ("GLOBMED_EDGE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _default_lang() == expected


# ------------------------------------------------------------------ remembered settings (#15 item 10)

async def test_language_and_last_build_survive_a_restart_and_history_opens_from_the_picker(tmp_path):
    db = tmp_path / "history.sqlite3"
    builds = [BuildChoice(name, Path(f"/b/{name}"), "gguf", q, 2**20, "English", 2**20)
              for name, q in (("smol-q8", "q8_0"), ("smol-q4", "q4_k_m"), ("smol-q2", "q2_k"))]
    store = ChatStore(db)
    app = tui_app.make_app(None, store=store, choices=builds, free_memory=2**30, freeze_timings=True,
                           backend_factory=lambda p: FakeBackend())
    async with app.run_test(size=SIZE) as pilot:
        app.set_language("sw")
        picker = app.screen
        assert isinstance(picker, PickerScreen)
        picker.query_one("DataTable", DataTable).move_cursor(row=2)
        await pilot.press("enter")
        chat = await ready(pilot, app)
        await ask(pilot, chat, "Homa ni nini?")
        conv = chat.session.conv_id
    store.close()
    reopened = ChatStore(db)  # what a restart reads
    assert (reopened.get_setting("ui_lang"), reopened.get_setting("last_build")) == ("sw", "/b/smol-q2")
    with pytest.raises(Exception, match="unknown chat setting"):
        reopened.set_setting("theme", "dark")
    app = tui_app.make_app(None, store=reopened, choices=builds, free_memory=2**30, freeze_timings=True,
                           backend_factory=lambda p: FakeBackend())
    async with app.run_test(size=SIZE) as pilot:
        picker = app.screen
        assert isinstance(picker, PickerScreen)
        assert picker.query_one("DataTable", DataTable).cursor_row == 2  # the build used last time
        await pilot.press("f2")  # history before any model is loaded
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        app.screen.dismiss(conv)
        chat = await ready(pilot, app)
        assert app.path == Path("/b/smol-q2")  # the build that conversation was held with
        await until(pilot, lambda: any("Homa ni nini?" in str(b.render()) for b in boxes(chat, "user")))
    reopened.close()


def test_cli_opens_in_the_language_chosen_last_time(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import globmed_edge.tui.app as app_mod
    from globmed_edge.cli.main import cli

    db = tmp_path / "h.sqlite3"
    s = ChatStore(db)
    s.set_setting("ui_lang", "fr")
    s.close()
    seen = {}

    def fake_run(self):
        seen["lang"] = self.lang

    monkeypatch.delenv("GLOBMED_EDGE_LANG", raising=False)
    monkeypatch.setattr(app_mod.ChatApp, "run", fake_run)
    assert CliRunner().invoke(cli, ["chat", "--db", str(db)]).exit_code == 0 and seen["lang"] == "fr"
    assert CliRunner().invoke(cli, ["chat", "--db", str(db), "--lang", "sw"]).exit_code == 0 and seen["lang"] == "sw"
    monkeypatch.setenv("GLOBMED_EDGE_LANG", "ar")
    assert CliRunner().invoke(cli, ["chat", "--db", str(db)]).exit_code == 0 and seen["lang"] == "ar"


def test_alignment_follows_the_message_script_not_the_interface():
    from globmed_edge.tui.widgets import MessageBox

    sw, ar = Translator("sw"), Translator("ar")
    assert MessageBox("user", "ما علاج الجفاف عند الأطفال؟", "sw", sw).has_class("rtl")
    assert not MessageBox("user", "Mtoto ana homa, nifanye nini?", "ar", ar).has_class("rtl")
    assert MessageBox("assistant", "", "ar", ar).has_class("rtl")  # no letters yet: the language decides


async def test_f9_keeps_the_typed_text_and_conversation_and_each_backend_is_closed(tmp_path):
    """The backend lives in the chat screen's session: F9 (the screen goes) and quitting close it."""
    builds = [BuildChoice(name, Path(f"/b/{name}"), "gguf", "q8_0", 2**20, "English", 2**20)
              for name in ("smol-a", "smol-b")]
    opened: list[FakeBackend] = []

    def factory(path: Path) -> FakeBackend:
        opened.append(FakeBackend(path))
        return opened[-1]

    app = tui_app.make_app(None, store=ChatStore(tmp_path / "h.sqlite3"), choices=builds,
                           free_memory=2**30, freeze_timings=True, backend_factory=factory)
    seen: list[object] = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await pilot.press("enter")
        chat = await ready(pilot, app)
        await ask(pilot, chat, "first question")
        conv = chat.session.conv_id
        chat.query_one(ChatInput).insert("typed, not sent")
        await pilot.press("f9")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen) and opened[0].closed)
        assert app.chat is None
        await pilot.press("down", "enter")
        chat = await ready(pilot, app)
        assert app.path == Path("/b/smol-b") and chat.session.conv_id == conv
        assert chat.query_one(ChatInput).text == "typed, not sent"
        await until(pilot, lambda: [b.body for b in boxes(chat, "user")] == ["first question"])
        assert not opened[1].closed
    assert opened[1].closed and len(opened) == 2
    assert any(isinstance(m, PickBuild) for m in seen)  # F9 went through the app
