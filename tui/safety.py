"""Red-flag terms: words in a question that should trigger the emergency-signs reminder.

The terms live in each language's pack (`red_flags` in `edge/langpacks/<code>.json`, one file
per language to hand to the clinicians who review it). A deliberately small, documented list
(docs/chat.md reproduces it) of danger signs from
WHO IMCI / emergency-triage teaching: chest pain, difficulty breathing, unconsciousness,
seizures, heavy bleeding, severe dehydration, stiff neck with fever, bleeding in pregnancy,
suicidal thoughts, stroke signs. Matching is case-insensitive substring matching after Unicode
NFKC normalisation (scripts without spaces, such as Chinese and Japanese, need substrings), and
every language's list is checked whatever the interface language, because staff often mix
languages; the languages are checked in their packs' `red_flags.order` and the first term
found names a category. It errs towards showing the reminder: a false alarm costs one line on
screen.
The terms were written by the development team and need review by clinicians who speak each
language before deployment.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from globmed_edge import langpacks
from globmed_edge.langpacks import CATEGORIES


def red_flags() -> Mapping[str, Mapping[str, tuple[str, ...]]]:
    """language -> category -> terms (lower case), in check order, from the language packs."""
    return langpacks.load().red_flags


#: The same, as a live view of the packs (a pack added through $GLOBMED_EDGE_LANGPACKS is in it).
RED_FLAGS: Mapping[str, Mapping[str, tuple[str, ...]]] = langpacks.LiveMapping(red_flags)


@dataclass(frozen=True)
class RedFlag:
    lang: str
    category: str
    term: str


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def find_red_flags(text: str) -> list[RedFlag]:
    """Every red-flag term found in `text` (all languages), one per category, in category order."""
    norm = normalize(text)
    found: dict[str, RedFlag] = {}
    for lang, table in red_flags().items():
        for category, terms in table.items():
            if category in found:
                continue
            for term in terms:
                if normalize(term) in norm:
                    found[category] = RedFlag(lang, category, term)
                    break
    return [found[c] for c in CATEGORIES if c in found]


def emergency_reminder(text: str, lang: str) -> str | None:
    """The localized emergency-signs reminder for `text`, or None when it has no red flags."""
    flags = find_red_flags(text)
    if not flags:
        return None
    from globmed_edge.tui.i18n import Translator

    return Translator(lang)("emergency", terms=", ".join(f.term for f in flags))
