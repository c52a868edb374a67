"""Interface strings and reply-language system prompts, from the language packs.

A language's `interface` section in `edge/langpacks/<code>.json` (see `globmed_edge.langpacks`)
maps keys to strings with `str.format` placeholders, and holds its `system_prompt`: the short
per-language system prompt that asks the model to reply in that language (kept short because
prefill is slow on weak CPUs). English is the reference: every other packaged language must have
the same keys and the same placeholders (a test checks), and a key missing at run time falls back
to English rather than showing nothing. Languages whose pack has no interface section are shown
in English.
"""

from __future__ import annotations

import string

from globmed_edge import langpacks
from globmed_edge.errors import ConfigError

FALLBACK = "en"


def interface_languages() -> tuple[str, ...]:
    """The interface languages, in menu order (each pack's `interface.order`, then by code)."""
    return langpacks.load().interface_languages


#: The interface languages, in menu order: the 12 GlobMed-style ones, then low-resource ones.
#: A live view of the packs, so a pack added through $GLOBMED_EDGE_LANGPACKS is in the menu.
INTERFACE_LANGUAGES: langpacks.LiveTuple[str] = langpacks.LiveTuple(interface_languages)


def _interface(code: str) -> langpacks.Interface:
    pack = langpacks.get(code)
    if pack is None or pack.interface is None:
        where = pack.path if pack is not None else langpacks.BUILTIN_DIR / f"{code}.json"
        raise ConfigError(f"{where}: no interface strings for language {code!r} "
                          f"(available: {', '.join(available())})")
    return pack.interface


def load_locale(code: str) -> dict[str, str]:
    """The interface strings of `code` (a copy: callers may change it)."""
    return dict(_interface(code).strings)


def available() -> list[str]:
    return sorted(interface_languages())


def normalize(code: str) -> str:
    """`pt-BR` -> `pt`; unknown codes and languages without interface strings -> English."""
    base = code.split("-")[0].split("_")[0].lower()
    return base if base in interface_languages() else FALLBACK


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class Translator:
    """`tr("key", name=...)` in one interface language, falling back to English per key."""

    def __init__(self, lang: str = FALLBACK) -> None:
        self.lang = normalize(lang)
        self._strings = load_locale(self.lang)
        self._fallback = load_locale(FALLBACK)

    def __call__(self, key: str, **values: object) -> str:
        text = self._strings.get(key) or self._fallback.get(key)
        if text is None:
            en = langpacks.get(FALLBACK)
            raise ConfigError(f"{en.path if en else FALLBACK}: no interface string {key!r}")
        try:
            return text.format(**values) if values or placeholders(text) else text
        except (KeyError, IndexError, ValueError):
            # A broken translation must not crash the clinic's app: use the English one.
            return self._fallback[key].format(**values)

    def has(self, key: str) -> bool:
        return key in self._strings

    @property
    def rtl(self) -> bool:
        from globmed_edge.languages import lookup

        return lookup(self.lang).is_rtl


def system_prompt(lang: str) -> str:
    """The short system prompt asking the model to answer in `lang`."""
    return _interface(normalize(lang)).system_prompt


def language_name(code: str) -> str:
    """`Kiswahili (sw)`: the native name, so people recognise their own language."""
    from globmed_edge.languages import lookup

    entry = lookup(code)
    return f"{entry.native} ({code})" if entry.known else code
