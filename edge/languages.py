"""The language table: ISO code, names, script, writing direction and resource level.

`resource` drives the low-resource aggregate in bench reports. The criterion is written down
so the table can be extended consistently: a language is "high" when it has a large share of
web text (roughly >= 0.5% of Common Crawl pages) and mature NLP tooling, otherwise "low".
GlobMed's finding is that small models gain most on the "low" ones.

Codes not in the table are still valid data (`lookup` returns an entry marked `known=False`
whose direction is guessed from sample text), so datasets in languages we have not listed
validate and report like any other.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Direction = Literal["ltr", "rtl"]
Resource = Literal["high", "low"]

_CODE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    native: str
    script: str  # ISO 15924
    direction: Direction
    resource: Resource
    known: bool = True

    @property
    def is_rtl(self) -> bool:
        return self.direction == "rtl"

    @property
    def is_low_resource(self) -> bool:
        return self.resource == "low"


def _L(code: str, name: str, native: str, script: str, direction: Direction, resource: Resource) -> Language:
    return Language(code, name, native, script, direction, resource)


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        # High-resource
        _L("en", "English", "English", "Latn", "ltr", "high"),
        _L("zh", "Chinese", "中文", "Hans", "ltr", "high"),
        _L("ja", "Japanese", "日本語", "Jpan", "ltr", "high"),
        _L("ko", "Korean", "한국어", "Kore", "ltr", "high"),
        _L("fr", "French", "Français", "Latn", "ltr", "high"),
        _L("es", "Spanish", "Español", "Latn", "ltr", "high"),
        _L("de", "German", "Deutsch", "Latn", "ltr", "high"),
        _L("pt", "Portuguese", "Português", "Latn", "ltr", "high"),
        _L("ru", "Russian", "Русский", "Cyrl", "ltr", "high"),
        _L("it", "Italian", "Italiano", "Latn", "ltr", "high"),
        _L("ar", "Arabic", "العربية", "Arab", "rtl", "high"),
        _L("id", "Indonesian", "Bahasa Indonesia", "Latn", "ltr", "high"),
        _L("vi", "Vietnamese", "Tiếng Việt", "Latn", "ltr", "high"),
        _L("tr", "Turkish", "Türkçe", "Latn", "ltr", "high"),
        _L("pl", "Polish", "Polski", "Latn", "ltr", "high"),
        _L("nl", "Dutch", "Nederlands", "Latn", "ltr", "high"),
        _L("fa", "Persian", "فارسی", "Arab", "rtl", "high"),
        # Low-resource
        _L("he", "Hebrew", "עברית", "Hebr", "rtl", "low"),
        _L("hi", "Hindi", "हिन्दी", "Deva", "ltr", "low"),
        _L("bn", "Bengali", "বাংলা", "Beng", "ltr", "low"),
        _L("ur", "Urdu", "اردو", "Arab", "rtl", "low"),
        _L("ne", "Nepali", "नेपाली", "Deva", "ltr", "low"),
        _L("ta", "Tamil", "தமிழ்", "Taml", "ltr", "low"),
        _L("th", "Thai", "ไทย", "Thai", "ltr", "low"),
        _L("ms", "Malay", "Bahasa Melayu", "Latn", "ltr", "low"),
        _L("sw", "Swahili", "Kiswahili", "Latn", "ltr", "low"),
        _L("yo", "Yoruba", "Yorùbá", "Latn", "ltr", "low"),
        _L("ha", "Hausa", "Hausa", "Latn", "ltr", "low"),
        _L("am", "Amharic", "አማርኛ", "Ethi", "ltr", "low"),
        _L("zu", "Zulu", "isiZulu", "Latn", "ltr", "low"),
        _L("xh", "Xhosa", "isiXhosa", "Latn", "ltr", "low"),
        _L("ig", "Igbo", "Asụsụ Igbo", "Latn", "ltr", "low"),
        _L("sn", "Shona", "chiShona", "Latn", "ltr", "low"),
        _L("st", "Southern Sotho", "Sesotho", "Latn", "ltr", "low"),
        _L("tn", "Tswana", "Setswana", "Latn", "ltr", "low"),
        _L("ts", "Tsonga", "Xitsonga", "Latn", "ltr", "low"),
        _L("nso", "Northern Sotho", "Sesotho sa Leboa", "Latn", "ltr", "low"),
        _L("af", "Afrikaans", "Afrikaans", "Latn", "ltr", "low"),
        _L("bm", "Bambara", "Bamanankan", "Latn", "ltr", "low"),
        _L("wo", "Wolof", "Wolof", "Latn", "ltr", "low"),
        _L("rw", "Kinyarwanda", "Ikinyarwanda", "Latn", "ltr", "low"),
        _L("so", "Somali", "Soomaali", "Latn", "ltr", "low"),
        _L("om", "Oromo", "Afaan Oromoo", "Latn", "ltr", "low"),
        _L("ti", "Tigrinya", "ትግርኛ", "Ethi", "ltr", "low"),
    ]
}

#: The languages of the GlobMed release (dataset and bench), in the paper's order.
GLOBMED_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "ja", "ko", "fr", "es", "de", "pt", "ru", "ar", "hi", "sw",
)


def is_valid_code(code: str) -> bool:
    """BCP-47-ish: a 2-3 letter ISO 639 code, optionally with subtags (`pt-BR`, `zh-Hant`)."""
    return bool(_CODE_RE.fullmatch(code))  # match() let "en\n" through ($ matches before a final newline)


def guess_direction(text: str) -> Direction:
    """`rtl` when the first strongly directional character of `text` is right-to-left."""
    for ch in text:
        bidi = unicodedata.bidirectional(ch)
        if bidi in ("R", "AL"):
            return "rtl"
        if bidi == "L":
            return "ltr"
    return "ltr"


def lookup(code: str, sample_text: str = "") -> Language:
    """The table entry for `code` (subtags ignored), or an `known=False` entry for others.

    Unknown languages count as low-resource: a report should never silently drop them from the
    aggregate that exists to show the languages that are worst served.
    """
    base = code.split("-")[0].lower()
    if base in LANGUAGES:
        return LANGUAGES[base]
    return Language(code, code, code, "Zyyy", guess_direction(sample_text), "low", known=False)


def low_resource_codes(codes: list[str] | set[str]) -> list[str]:
    return sorted(c for c in codes if lookup(c).is_low_resource)
