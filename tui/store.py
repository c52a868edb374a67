"""Chat history in a local SQLite file (WAL mode, readable only by its owner).

Answers are written as they stream: the assistant row is inserted with status ``streaming``
when generation starts, its text is checkpointed every few tokens, and it is marked
``complete`` / ``stopped`` / ``cut`` (it reached the max-new-tokens limit) / ``error`` when it
ends. A process killed mid-answer therefore
loses at most the tokens since the last checkpoint of that one answer; on the next open such
rows are marked ``interrupted`` and kept. Nothing here imports textual.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.errors import ConfigError, HistoryError

SCHEMA_VERSION = 2  # 2: the settings table (the interface language and the last build, issue #15 item 10)
DB_NAME = "chat_history.sqlite3"
# "cut" (added after schema 1 without a schema change: status is plain TEXT, not constrained) is
# an answer that reached the max-new-tokens limit. Message `lang` is the language detected in its
# text ("" when it cannot be told); the interface language is `meta["ui_lang"]` (older rows: lang).
STATUSES = ("complete", "streaming", "stopped", "cut", "error", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    lang TEXT NOT NULL,
    build TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'complete',
    lang TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation_id, id);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
#: the settings the app remembers between runs
SETTINGS = ("ui_lang", "last_build")


def default_db_path() -> Path:
    from globmed_edge.paths import data_home

    return data_home() / "chat" / DB_NAME


SQLITE_MAGIC = b"SQLite format 3\x00"


def _damaged(path: Path, what: str) -> HistoryError:
    return HistoryError(f"{path}: not a usable chat history ({what}); nothing was changed. Start a fresh "
                        "history with `globmed-edge chat --fresh-history` (this file is kept aside, renamed "
                        f"{path.name}.damaged-<time>), or give another file with --db")


def check_history(path: Path) -> None:
    """Refuse, without writing anything, a history file that is not our SQLite database:
    not a regular file, not SQLite (truncated, overwritten, foreign), corrupted, or another
    program's database. A missing or empty file is fine (a new history)."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) and path.resolve().is_file():
        st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _damaged(path, "not a regular file")
    if st.st_size == 0:
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise _damaged(path, f"cannot be read: {exc.strerror}") from None
    if head != SQLITE_MAGIC:
        raise _damaged(path, "not an SQLite database: truncated, overwritten or another kind of file")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _damaged(path, str(exc)) from None
    try:
        check = db.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise _damaged(path, f"corrupted: {check[0] if check else 'no result'}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, str(exc)) from None
    finally:
        db.close()
    ours = {"conversations", "messages"}
    foreign = tables - ours - {"sqlite_sequence", "settings"}  # settings: schema 2
    if tables and (not ours <= tables or foreign):
        raise _damaged(path, f"another program's database (tables: {', '.join(sorted(tables))})")


def set_aside(path: Path) -> Path | None:
    """Rename a damaged history (and its -wal/-shm files) out of the way; returns the new name."""
    if not os.path.lexists(path):
        return None
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if os.path.lexists(side):
            os.replace(side, aside.with_name(aside.name + suffix))
    return aside


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    role: str
    content: str
    status: str
    lang: str
    created_at: float
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    lang: str
    build: str
    created_at: float
    updated_at: float
    n_messages: int = 0


class ChatStore:
    """One SQLite file; safe to call from the UI thread and one generation thread."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if path is None:  # our own folder under the data home: owner only (exports live there too)
            with suppress(OSError):
                os.chmod(self.path.parent, 0o700)
        # Checked read-only first: a file that is not our database is never chmod-ed or written.
        check_history(self.path)
        # Create the file with owner-only permissions before SQLite opens it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a process kill (not a power cut).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise _damaged(self.path, str(exc)) from None
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        self.recover()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(f"{self.path}: history schema version {version} is newer than this "
                              f"program understands ({SCHEMA_VERSION}); upgrade globmed-edge")
        with self._tx() as db:
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                db.execute(stmt)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def recover(self) -> int:
        """Mark answers left ``streaming`` by a killed process as ``interrupted``."""
        with self._tx() as db:
            cur = db.execute("UPDATE messages SET status='interrupted' WHERE status='streaming'")
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ conversations

    def new_conversation(self, title: str, lang: str, build: str = "") -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO conversations(title, lang, build, created_at, updated_at) VALUES (?,?,?,?,?)",
                (title, lang, build, now, now))
            return int(cur.lastrowid or 0)

    def get_conversation(self, conv_id: int) -> Conversation:
        with self._lock:
            row = self._db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id=c.id) AS n "
                "FROM conversations c WHERE c.id=?", (conv_id,)).fetchone()
        if row is None:
            raise ConfigError(f"{self.path}: no conversation with id {conv_id}")
        return _conv(row)

    def list_conversations(self, query: str = "", limit: int = 200) -> list[Conversation]:
        """Newest first; `query` matches titles and message text (case-insensitive)."""
        sql = ("SELECT c.*, (SELECT COUNT(*) FROM messages m WHERE m.conversation_id=c.id) AS n "
               "FROM conversations c")
        args: list[Any] = []
        if query:
            like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            sql += (" WHERE c.title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages m WHERE "
                    "m.conversation_id=c.id AND m.content LIKE ? ESCAPE '\\')")
            args += [like, like]
        sql += " ORDER BY c.updated_at DESC, c.id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            return [_conv(r) for r in self._db.execute(sql, args).fetchall()]

    def rename(self, conv_id: int, title: str) -> None:
        title = title.strip()
        if not title:
            raise ConfigError("a conversation title cannot be empty")
        with self._tx() as db:
            if db.execute("UPDATE conversations SET title=? WHERE id=?", (title, conv_id)).rowcount == 0:
                raise ConfigError(f"{self.path}: no conversation with id {conv_id}")

    def set_language(self, conv_id: int, lang: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE conversations SET lang=? WHERE id=?", (lang, conv_id))

    def delete(self, conv_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM conversations WHERE id=?", (conv_id,))

    # ------------------------------------------------------------------ messages

    def add_message(self, conv_id: int, role: str, content: str, *, status: str = "complete",
                    lang: str = "", meta: dict[str, Any] | None = None) -> int:
        if status not in STATUSES:
            raise ConfigError(f"message status {status!r} is not one of {', '.join(STATUSES)}")
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO messages(conversation_id, role, content, status, lang, meta, created_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (conv_id, role, content, status, lang, json.dumps(meta or {}, ensure_ascii=False), now))
            db.execute("UPDATE conversations SET updated_at=? WHERE id=?", (now, conv_id))
            return int(cur.lastrowid or 0)

    def checkpoint(self, msg_id: int, content: str) -> None:
        """Save the text of an answer that is still streaming."""
        with self._tx() as db:
            db.execute("UPDATE messages SET content=? WHERE id=?", (content, msg_id))

    def finish_message(self, msg_id: int, content: str, status: str,
                       meta: dict[str, Any] | None = None, *, lang: str | None = None) -> None:
        """The final text, status and meta of an answer (and its detected language, if given)."""
        if status not in STATUSES:
            raise ConfigError(f"message status {status!r} is not one of {', '.join(STATUSES)}")
        with self._tx() as db:
            db.execute("UPDATE messages SET content=?, status=?, meta=?, lang=COALESCE(?, lang) WHERE id=?",
                       (content, status, json.dumps(meta or {}, ensure_ascii=False), lang, msg_id))

    def delete_message(self, msg_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE id=?", (msg_id,))

    def messages(self, conv_id: int) -> list[StoredMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id=? ORDER BY id", (conv_id,)).fetchall()
        return [StoredMessage(r["id"], r["conversation_id"], r["role"], r["content"], r["status"],
                              r["lang"], r["created_at"], json.loads(r["meta"] or "{}")) for r in rows]


    # ------------------------------------------------------------------ settings

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, key: str, value: str) -> None:
        if key not in SETTINGS:
            raise ConfigError(f"unknown chat setting {key!r} (known: {', '.join(SETTINGS)})")
        with self._tx() as db:
            db.execute("INSERT INTO settings(key, value) VALUES(?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))


def _conv(row: sqlite3.Row) -> Conversation:
    return Conversation(row["id"], row["title"], row["lang"], row["build"], row["created_at"],
                        row["updated_at"], int(row["n"]))
