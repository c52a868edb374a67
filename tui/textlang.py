"""The script and, where it can be told, the language of one message's text.

A chat message is stored and exported with the language of its text, not the interface's: a
nurse with the English interface who types in French writes French. The script comes from the
Unicode names of the letters (ISO 15924 codes, as in globmed_edge.languages); a script that only
one interface language writes (Ethiopic, Devanagari, Hangul, kana, Cyrillic, Arabic without
Persian/Urdu letters) gives the language. Latin-script text is told apart by a few very common
words of each interface language written in Latin script, and only when one language clearly
leads; otherwise the language is "" (unknown), never a guess. Nothing here imports textual.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

# Unicode name prefix -> ISO 15924.
_SCRIPTS = (("LATIN", "Latn"), ("CYRILLIC", "Cyrl"), ("ARABIC", "Arab"), ("HEBREW", "Hebr"),
            ("DEVANAGARI", "Deva"), ("BENGALI", "Beng"), ("TAMIL", "Taml"), ("THAI", "Thai"),
            ("ETHIOPIC", "Ethi"), ("HANGUL", "Kore"), ("HIRAGANA", "Jpan"), ("KATAKANA", "Jpan"),
            ("CJK", "Hani"), ("GREEK", "Grek"))
# A script written by one language among the interface languages.
_ONE_LANGUAGE = {"Cyrl": "ru", "Deva": "hi", "Ethi": "am", "Kore": "ko", "Jpan": "ja", "Hani": "zh",
                 "Hebr": "he", "Beng": "bn", "Taml": "ta", "Thai": "th"}
_PERSIAN_URDU = set("پچژگکیےٹڈڑں")

# Frequent short words (function words) of the Latin-script interface languages.
_WORDS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "en": "the and is are what how my his her with for of to in it should do does have has "
          "this that not can child baby he she",
    "fr": "le la les un une des et est que qui quoi comment mon ma mes son sa il elle avec pour "
          "dans du de au aux pas ne faire depuis enfant",
    "es": "el la los las un una y es que qué cómo mi su con para en del por no hacer tiene "
          "niño niña está",
    "de": "der die das und ist ein eine wie was mein meine mit für nicht ich er sie hat kind "
          "seit soll",
    "pt": "o a os as um uma e é que como meu minha com para em do da não fazer tem criança "
          "está",
    "it": "il lo la gli le un una e è che come mio mia con per di del della non fare ha "
          "bambino",
    "sw": "na ya wa kwa ni mtoto wangu ana nini je gani nifanye kama hana siku yake",
    "yo": "ni ti àti si mi ó kò ọmọ mo se bí wà fún",
    "ha": "da na ya ta ba ni shi ita mai yaro kuma ina yana tana don me",
    "zu": "ngi uma futhi kodwa ingane yami unayo yini kanjani kwi",
}.items()}
_MARKS = {"yo": set("ẹọṣẸỌṢ"), "ha": set("ɓɗƙƴƁƊƘ")}
_WORD = re.compile(r"\w+", re.UNICODE)


def detect_script(text: str) -> str:
    """The ISO 15924 code of most of the letters of `text`, or "" when it has none."""
    counts: Counter[str] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        for prefix, code in _SCRIPTS:
            if name.startswith(prefix):
                counts[code] += 1
                break
    if counts["Jpan"]:  # Japanese mixes kana with kanji; kana alone tell it from Chinese
        counts["Jpan"] += counts.pop("Hani", 0)
    return counts.most_common(1)[0][0] if counts else ""


def detect_language(text: str) -> str:
    """The language code of `text` where it can be told, else ""."""
    script = detect_script(text)
    if script in _ONE_LANGUAGE:
        return _ONE_LANGUAGE[script]
    if script == "Arab":
        return "" if _PERSIAN_URDU & set(text) else "ar"
    if script != "Latn":
        return ""
    words = [w.casefold() for w in _WORD.findall(text)]
    scores = {lang: sum(w in vocab for w in words) for lang, vocab in _WORDS.items()}
    for lang, marks in _MARKS.items():
        scores[lang] += 2 * sum(ch in marks for ch in text)
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    # Two hits at least, and clearly ahead: "la" or "a" alone is French, Spanish and Italian.
    return best if top >= 2 and top >= second + 2 else ""
