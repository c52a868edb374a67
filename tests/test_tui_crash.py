"""The chat app survives its model's runtime dying: a real SIGSEGV in the runtime's child process
(a scripted backend served through IsolatedBackend), then F8 reloads and the chat goes on."""

from __future__ import annotations

from pathlib import Path

from test_isolated_backend import TARGET, WORDS
from test_tui_app import SIZE, ask, boxes, make_app, notes, ready

from globmed_edge.backends.isolated import IsolatedBackend
from globmed_edge.tui.store import ChatStore
from globmed_edge.tui.widgets import ChatInput


def isolated_factory(opened: list[IsolatedBackend]):
    def factory(path: Path) -> IsolatedBackend:
        be = IsolatedBackend(path, "scripted", target=TARGET)
        opened.append(be)
        return be
    return factory


async def test_a_runtime_crash_is_shown_and_f8_reloads(tmp_path):
    store = ChatStore(tmp_path / "history.sqlite3")
    opened: list[IsolatedBackend] = []
    app = make_app(tmp_path, None, store=store, backend_factory=isolated_factory(opened))
    async with app.run_test(size=SIZE) as pilot:
        chat = await ready(pilot, app)
        await ask(pilot, chat, "fever")
        assert boxes(chat, "assistant")[-1].status == "complete"
        await ask(pilot, chat, "segv")  # the runtime's process dies with SIGSEGV after two tokens
        answer = boxes(chat, "assistant")[-1]
        assert answer.status == "error"
        assert any("The model stopped working (SIGSEGV)" in n and "F8" in n for n in notes(app))
        assert chat.backend is None and not opened[0].alive
        # the conversation is intact on screen and in the store; what the user types next is kept
        assert chat.session.conv_id is not None
        stored = store.messages(chat.session.conv_id)
        assert [(m.role, m.status) for m in stored] == [
            ("user", "complete"), ("assistant", "complete"), ("user", "complete"), ("assistant", "error")]
        assert stored[-1].content == "".join(WORDS[:2])
        chat.query_one(ChatInput).insert("still here")
        await pilot.press("enter")
        assert chat.query_one(ChatInput).text == "still here"
        await pilot.press("f8")
        await ready(pilot, app)
        assert len(opened) == 2 and opened[1].alive and opened[1].pid != opened[0].pid
        chat.query_one(ChatInput).clear()
        await ask(pilot, chat, "again")
        assert boxes(chat, "assistant")[-1].status == "complete"
        assert boxes(chat, "assistant")[-1].body == "".join(WORDS)


def test_chat_threads_option_is_bounded_and_reaches_the_backend(monkeypatch):
    from click.testing import CliRunner

    from globmed_edge.cli.main import cli
    from globmed_edge.tui import loader

    for bad in ("0", "9999", "many"):
        r = CliRunner().invoke(cli, ["chat", "--threads", bad, "--prompt", "hi"])
        assert r.exit_code == 2 and "--threads" in r.output, r.output
    seen: list[object] = []
    import globmed_edge.backends as backends

    monkeypatch.setattr(backends, "open_backend", lambda path, **kw: seen.append(kw))
    monkeypatch.setattr(backends, "detect_format", lambda path: "gguf")
    monkeypatch.setattr("globmed_edge.trust.check_model", lambda path: None)
    loader.threads_factory(1)(Path("b"))
    loader.default_factory(Path("b"))
    assert seen == [{"isolate": "native", "threads": 1}, {"isolate": "native", "threads": "auto"}]
