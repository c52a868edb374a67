"""Export one conversation to Markdown, JSON or HTML, written atomically.

Every format keeps what the screen showed for safety: the notice under the title, the "AI
answer" marker of each answer, the danger-sign reminder after each question that has red-flag
terms (derived from the question, as on screen), and an unfinished answer's status ("Stopped.",
"Cut off: ..."). Each message carries the language detected in its text (tui/textlang.py; the
interface language is kept apart as `ui_lang` in JSON). Files are readable by their owner and
group (0640): they are made to be carried (a USB stick) and shared with colleagues.

HTML is the format that always shows right-to-left text correctly: every message carries its
own `lang` and `dir` (`rtl` for Arabic/Hebrew/Persian/Urdu, `auto` otherwise, so a browser
applies the Unicode bidi algorithm per paragraph); everything is escaped.
"""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_write_text
from globmed_edge.errors import ConfigError
from globmed_edge.textsafe import clean_line, clean_text
from globmed_edge.tui.i18n import Translator
from globmed_edge.tui.safety import emergency_reminder
from globmed_edge.tui.store import ChatStore, Conversation, StoredMessage
from globmed_edge.tui.textlang import detect_language, detect_script

FORMATS = ("md", "json", "html")
# 2: messages' `lang` is the language detected in the text (null when it cannot be told), with
# `script`, `ui_lang` and `reminder`; the conversation has `safety_notice` and `answer_marker`.
EXPORT_SCHEMA_VERSION = 2
EXPORT_MODE = 0o640  # owner and group read (the history itself stays 0600)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _text_lang(msg: StoredMessage) -> str:
    """The language of the message's text, "" when it cannot be told. Rows written before the
    detection (no `ui_lang` in meta) stored the interface language: their text is looked at."""
    if "ui_lang" in msg.meta:
        return msg.lang
    return detect_language(msg.content) or msg.lang


def _msg_lang(conv: Conversation, msg: StoredMessage) -> str:
    return _text_lang(msg) or conv.lang or "en"


def _reminder(conv: Conversation, msg: StoredMessage) -> str | None:
    """The danger-sign reminder the screen showed after this question (None for none)."""
    return emergency_reminder(msg.content, conv.lang) if msg.role == "user" else None


def to_json(conv: Conversation, messages: list[StoredMessage]) -> str:
    tr = Translator(conv.lang)
    data: dict[str, Any] = {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "conversation": {"id": conv.id, "title": conv.title, "lang": conv.lang, "build": conv.build,
                         "created_at": conv.created_at, "updated_at": conv.updated_at,
                         "safety_notice": tr("safety_notice"), "answer_marker": tr("answer_marker")},
        "messages": [{"role": m.role, "content": m.content, "status": m.status,
                      "status_note": None if m.status == "complete" else status_note(tr, m.status),
                      "lang": _text_lang(m) or None,
                      "script": m.meta.get("script") or detect_script(m.content) or None,
                      "ui_lang": m.meta.get("ui_lang") or m.lang or conv.lang,
                      "reminder": _reminder(conv, m),
                      "created_at": m.created_at, "meta": m.meta}
                     for m in messages],
    }
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def _md(text: str, *, line: bool = False) -> str:
    """Stored text for Markdown: no control characters (a viewer in a terminal would run ESC
    sequences) and no raw HTML (Markdown renderers pass `<script>` through); `&`, `<`, `>` become
    entities, which every renderer shows as the characters."""
    text = clean_line(text) if line else clean_text(text)
    return html.escape(text, quote=False)


def to_markdown(conv: Conversation, messages: list[StoredMessage]) -> str:
    tr = Translator(conv.lang)
    build = _md(conv.build or "-", line=True).replace("`", "'")
    lines = [f"# {_md(conv.title, line=True)}", "", f"> {tr('safety_notice')}", "",
             f"- {tr('col_name')}: `{build}`", f"- {tr('language_title')}: {_md(conv.lang, line=True)}",
             f"- {_when(conv.created_at)}", ""]
    for m in messages:
        if m.role == "system":
            continue
        who = tr("you") if m.role == "user" else tr("assistant")
        lines.append(f"## {who}")
        lines.append("")
        if m.role == "assistant":
            lines += [f"*{tr('answer_marker')}*", ""]
        lines.append(_md(m.content.rstrip()) or "…")
        if m.status not in ("complete",):
            lines += ["", f"*{status_note(tr, m.status)}*"]
        reminder = _reminder(conv, m)
        if reminder:
            lines += ["", f"> **⚠ {_md(reminder, line=True)}**"]
        lines.append("")
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,'Noto Sans','Noto Sans Ethiopic','Noto Naskh Arabic',sans-serif;
max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}
.notice{background:#fff4ce;border:1px solid #e0b400;padding:.6rem .8rem;border-radius:6px}
.msg{margin:1rem 0;padding:.6rem .8rem;border-radius:6px;white-space:pre-wrap}
.user{background:#eef3fb}.assistant{background:#f3f7ee}
.who{font-weight:600;margin-bottom:.3rem;white-space:normal}
.marker{font-size:.85em;color:#6b4e00;white-space:normal}
.status{font-size:.85em;color:#a00}
.emergency{background:#fde8e8;border:1px solid #c00;padding:.6rem .8rem;border-radius:6px;font-weight:600}"""


def to_html(conv: Conversation, messages: list[StoredMessage]) -> str:
    from globmed_edge.languages import lookup

    tr = Translator(conv.lang)
    e = html.escape
    page_dir = "rtl" if lookup(conv.lang).is_rtl else "ltr"
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{e(conv.lang)}" dir="{page_dir}">',
        '<head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(conv.title)}</title><style>{_CSS}</style></head>",
        "<body>",
        f'<h1 dir="auto">{e(conv.title)}</h1>',
        f'<p class="notice" dir="auto">⚕ {e(tr("safety_notice"))}</p>',
        f'<p dir="auto">{e(tr("col_name"))}: <bdi>{e(conv.build or "-")}</bdi> · {e(_when(conv.created_at))}</p>',
    ]
    for m in messages:
        if m.role == "system":
            continue
        lang = _msg_lang(conv, m)
        # The message language decides `lang`; `dir` is rtl for RTL languages and auto otherwise
        # (a question typed in Arabic inside an English conversation still renders correctly).
        direction = "rtl" if lookup(lang, m.content).is_rtl else "auto"
        who = tr("you") if m.role == "user" else tr("assistant")
        out.append(f'<section class="msg {e(m.role)}" lang="{e(lang)}" dir="{direction}">')
        out.append(f'<div class="who" dir="auto">{e(who)}</div>')
        if m.role == "assistant":
            out.append(f'<div class="marker" dir="auto">{e(tr("answer_marker"))}</div>')
        out.append(f"<div>{e(m.content)}</div>")
        if m.status != "complete":
            out.append(f'<div class="status">{e(status_note(tr, m.status))}</div>')
        out.append("</section>")
        reminder = _reminder(conv, m)
        if reminder:
            out.append(f'<p class="emergency" role="alert" dir="auto">⚠ {e(reminder)}</p>')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


RENDERERS = {"md": to_markdown, "json": to_json, "html": to_html}


def slug(title: str, limit: int = 40) -> str:
    """A file-name part from a title, cut at a word boundary (a word longer than `limit` is cut)."""
    s = re.sub(r"[^\w\-]+", "-", title, flags=re.UNICODE).strip("-_").lower()
    if len(s) > limit:
        cut = s[: limit + 1].rfind("-")
        s = (s[:cut] if cut > 0 else s[:limit]).strip("-_")
    return s or "conversation"


def export_conversation(store: ChatStore, conv_id: int, fmt: str, out_dir: Path | None = None,
                        path: Path | None = None) -> Path:
    """Write one conversation as `fmt` (md/json/html); returns the file written."""
    if fmt not in RENDERERS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    conv = store.get_conversation(conv_id)
    messages = store.messages(conv_id)
    if path is None:
        base = out_dir if out_dir is not None else default_export_dir()
        if not base.exists():
            # The default folder sits in the owner-only chat folder; a chosen one (a USB stick,
            # a shared folder) gets the umask's permissions like any folder the user makes.
            base.mkdir(parents=True, mode=0o700 if out_dir is None else 0o777)
        elif not base.is_dir():
            raise ConfigError(f"{base}: the export folder is not a folder")
        path = base / f"{conv.id:04d}-{slug(conv.title)}.{fmt}"
    try:
        atomic_write_text(path, RENDERERS[fmt](conv, messages), mode=EXPORT_MODE)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the export ({exc.strerror or exc})") from None
    return path


def export_all(store: ChatStore, conv_id: int, out_dir: Path | None = None) -> list[Path]:
    """F3 (chat screen or history): the conversation in every format at once; the files written."""
    return [export_conversation(store, conv_id, fmt, out_dir) for fmt in FORMATS]


def default_export_dir() -> Path:
    from globmed_edge.paths import data_home

    return data_home() / "chat" / "exports"


def status_note(tr: Translator, status: str) -> str:
    """An unfinished answer's status in the conversation's language ("Stopped.", ...)."""
    return tr(status) if status in ("stopped", "cut", "interrupted") else f"({status})"
