"""The language table: ISO code, names, script, writing direction and resource level.

Each row comes from that language's pack (`edge/langpacks/<code>.json`, see
`globmed_edge.langpacks`); this module turns the packs into `Language` entries and answers lookups.

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
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from globmed_edge import langpacks
from globmed_edge.langpacks import Direction, Resource

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


def _table() -> dict[str, Language]:
    return _table_of(langpacks.load())


@cache
def _table_of(packs: langpacks.PackSet) -> dict[str, Language]:
    return {code: Language(code, p.name, p.native, p.script, p.direction, p.resource)
            for code, p in sorted(packs.packs.items())}


#: The table, by code: one row per language pack (a live view, so packs added through
#: $GLOBMED_EDGE_LANGPACKS after this module was imported are in it too).
LANGUAGES: Mapping[str, Language] = langpacks.LiveMapping(_table)

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
    table = _table()
    if base in table:
        return table[base]
    return Language(code, code, code, "Zyyy", guess_direction(sample_text), "low", known=False)


def low_resource_codes(codes: list[str] | set[str]) -> list[str]:
    return sorted(c for c in codes if lookup(c).is_low_resource)
