"""Language packs: the schema every packaged pack keeps, the probe set unchanged, and a language
the code has never seen added as one file ($GLOBMED_EDGE_LANGPACKS names its folder)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from test_tui_app import ask, make_app, ready, until
from test_tui_fakes import FakeBackend
from textual.widgets import OptionList

from globmed_edge import langpacks
from globmed_edge.bench.generate import generate_answers
from globmed_edge.data.schema import MCQItem
from globmed_edge.errors import ConfigError
from globmed_edge.languages import LANGUAGES, lookup
from globmed_edge.mcq.extract import extract_answer
from globmed_edge.quantize import parity
from globmed_edge.tui import i18n
from globmed_edge.tui.safety import RED_FLAGS, emergency_reminder, find_red_flags
from globmed_edge.tui.screen_modals import LanguageScreen

BUILTIN = sorted(langpacks.BUILTIN_DIR.glob("*.json"))
OPTIONS = {"A": "Fibronectin", "B": "Collagen fibres", "C": "Integrins", "D": "Proteoglycans"}
MENU = ("en", "zh", "ja", "ko", "fr", "es", "de", "pt", "ru", "ar", "hi", "it", "sw", "yo", "ha", "am", "zu")

# The parity probe set as it was when the probes lived in quantize/parity.py: parity results are
# compared across builds, so these texts and their order must never change.
PROBES_2026 = (
    ("en", "The child has had a high fever and diarrhoea for two days; check for signs of dehydration."),
    ("fr", "La patiente enceinte se plaint de maux de tête sévères et d'une vision trouble."),
    ("es", "El paciente diabético tiene una herida en el pie que no cicatriza desde hace un mes."),
    ("sw", "Mtoto ana homa kali na anakohoa usiku; mpime malaria kabla ya kumpa dawa."),
    ("ar", "يعاني الطفل من سعال وضيق في التنفس منذ ثلاثة أيام، ويجب قياس نسبة الأكسجين في الدم."),
    ("hi", "मरीज़ को तेज़ बुखार और सिरदर्द है; पहले मलेरिया की जाँच करवाएँ।"),
    ("am", "ልጁ ለሁለት ቀናት ከፍተኛ ትኩሳት እና ተቅማጥ አለበት።"),
    ("zh", "病人咳嗽两周，夜间盗汗，体重下降，应检查是否患有结核病。"),
    ("ru", "У пациента боль в груди, отдающая в левую руку, и одышка."),
    ("ja", "患者は三日前から高熱と咳が続いています。"),
)

# Lingala: in no packaged pack. Test data only: the words are not a reviewed clinical list.
LINGALA: dict[str, Any] = {
    "schema_version": 1, "code": "ln", "name": "Lingala", "native": "Lingála", "script": "Latn",
    "direction": "ltr", "resource": "low",
    "answer_markers": ["eyano(?:\\s+ezali)?"],
    "parity_probe": {"text": "Mwana azali na fievre makasi mpe pulupulu banda mikolo mibale."},
    "red_flags": {"terms": {
        "chest_pain": ["pasi na ntolo"], "breathing": ["kopema mpasi"], "unconscious": ["alembi makasi"],
        "seizure": ["kokakatana"], "bleeding": ["makila ebele"], "dehydration": ["mai esili na nzoto"],
        "stiff_neck_fever": ["kingo ekangami"], "pregnancy_bleeding": ["makila na zemi"],
        "suicidal": ["komiboma"], "stroke": ["monoko ekoseki"]}},
    "interface": {
        "system_prompt": "Ozali mosungi ya bokolongono mpo na basali ya bokolongono. Yanola na Lingála, "
                         "mokuse mpe polele.",
        "strings": {"safety_notice": "Mosungi oyo asalisaka kaka; tala eyano nyonso.",
                    "language_title": "Lokota", "stats": "{tps} tokens/s · liloba ya liboso nsima ya {ttft} s"}},
}


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(langpacks.ENV, raising=False)


@pytest.fixture
def lingala(tmp_path, monkeypatch) -> Path:
    """A folder holding one new pack, named by $GLOBMED_EDGE_LANGPACKS: all it takes to add a language."""
    folder = tmp_path / "packs"
    folder.mkdir()
    (folder / "ln.json").write_text(json.dumps(LINGALA, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setenv(langpacks.ENV, str(folder))
    return folder


# --- the schema ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_every_packaged_pack_keeps_the_schema(path):
    pack = langpacks.read_pack(path)  # required keys, types, no unknown keys, code = file name
    en = langpacks.read_pack(langpacks.BUILTIN_DIR / "en.json").interface
    assert en is not None and pack.code == path.stem
    assert unicodedata.normalize("NFC", pack.native) == pack.native
    if pack.interface is not None:
        strings = pack.interface.strings
        assert set(strings) == set(en.strings), f"missing {set(en.strings) - set(strings)}"
        for key, text in strings.items():
            assert i18n.placeholders(text) == i18n.placeholders(en.strings[key]), key
        assert len(pack.interface.system_prompt) < 220 and not i18n.placeholders(pack.interface.system_prompt)
    if pack.red_flags is not None:
        for category, terms in pack.red_flags.terms.items():
            assert len(set(terms)) == len(terms), f"{category}: repeated term"
            assert all(t == t.strip() and t.lower() == t for t in terms), category


def test_packs_are_the_whole_table_and_orders_do_not_clash(clean_env):
    packs = langpacks.load().packs
    assert set(packs) == {p.stem for p in BUILTIN} == set(LANGUAGES) and len(packs) >= 44
    for section in ("interface", "red_flags", "parity_probe"):
        orders = [getattr(p, section).order for p in packs.values() if getattr(p, section) is not None]
        assert None not in orders and len(set(orders)) == len(orders), section
    assert langpacks.load().interface_languages == MENU == tuple(i18n.INTERFACE_LANGUAGES)
    assert set(RED_FLAGS) == set(MENU) and list(RED_FLAGS)[:2] == ["en", "fr"]


def test_probe_texts_are_byte_identical_to_those_of_earlier_builds(clean_env):
    assert tuple(parity.PROBES) == PROBES_2026
    assert [t.encode() for _, t in parity.PROBES] == [t.encode() for _, t in PROBES_2026]


@pytest.mark.parametrize(("reply", "want"), [
    ("Answer: B", "B"), ("The answer is (B)", "B"), ("Réponse : B", "B"), ("答案：B", "B"),
    ("答案是B", "B"), ("正解はB", "B"), ("答えはC", "C"), ("الإجابة: ب", "B"), ("उत्तर: B", "B"),
    ("Ответ: B", "B"), ("Jibu: B", "B"), ("תשובה: B", "B"), ("Respuesta correcta: D", "D"),
    ("Antwort ist A", "A"), ("정답은 C", "C"), ("መልስ: A", "A"), ("Impendulo: D", "D"),
    ("Karabo: C", "C"), ("Idahun: A", "A"), ("Amsa: B", "B"), ("选择C", "C"), ("Eyano: C", None),
])
def test_answer_markers_from_every_pack(clean_env, reply, want):
    assert extract_answer(reply, OPTIONS) == want


def _write(folder: Path, code: str, **changes) -> Path:
    data = json.loads(json.dumps(LINGALA)) | {"code": code}
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            data[section][sub] = value
        elif value is None:
            del data[section]
        else:
            data[section] = value
    path = folder / f"{code}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(("code", "changes", "message"), [
    ("xq", {"colour": "red"}, "unknown key(s) colour"),
    ("xq", {"native": None}, "missing key(s) native"),
    ("xr", {"code": "xq"}, "'xq' differs from the file name"),
    ("xq", {"direction": "up"}, "direction: 'up' is not ltr or rtl"),
    ("xq", {"script": "latin"}, "script: 'latin' is not an ISO 15924 code"),
    ("xq", {"answer_markers": ["(eyano)"]}, "answer_markers[0]: use non-capturing groups"),
    ("xq", {"answer_markers": ["eyano("]}, "answer_markers[0]: not a regular expression"),
    ("xq", {"answer_markers": ["(?:eyano)?"]}, "answer_markers[0]: matches the empty string"),
    ("xq", {"red_flags__terms": {"chest_pain": ["x"]}}, "red_flags.terms: missing key(s) breathing"),
    ("xq", {"interface__order": 0}, "interface.order: must be a positive integer"),
    ("xq", {"parity_probe": {"text": ""}}, "parity_probe.text: must be a non-empty string"),
    ("xq", {"schema_version": 2}, "schema_version: 2 is not 1"),
])
def test_a_bad_pack_names_its_file_and_key(tmp_path, code, changes, message):
    if "code" in changes:
        path = tmp_path / f"{code}.json"
        path.write_text(json.dumps(LINGALA | changes), encoding="utf-8")
    else:
        path = _write(tmp_path, code, **changes)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        langpacks.load([langpacks.BUILTIN_DIR, tmp_path])
    assert str(path) in str(err.value)


def test_a_missing_pack_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(langpacks.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="no such folder of language packs"):
        lookup("sw")


def test_a_pack_in_the_folder_replaces_the_packaged_one(tmp_path, monkeypatch):
    """A clinic drops in a reviewed file: same code, later folder, it wins."""
    data = json.loads((langpacks.BUILTIN_DIR / "sw.json").read_text(encoding="utf-8"))
    data["red_flags"]["terms"]["seizure"].append("kifafa kikali")
    data["interface"]["strings"]["stopped"] = "Imesimamishwa."
    (tmp_path / "sw.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setenv(langpacks.ENV, str(tmp_path))
    assert i18n.Translator("sw")("stopped") == "Imesimamishwa."
    assert "kifafa kikali" in RED_FLAGS["sw"]["seizure"]
    assert i18n.INTERFACE_LANGUAGES == MENU


# --- a language added as one file ------------------------------------------------------------------

def test_new_language_without_its_pack_is_unknown(clean_env):
    assert not lookup("ln").known and "ln" not in i18n.INTERFACE_LANGUAGES
    assert "ln" not in dict(parity.PROBES)
    assert find_red_flags("pasi na ntolo") == []


def test_new_language_is_in_the_table_translator_and_red_flags(lingala):
    lang = lookup("ln")
    assert lang.known and lang.native == "Lingála" and lang.is_low_resource and "ln" in LANGUAGES
    assert i18n.INTERFACE_LANGUAGES[-1] == "ln" and tuple(i18n.INTERFACE_LANGUAGES)[:-1] == MENU
    assert i18n.normalize("ln-CD") == "ln" and i18n.language_name("ln") == "Lingála (ln)"
    tr = i18n.Translator("ln")
    assert tr("language_title") == "Lokota" and tr("stats", tps=3, ttft=1).startswith("3 tokens/s · liloba")
    assert tr("stopped") == "Stopped."  # no Lingala string yet: English
    assert "Lingála" in i18n.system_prompt("ln")
    assert [(f.lang, f.category) for f in find_red_flags("Mwana azali na pasi na ntolo")] == [("ln", "chest_pain")]
    assert emergency_reminder("kopema mpasi", "ln") == tr("emergency", terms="kopema mpasi")


def test_new_language_answers_are_read_by_the_bench(lingala):
    assert extract_answer("Eyano ezali C", OPTIONS) == "C"
    items = [MCQItem(f"ln-{i}", "t", "ln", "test", "Nini?", OPTIONS, "C")
             for i in range(2)]
    backend = FakeBackend(replies=[["Eyano", ": ", "C"], ["Nayebi te"]])
    backend.load()
    assert [letter for _, letter in generate_answers(backend, items)] == ["C", None]


def test_new_language_joins_the_parity_probes_after_the_others(lingala):
    assert tuple(parity.PROBES) == (*PROBES_2026, ("ln", LINGALA["parity_probe"]["text"]))
    assert lookup(parity.PROBES[-1][0]).known  # the per-language parity table names it


async def test_new_language_is_in_the_chat_language_menu(lingala, tmp_path):
    backend = FakeBackend()
    app = make_app(tmp_path, backend)
    async with app.run_test(size=(80, 24)) as pilot:
        chat = await ready(pilot, app)
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, LanguageScreen))
        options = app.screen.query_one(OptionList)
        ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
        assert ids == [*MENU, "ln"]
        await pilot.press("end", "enter")
        await until(pilot, lambda: app.lang == "ln")
        assert "Mosungi oyo asalisaka kaka" in str(chat.query_one("#notice").render())
        await ask(pilot, chat, "homa")
        assert backend.requests[-1].messages[0].content == i18n.system_prompt("ln")


def test_packs_are_packaged():
    """pyproject's package list names the packs' folder (its *.json is package data)."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"globmed_edge.langpacks"' in text and not (Path(i18n.__file__).parent / "locales").exists()
