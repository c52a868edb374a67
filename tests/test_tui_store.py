"""Chat history (SQLite), exports, and a real SIGKILL while an answer is streaming."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_tui_fakes import DEFAULT_TOKENS, FakeBackend

from globmed_edge.errors import BackendError, ConfigError
from globmed_edge.tui.export import export_conversation, to_html
from globmed_edge.tui.session import ChatSession
from globmed_edge.tui.store import SCHEMA_VERSION, ChatStore

HERE = Path(__file__).resolve().parent


@pytest.fixture
def store(tmp_path):
    s = ChatStore(tmp_path / "chat" / "history.sqlite3")
    yield s
    s.close()


def test_db_is_wal_owner_only_and_versioned(store):
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode == 0o600
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "h.sqlite3"
    ChatStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="newer"):
        ChatStore(path)


def test_conversations_search_rename_delete(store):
    a = store.new_conversation("Malaria dosing", "en", "b1")
    store.add_message(a, "user", "Artemether dose for a child of 12 kg?")
    b = store.new_conversation("Kuhara", "sw", "b1")
    store.add_message(b, "user", "Mtoto ana kuhara na homa")
    assert [c.id for c in store.list_conversations()] == [b, a]
    assert [c.id for c in store.list_conversations("artemether")] == [a]
    assert [c.id for c in store.list_conversations("KUHARA")] == [b]
    assert store.list_conversations("100%") == []  # LIKE wildcards are escaped
    store.rename(a, "  Paediatric malaria ")
    assert store.get_conversation(a).title == "Paediatric malaria"
    with pytest.raises(ConfigError):
        store.rename(a, "   ")
    store.delete(a)
    assert [c.id for c in store.list_conversations()] == [b]
    assert store.messages(a) == []


def test_session_saves_answers_and_stats(store):
    be = FakeBackend(replies=[["Hello", " there"], ["Second"]])
    be.load()
    s = ChatSession(be, lang="fr", store=store, build="fake")
    s.add_question("Bonjour ?")
    assert "".join(d for d, _ in s.stream_answer()) == "Hello there"
    s.add_question("Et ensuite ?")
    list(s.stream_answer())
    msgs = store.messages(s.conv_id)
    assert [(m.role, m.content, m.status) for m in msgs] == [
        ("user", "Bonjour ?", "complete"), ("assistant", "Hello there", "complete"),
        ("user", "Et ensuite ?", "complete"), ("assistant", "Second", "complete")]
    assert msgs[1].meta["tokens"] == 2 and msgs[1].meta["ttft_s"] is not None
    # The second request carries the French system prompt and the first exchange.
    req = be.requests[1]
    assert req.messages[0].role == "system" and "français" in req.messages[0].content
    assert [m.content for m in req.messages[1:]] == ["Bonjour ?", "Hello there", "Et ensuite ?"]
    # Reopening the conversation restores it.
    again = ChatSession(be, store=store, conv_id=s.conv_id)
    assert again.lang == "fr" and [t.content for t in again.turns] == [m.content for m in msgs]


def test_error_mid_stream_keeps_partial_and_is_skipped_next_time(store):
    be = FakeBackend(replies=[["a", "b", "c"], ["ok"]], fail_at=2)
    be.load()
    s = ChatSession(be, store=store)
    s.add_question("q1")
    got = []
    with pytest.raises(BackendError):
        for d, _ in s.stream_answer():
            got.append(d)
    assert got == ["a", "b"]
    ans = store.messages(s.conv_id)[-1]
    assert (ans.content, ans.status) == ("ab", "error") and "injected" in ans.meta["error"]
    be.fail_at = None
    s.add_question("q2")
    list(s.stream_answer())
    # the failed exchange is not sent back to the model
    assert [m.content for m in be.requests[-1].messages[1:]] == ["q2"]


def test_cancel_marks_stopped(store):
    import threading

    be = FakeBackend()
    be.load()
    s = ChatSession(be, store=store)
    s.add_question("q")
    cancel = threading.Event()
    for i, _ in enumerate(s.stream_answer(cancel)):
        if i == 2:
            cancel.set()
    ans = store.messages(s.conv_id)[-1]
    assert ans.status == "stopped" and ans.content == "".join(DEFAULT_TOKENS[:3])


def test_exports_md_json_html(store, tmp_path):
    cid = store.new_conversation("سؤال <b>&", "ar", "smol")
    store.add_message(cid, "user", "ما علاج الجفاف؟ <script>x</script>", lang="ar")
    store.add_message(cid, "assistant", "محلول الإماهة الفموية", lang="ar")
    store.add_message(cid, "user", "And in English?", lang="en")
    paths = {fmt: export_conversation(store, cid, fmt, tmp_path / "out") for fmt in ("md", "json", "html")}
    assert all(p.is_file() for p in paths.values())
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["schema_version"] == 2 and data["messages"][1]["content"] == "محلول الإماهة الفموية"
    md = paths["md"].read_text(encoding="utf-8")
    assert "# سؤال &lt;b&gt;&amp;" in md and "محلول الإماهة الفموية" in md  # raw HTML escaped (issue #16)
    html = paths["html"].read_text(encoding="utf-8")
    assert '<html lang="ar" dir="rtl">' in html
    assert '<section class="msg user" lang="ar" dir="rtl">' in html
    assert '<section class="msg user" lang="en" dir="auto">' in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "سؤال &lt;b&gt;&amp;" in html
    assert not list((tmp_path / "out").glob(".*tmp"))  # atomic: no temp files left
    with pytest.raises(ConfigError):
        export_conversation(store, cid, "pdf", tmp_path)


def test_html_of_ltr_conversation(store):
    cid = store.new_conversation("t", "en")
    store.add_message(cid, "user", "שלום", lang="he")
    html = to_html(store.get_conversation(cid), store.messages(cid))
    assert '<html lang="en" dir="ltr">' in html and 'lang="he" dir="rtl"' in html


CHILD = """
import sys, threading
sys.path.insert(0, {tests!r})
from test_tui_fakes import FakeBackend
from globmed_edge.tui.session import ChatSession
from globmed_edge.tui.store import ChatStore
store = ChatStore({db!r})
be = FakeBackend(replies=[["done ", "answer"], ["tok" + str(i) + " " for i in range(10000)]], delay=0.01)
be.load()
s = ChatSession(be, store=store)
s.add_question("first")
list(s.stream_answer())
s.add_question("second")
for i, _ in enumerate(s.stream_answer()):
    if i == 60:
        print("STREAMING", flush=True)
"""


def test_sigkill_while_streaming_loses_at_most_that_answer(tmp_path):
    db = tmp_path / "kill.sqlite3"
    code = textwrap.dedent(CHILD.format(tests=str(HERE), db=str(db)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "STREAMING"
        time.sleep(1.2)  # past at least one more checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    store = ChatStore(db)  # opening recovers rows left 'streaming'
    (conv,) = store.list_conversations()
    msgs = store.messages(conv.id)
    assert [(m.role, m.status) for m in msgs] == [
        ("user", "complete"), ("assistant", "complete"), ("user", "complete"),
        ("assistant", "interrupted")]
    assert msgs[1].content == "done answer"
    partial = msgs[3].content
    expected = "".join(f"tok{i} " for i in range(10000))
    assert len(partial) > len("".join(f"tok{i} " for i in range(60))) and expected.startswith(partial)
    store.close()


def test_exports_say_unfinished_answers_in_the_conversation_language(store, tmp_path):
    cid = store.new_conversation("t", "es")
    store.add_message(cid, "user", "¿Signos de deshidratación?", lang="es")
    store.add_message(cid, "assistant", "Sed y", status="stopped", lang="es")
    md = export_conversation(store, cid, "md", tmp_path).read_text(encoding="utf-8")
    html = export_conversation(store, cid, "html", tmp_path).read_text(encoding="utf-8")
    assert "*Detenido.*" in md and '<div class="status">Detenido.</div>' in html
    assert "(stopped)" not in md + html


def test_cut_answer_is_marked_in_history_and_all_three_exports(store, tmp_path):
    be = FakeBackend(replies=[["Donne ", "du ", "SRO ", "et ", "encore ", "du ", "SRO "], ["De ", "rien."]])
    be.load()
    s = ChatSession(be, store=store, lang="fr", max_new_tokens=4)
    s.add_question("Que faire pour la diarrhée ?")
    list(s.stream_answer())
    ans = store.messages(s.conv_id)[-1]
    assert ans.status == "cut" and ans.content == "Donne du SRO et "
    assert s.conv_id is not None
    md, js, html = (export_conversation(store, s.conv_id, fmt, tmp_path).read_text(encoding="utf-8")
                    for fmt in ("md", "json", "html"))
    cut = "Coupée : la réponse a atteint la limite de longueur."
    assert f"*{cut}*" in md and f'<div class="status">{cut}</div>' in html
    (answer,) = [m for m in json.loads(js)["messages"] if m["role"] == "assistant"]
    assert answer["status"] == "cut" and answer["status_note"] == cut
    # An answer that ended by itself is not marked.
    s.add_question("Merci")
    list(s.stream_answer())
    assert store.messages(s.conv_id)[-1].status == "complete"


def test_every_export_keeps_the_reminder_shown_and_the_notice(store, tmp_path):
    from globmed_edge.tui.safety import emergency_reminder

    be = FakeBackend()
    be.load()
    s = ChatSession(be, store=store, lang="en")
    question = "Mon bébé a des yeux enfoncés et une convulsion, que faire ?"
    shown = emergency_reminder(question, "en")  # what the chat screen shows after the question
    assert shown
    s.add_question(question)
    list(s.stream_answer())
    s.add_question("And the dose of ORS?")
    list(s.stream_answer())
    assert s.conv_id is not None
    paths = {fmt: export_conversation(store, s.conv_id, fmt, tmp_path) for fmt in ("md", "json", "html")}
    texts = {fmt: p.read_text(encoding="utf-8") for fmt, p in paths.items()}
    import html as html_mod

    assert texts["md"].count("⚠") == 1 and html_mod.escape(shown, quote=False) in texts["md"]
    assert texts["html"].count("⚠") == 1 and html_mod.escape(shown) in texts["html"]
    data = json.loads(texts["json"])
    assert [m["reminder"] for m in data["messages"]] == [shown, None, None, None]
    notice = "This assistant supports, and does not replace, clinical judgement. Check every answer."
    assert all(notice in t for t in texts.values()) and data["conversation"]["safety_notice"] == notice
    # The French question typed with the English interface is French, not "en".
    first = data["messages"][0]
    assert (first["lang"], first["script"], first["ui_lang"]) == ("fr", "Latn", "en")
    assert store.messages(s.conv_id)[0].lang == "fr"
    assert 'section class="msg user" lang="fr"' in texts["html"]
    for p in paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o640  # owner and group read


def test_old_rows_keep_their_lang_unless_the_text_tells(store, tmp_path):
    # A schema-1 row stored the interface language; its text decides in an export.
    cid = store.new_conversation("t", "en")
    store.add_message(cid, "user", "Mon enfant a de la fièvre depuis deux jours, que faire ?", lang="en")
    store.add_message(cid, "assistant", "ok", lang="en")
    data = json.loads(export_conversation(store, cid, "json", tmp_path).read_text(encoding="utf-8"))
    assert [(m["lang"], m["ui_lang"]) for m in data["messages"]] == [("fr", "en"), ("en", "en")]


def test_titles_are_not_cut_mid_word_and_export_folder_is_chosen(store, tmp_path):
    from globmed_edge.tui.export import slug
    from globmed_edge.tui.session import short_title

    text = "Mon enfant de deux ans a une forte fièvre depuis trois jours et ne mange plus"
    title = short_title(text)
    assert title == "Mon enfant de deux ans a une forte fièvre…" and len(title) <= 48
    assert short_title("short question") == "short question"
    assert slug(text) == "mon-enfant-de-deux-ans-a-une-forte"
    assert len(slug("x" * 60)) == 40
    be = FakeBackend()
    be.load()
    s = ChatSession(be, store=store)
    s.add_question(text)
    list(s.stream_answer())
    usb = tmp_path / "usb" / "exports"  # a folder the user chose; made when missing
    assert s.conv_id is not None
    path = export_conversation(store, s.conv_id, "md", usb)
    assert path.parent == usb and path.name.endswith("-mon-enfant-de-deux-ans-a-une-forte.md")
    assert "# Mon enfant de deux ans a une forte fièvre…" in path.read_text(encoding="utf-8")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        export_conversation(store, s.conv_id, "md", tmp_path / "file")
