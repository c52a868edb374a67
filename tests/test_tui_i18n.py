"""Interface strings, system prompts, red-flag detection, and no network code in tui/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from globmed_edge import langpacks
from globmed_edge.errors import ConfigError
from globmed_edge.languages import lookup
from globmed_edge.tui import i18n
from globmed_edge.tui.safety import CATEGORIES, RED_FLAGS, emergency_reminder, find_red_flags

TUI = Path(i18n.__file__).resolve().parent
PACKS = langpacks.BUILTIN_DIR  # one file per language; the interface strings are its "interface"
REQUIRED = ["en", "zh", "ja", "ko", "fr", "es", "de", "pt", "ru", "ar", "hi", "it",
            "sw", "yo", "ha", "am", "zu"]


def test_required_locales_exist():
    assert set(REQUIRED) <= set(i18n.available())
    assert set(i18n.INTERFACE_LANGUAGES) == set(i18n.available())


@pytest.mark.parametrize("code", REQUIRED)
def test_locale_has_every_key_with_matching_placeholders(code):
    en = i18n.load_locale("en")
    loc = json.loads((PACKS / f"{code}.json").read_text(encoding="utf-8"))["interface"]["strings"]
    assert set(loc) == set(en), f"{code}: missing {set(en) - set(loc)}, extra {set(loc) - set(en)}"
    for key, text in loc.items():
        assert text.strip(), f"{code}.{key} is empty"
        assert i18n.placeholders(text) == i18n.placeholders(en[key]), f"{code}.{key}"
    if code != "en":  # actually translated, not copied
        same = [k for k in loc if loc[k] == en[k] and not k.startswith("col_")]
        assert len(same) <= 3, f"{code}: untranslated {same}"


def test_fallback_to_english_and_unknown_language(monkeypatch):
    tr = i18n.Translator("sw")
    monkeypatch.setitem(tr._strings, "copied", "")
    assert tr("copied") == "Answer copied."
    assert i18n.Translator("xx").lang == "en"
    assert i18n.Translator("pt-BR").lang == "pt"
    with pytest.raises(ConfigError):
        tr("no_such_key")
    # a broken translation falls back to English instead of crashing
    monkeypatch.setitem(tr._strings, "exported", "Imehifadhiwa: {pth}")
    assert tr("exported", path="/x") == "Saved: /x"


@pytest.mark.parametrize("code", REQUIRED)
def test_system_prompt_names_reply_language(code):
    prompt = i18n.system_prompt(code)
    assert len(prompt) < 220, "keep the system prompt short (prefill is slow on weak CPUs)"
    names = {"en": "English", "fr": "français", "es": "español", "de": "Deutsch", "pt": "português",
             "it": "italiano", "ru": "по-русски", "zh": "中文", "ja": "日本語", "ko": "한국어",
             "ar": "بالعربية", "hi": "हिंदी", "sw": "Kiswahili", "yo": "Yorùbá", "ha": "Hausa",
             "am": "በአማርኛ", "zu": "ngesiZulu"}
    assert names[code] in prompt


def test_rtl_flag():
    assert i18n.Translator("ar").rtl and not i18n.Translator("am").rtl


@pytest.mark.parametrize("text,category", [
    ("Patient has chest pain since morning", "chest_pain"),
    ("Mtoto ana degedege na homa", "seizure"),
    ("المريض لديه ألم في الصدر", "chest_pain"),
    ("病人呼吸困难", "breathing"),
    ("गर्भावस्था में रक्तस्राव हो रहा है", "pregnancy_bleeding"),
    ("ታካሚው የመተንፈስ ችግር አለበት", "breathing"),
    ("Fever and a STIFF NECK", "stiff_neck_fever"),
    ("Elle a une douleur thoracique", "chest_pain"),
    ("I want to kill myself", "suicidal"),
])
def test_red_flags_found(text, category):
    assert category in [f.category for f in find_red_flags(text)]


def test_no_red_flag_and_reminder_language():
    assert find_red_flags("What is the dose of paracetamol for an adult with a mild headache?") == []
    assert emergency_reminder("mild cough for two days", "en") is None
    msg = emergency_reminder("child has convulsions", "sw")
    assert msg is not None and "dharura" in msg and "convulsion" in msg


def test_red_flag_table_covers_every_category_and_interface_language():
    for code in REQUIRED:
        assert set(RED_FLAGS[code]) == set(CATEGORIES), code
        assert all(RED_FLAGS[code][c] for c in CATEGORIES), code


def test_language_names():
    assert i18n.language_name("sw") == "Kiswahili (sw)"
    assert lookup("ar").is_rtl


NETWORK_MODULES = {"socket", "ssl", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp",
                   "websocket", "websockets", "ftplib", "smtplib", "telnetlib", "xmlrpc", "asyncssh"}


def test_no_network_code_in_tui():
    offenders = []
    for path in sorted(TUI.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            line = 0
            if isinstance(node, ast.Import):
                names, line = [a.name for a in node.names], node.lineno
            elif isinstance(node, ast.ImportFrom) and node.module:
                names, line = [node.module], node.lineno
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("__import__", "import_module"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                line = node.lineno
            offenders += [f"{path.name}:{line} {n}" for n in names
                          if n.split(".")[0] in NETWORK_MODULES]
    assert offenders == []
    assert len(list(TUI.rglob("*.py"))) >= 5
