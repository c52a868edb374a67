"""Language packs: everything the toolkit knows about one language, in one JSON file.

`edge/langpacks/<code>.json` holds a language's table row (names, script, direction, resource
level), and, when the language has them, its interface strings and reply-language system prompt
(the chat), its red-flag terms (the chat's emergency reminder), its answer markers (reading a
letter back from a generated MCQ reply) and its parity probe sentence (quantize). Each stage reads
only its part, through `load()`; nothing else in the code names a language's words.

Adding a language is adding one file. Packs are read from this folder, then from every folder in
`$GLOBMED_EDGE_LANGPACKS` (`os.pathsep`-separated), in that order; a pack whose code is already
known replaces the earlier one, so a clinic can drop in a reviewed file without reinstalling.
Each set of folders is read once per process (the result is cached on the folder list).

Ordered sections (`interface`, `red_flags`, `parity_probe`) carry an optional `order`: the
language menu, the red-flag check (the first language whose term matches names a danger sign)
and the probe set follow it; sections without one come after, by code. Unknown keys, wrong types
and a code that differs from the file name are errors naming the file and the key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from globmed_edge.errors import ConfigError

SCHEMA_VERSION = 1
Direction = Literal["ltr", "rtl"]
Resource = Literal["high", "low"]
ENV = "GLOBMED_EDGE_LANGPACKS"
BUILTIN_DIR = Path(__file__).resolve().parent

#: The red-flag categories, in the order the emergency reminder names them (tui/safety.py).
CATEGORIES = ("chest_pain", "breathing", "unconscious", "seizure", "bleeding", "dehydration",
              "stiff_neck_fever", "pregnancy_bleeding", "suicidal", "stroke")

_BASE_CODE_RE = re.compile(r"[a-z]{2,3}")
_SCRIPT_RE = re.compile(r"[A-Z][a-z]{3}")  # ISO 15924
_TOP_KEYS = {"schema_version", "code", "name", "native", "script", "direction", "resource",
             "answer_markers", "parity_probe", "red_flags", "interface"}
_REQUIRED = ("schema_version", "code", "name", "native", "script", "direction", "resource")


@dataclass(frozen=True)
class Interface:
    order: int | None
    system_prompt: str  # the short system prompt asking the model to reply in this language
    strings: Mapping[str, str]  # interface strings, `str.format` placeholders


@dataclass(frozen=True)
class RedFlags:
    order: int | None
    terms: Mapping[str, tuple[str, ...]]  # category -> terms


@dataclass(frozen=True)
class Probe:
    order: int | None
    text: str


@dataclass(frozen=True)
class LangPack:
    code: str
    name: str
    native: str
    script: str
    direction: Direction
    resource: Resource
    path: Path
    answer_markers: tuple[str, ...] = ()  # regular expressions, matched case-insensitively
    parity_probe: Probe | None = None
    red_flags: RedFlags | None = None
    interface: Interface | None = None


def _fail(path: Path, where: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {msg}" if where else f"{path}: {msg}")


def _object(path: Path, where: str, value: Any, allowed: set[str], required: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, where, "must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(path, where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    missing = [k for k in required if k not in value]
    if missing:
        raise _fail(path, where, f"missing key(s) {', '.join(missing)}")
    return value


def _text(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, where, "must be a non-empty string")
    return value


def _order(path: Path, where: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(path, f"{where}.order", "must be a positive integer")
    return value


def _texts(path: Path, where: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise _fail(path, where, "must be a non-empty list of strings" if not allow_empty
                    else "must be a list of strings")
    return tuple(_text(path, f"{where}[{i}]", v) for i, v in enumerate(value))


def _markers(path: Path, value: Any) -> tuple[str, ...]:
    markers = _texts(path, "answer_markers", value, allow_empty=True)
    for i, marker in enumerate(markers):
        try:
            groups = re.compile(marker).groups
        except re.error as exc:
            raise _fail(path, f"answer_markers[{i}]", f"not a regular expression ({exc})") from None
        if groups:  # the marker regex has one group of its own, the letter
            raise _fail(path, f"answer_markers[{i}]", "use non-capturing groups (?:...) only")
        if re.fullmatch(marker, ""):  # it would take any capital letter in a reply for the answer
            raise _fail(path, f"answer_markers[{i}]", "matches the empty string")
    return markers


def _red_flags(path: Path, value: Any) -> RedFlags:
    section = _object(path, "red_flags", value, {"order", "terms"}, ["terms"])
    terms = _object(path, "red_flags.terms", section["terms"], set(CATEGORIES), CATEGORIES)
    return RedFlags(_order(path, "red_flags", section.get("order")),
                    {c: _texts(path, f"red_flags.terms.{c}", terms[c]) for c in CATEGORIES})


def _interface(path: Path, value: Any) -> Interface:
    section = _object(path, "interface", value, {"order", "system_prompt", "strings"},
                      ["system_prompt", "strings"])
    strings = section["strings"]
    if not isinstance(strings, dict) or not strings:
        raise _fail(path, "interface.strings", "must be a non-empty JSON object of strings")
    for key, text in strings.items():
        _text(path, f"interface.strings.{key}", text)
    return Interface(_order(path, "interface", section.get("order")),
                     _text(path, "interface.system_prompt", section["system_prompt"]), dict(strings))


def read_pack(path: Path) -> LangPack:
    """One pack, validated; ConfigError names the file and the key at fault."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read language pack ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from None
    data = _object(path, "", data, _TOP_KEYS, _REQUIRED)
    if data["schema_version"] != SCHEMA_VERSION:
        raise _fail(path, "schema_version", f"{data['schema_version']!r} is not {SCHEMA_VERSION}")
    code = _text(path, "code", data["code"])
    if not _BASE_CODE_RE.fullmatch(code):
        raise _fail(path, "code", f"{code!r} is not a 2-3 letter lower-case ISO 639 code")
    if code != path.stem:
        raise _fail(path, "code", f"{code!r} differs from the file name (expected {path.stem}.json)")
    script = _text(path, "script", data["script"])
    if not _SCRIPT_RE.fullmatch(script):
        raise _fail(path, "script", f"{script!r} is not an ISO 15924 code such as Latn")
    if data["direction"] not in ("ltr", "rtl"):
        raise _fail(path, "direction", f"{data['direction']!r} is not ltr or rtl")
    if data["resource"] not in ("high", "low"):
        raise _fail(path, "resource", f"{data['resource']!r} is not high or low")
    probe = None
    if data.get("parity_probe") is not None:
        section = _object(path, "parity_probe", data["parity_probe"], {"order", "text"}, ["text"])
        probe = Probe(_order(path, "parity_probe", section.get("order")),
                      _text(path, "parity_probe.text", section["text"]))
    return LangPack(
        code=code, name=_text(path, "name", data["name"]), native=_text(path, "native", data["native"]),
        script=script, direction=data["direction"], resource=data["resource"], path=path,
        answer_markers=_markers(path, data.get("answer_markers", [])), parity_probe=probe,
        red_flags=_red_flags(path, data["red_flags"]) if data.get("red_flags") is not None else None,
        interface=_interface(path, data["interface"]) if data.get("interface") is not None else None,
    )


T = TypeVar("T")


def _in_order(packs: Mapping[str, LangPack], section: Callable[[LangPack], T | None]) -> list[tuple[str, T]]:
    """(code, section) for the packs that have it: by its `order`, then unordered ones by code."""
    have = [(code, s) for code, p in sorted(packs.items()) if (s := section(p)) is not None]
    return sorted(have, key=lambda cs: (getattr(cs[1], "order", None) is None,
                                        getattr(cs[1], "order", None) or 0, cs[0]))


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per folder list
class PackSet:
    """Every pack found, by code, and the views the stages read (computed once per folder list)."""

    packs: Mapping[str, LangPack]
    interface_languages: tuple[str, ...]  # the language menu, in order
    red_flags: Mapping[str, Mapping[str, tuple[str, ...]]]  # checked in this order
    answer_markers: tuple[str, ...]  # every pack's markers, duplicates dropped
    parity_probes: tuple[tuple[str, str], ...]  # (code, text), in probe order

    @classmethod
    def of(cls, packs: Mapping[str, LangPack]) -> PackSet:
        markers = dict.fromkeys(m for _, p in sorted(packs.items()) for m in p.answer_markers)
        return cls(
            packs=packs,
            interface_languages=tuple(c for c, _ in _in_order(packs, lambda p: p.interface)),
            red_flags={c: r.terms for c, r in _in_order(packs, lambda p: p.red_flags)},
            answer_markers=tuple(markers),
            parity_probes=tuple((c, p.text) for c, p in _in_order(packs, lambda p: p.parity_probe)),
        )


def pack_dirs() -> tuple[Path, ...]:
    """The packaged folder, then the folders named in $GLOBMED_EDGE_LANGPACKS."""
    extra = tuple(Path(p).expanduser() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip())
    return (BUILTIN_DIR, *extra)


@cache
def _load(dirs: tuple[Path, ...]) -> PackSet:
    packs: dict[str, LangPack] = {}
    for folder in dirs:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such folder of language packs (from ${ENV})")
        for path in sorted(folder.glob("*.json")):
            pack = read_pack(path)
            packs[pack.code] = pack
    if "en" not in packs or packs["en"].interface is None:
        raise ConfigError(f"{BUILTIN_DIR / 'en.json'}: the English pack with its interface strings is "
                          "missing (it is every other language's fallback)")
    return PackSet.of(packs)


def load(dirs: Sequence[Path] | None = None) -> PackSet:
    """The packs in `dirs` (default: `pack_dirs()`), read once per distinct folder list."""
    return _load(tuple(dirs) if dirs is not None else pack_dirs())


def get(code: str) -> LangPack | None:
    """The pack for a base code (`sw`), or None."""
    return load().packs.get(code)


class LiveTuple(Sequence[T]):
    """A read-only tuple computed from the current packs on every use.

    For module constants that other modules import by name (`INTERFACE_LANGUAGES`): a pack added
    through $GLOBMED_EDGE_LANGPACKS after the import still shows up.
    """

    def __init__(self, get: Callable[[], tuple[T, ...]]) -> None:
        self._get = get

    def __getitem__(self, index: Any) -> Any:
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[T]:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, LiveTuple) else other)

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


class LiveMapping(Mapping[str, T]):
    """A read-only mapping computed from the current packs on every use (see LiveTuple)."""

    def __init__(self, get: Callable[[], Mapping[str, T]]) -> None:
        self._get = get

    def __getitem__(self, key: str) -> T:
        return self._get()[key]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __repr__(self) -> str:
        return repr(dict(self._get()))
