"""Interface strings and reply-language system prompts, one JSON file per locale.

`tui/locales/<code>.json` maps keys to strings with `str.format` placeholders. English is the
reference: every other locale must have the same keys and the same placeholders (a test checks),
and a key missing at run time falls back to English rather than showing nothing.
The `system_prompt` key is the short per-language system prompt that asks the model to reply in
that language (kept short because prefill is slow on weak CPUs).
"""

from __future__ import annotations

import json
import string
from functools import cache
from pathlib import Path

from globmed_edge.errors import ConfigError

LOCALES_DIR = Path(__file__).with_name("locales")
FALLBACK = "en"

#: The interface languages, in menu order: the 12 GlobMed-style ones, then low-resource ones.
INTERFACE_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "ja", "ko", "fr", "es", "de", "pt", "ru", "ar", "hi", "it",
    "sw", "yo", "ha", "am", "zu",
)


@cache
def load_locale(code: str) -> dict[str, str]:
    path = LOCALES_DIR / f"{code}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no interface strings for language {code!r} "
                          f"(available: {', '.join(available())})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path}: must be a JSON object of strings")
    return data


def available() -> list[str]:
    return sorted(p.stem for p in LOCALES_DIR.glob("*.json"))


def normalize(code: str) -> str:
    """`pt-BR` -> `pt`; unknown codes -> English."""
    base = code.split("-")[0].split("_")[0].lower()
    return base if (LOCALES_DIR / f"{base}.json").is_file() else FALLBACK


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
            raise ConfigError(f"{LOCALES_DIR / (FALLBACK + '.json')}: no interface string {key!r}")
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
    return Translator(lang)("system_prompt")


def language_name(code: str) -> str:
    """`Kiswahili (sw)`: the native name, so people recognise their own language."""
    from globmed_edge.languages import lookup

    entry = lookup(code)
    return f"{entry.native} ({code})" if entry.known else code
