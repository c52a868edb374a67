"""Streaming readers that turn dataset files into items, reporting every bad record.

Every reader yields `Record`s: either an item or a `Problem` with file, line and reason, so
`data validate` can report all errors in one pass and `--strict` can stop at the first. Files
are read incrementally (line by line, or a JSON array object by object) so files of hundreds
of MB are never loaded whole.

Supported layouts (`detect_format` picks one when `fmt="auto"`):

* ``jsonl``      the project schema, one object per line (``../shared/data/mcq``); a directory
                 means every ``*.jsonl`` below it.
* ``globmed``    the GlobMed release layout: ``ROOT/<lang>/<split>.json`` (a JSON array) or
                 ``.jsonl``; records have ``question``, ``options`` (object or list), ``answer``
                 (letter, 0-based index or the option text), optional ``id``, ``rationale``.
* ``mmedbench``  MMedBench JSONL: ``question``, ``options``, ``answer_idx``, ``rationale``; the
                 language comes from the file name (``English.jsonl``) or ``lang=``, the split
                 from the parent folder (``Train``/``Test``) or ``split=``.
* ``csv``        a CSV file with a column mapping (`CsvMapping`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.data.schema import LETTERS, Item, Problem, parse_item
from globmed_edge.errors import DataError
from globmed_edge.languages import is_valid_code

FORMATS = ("auto", "jsonl", "globmed", "mmedbench", "csv")

MMEDBENCH_LANGS = {
    "english": "en", "chinese": "zh", "japanese": "ja", "french": "fr",
    "russian": "ru", "spanish": "es",
}


@dataclass(frozen=True)
class Record:
    path: str
    line: int | None
    item: Item | None = None
    problem: Problem | None = None


@dataclass(frozen=True)
class Defaults:
    """Values for fields a layout does not carry (dataset, lang, split, license)."""

    dataset: str | None = None
    lang: str | None = None
    split: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class CsvMapping:
    """Which CSV columns hold which field. `options` lists one column per option, in order."""

    question: str = "question"
    answer: str = "answer"
    options: tuple[str, ...] = ()
    id: str | None = "id"
    lang: str | None = "lang"
    split: str | None = "split"
    dataset: str | None = "dataset"
    rationale: str | None = "rationale"
    license: str | None = "license"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_pairs(cls, pairs: Iterable[str]) -> CsvMapping:
        """Parse `field=column` pairs; `options=colA,colB,...`. Unknown fields are errors."""
        kwargs: dict[str, Any] = {}
        allowed = {"question", "answer", "options", "id", "lang", "split", "dataset", "rationale", "license"}
        for pair in pairs:
            if "=" not in pair:
                raise DataError(f"column mapping {pair!r} must look like field=column")
            key, _, value = pair.partition("=")
            key = key.strip()
            if key not in allowed:
                raise DataError(f"unknown field {key!r} in column mapping (known: {', '.join(sorted(allowed))})")
            kwargs[key] = tuple(v.strip() for v in value.split(",") if v.strip()) if key == "options" else value.strip()
        return cls(**kwargs)


# ---------------------------------------------------------------------------- helpers


def _bad(path: Path, line: int | None, reason: str, item_id: str | None = None) -> Record:
    return Record(str(path), line, problem=Problem(str(path), line, reason, item_id))


def _not_a_record(path: Path, line: int | None, obj: object) -> Record:
    """The bad record for a parsed value that is not a JSON object (or could not be parsed)."""
    if isinstance(obj, DataError):
        return _bad(path, line, obj.reason)
    return _bad(path, line, f"record must be a JSON object, got {type(obj).__name__}")


def _decode_line(raw: bytes, lineno: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); re-save the file as UTF-8"
        ) from None
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    return text


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique: `{"answer": "A", ..., "answer": "B"}` silently
    flipped the gold answer (the last one won)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DataError(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise DataError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _checked(obj: Any) -> Any:
    """Refuse what parses but cannot be written back: lone surrogates (`"\\ud800"`)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"a string holds a lone surrogate (\\u{ord(exc.object[exc.start]):04x}), "
                        "which is not text") from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)") from None
    return obj


def _loads(text: str) -> Any:
    try:
        obj, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # an integer literal over 4,300 digits
        raise DataError(f"invalid JSON ({str(exc).split(';')[0][:80]})") from None
    if text[end:].strip():
        raise DataError(f"invalid JSON (extra data at column {end + 1})")
    return _checked(obj)


def _item_or_problem(path: Path, line: int | None, obj: Any) -> Record:
    try:
        return Record(str(path), line, item=parse_item(obj))
    except DataError as exc:
        item_id = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
        return _bad(path, line, exc.reason, item_id)


MAX_LINE_BYTES = 64 << 20  # one record; a longer "line" (/dev/zero, a binary file) is not read whole


def _iter_jsonl_objects(path: Path) -> Iterator[tuple[int, Any | DataError]]:
    """(line number, decoded object or the DataError explaining why it is not one)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                yield lineno, DataError(f"line longer than {MAX_LINE_BYTES >> 20} MiB; not a JSONL record")
                return
            if not raw.strip():
                continue
            try:
                yield lineno, _loads(_decode_line(raw, lineno))
            except DataError as exc:
                yield lineno, exc


def _iter_json_array(path: Path, chunk_size: int = 1 << 20) -> Iterator[tuple[int, Any | DataError]]:
    """Stream the elements of a top-level JSON array without loading the whole file."""
    decoder = _DECODER
    reader = codecs.getincrementaldecoder("utf-8-sig")()
    with open(path, "rb") as fh:
        buf, pos, line, eof, started = "", 0, 1, False, False

        def fill() -> bool:
            nonlocal buf, pos, eof
            raw = fh.read(chunk_size)
            try:
                text = reader.decode(raw, final=not raw)
            except UnicodeDecodeError:
                raise DataError("not valid UTF-8; re-save the file as UTF-8") from None
            if not raw:
                eof = True
            buf = buf[pos:] + text
            pos = 0
            return bool(raw)

        def skip_ws() -> None:
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    if buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < len(buf) or eof or not fill():
                    return

        try:
            fill()
            skip_ws()
            if pos >= len(buf) or buf[pos] != "[":
                raise DataError("expected a JSON array of records")
            pos += 1
            started = True
            first = True
            while True:
                skip_ws()
                if pos >= len(buf):
                    raise DataError("truncated JSON: the array is not closed")
                if buf[pos] == "]":
                    return
                if not first:  # a missing comma between two records was accepted
                    if buf[pos] != ",":
                        raise DataError(f"invalid JSON (expected ',' or ']' after a record, found {buf[pos]!r})")
                    pos += 1
                    skip_ws()
                first = False
                start_line = line
                while True:
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                        break
                    except json.JSONDecodeError as exc:
                        if eof or not fill():
                            raise DataError(f"invalid or truncated JSON ({exc.msg})") from None
                    except RecursionError:
                        raise DataError("invalid JSON (nested too deeply)") from None
                    except ValueError as exc:
                        raise DataError(f"invalid JSON ({str(exc).split(';')[0][:80]})") from None
                line += buf.count("\n", pos, end)
                pos = end
                try:
                    obj = _checked(obj)
                except DataError as exc:  # this record is bad; the next ones are still read
                    obj = exc
                yield start_line, obj
        except DataError as exc:
            yield (line if started else 1), exc


# ---------------------------------------------------------------------------- readers


def read_jsonl(path: Path, defaults: Defaults = Defaults()) -> Iterator[Record]:
    """The project schema. `defaults` fill only fields that are absent from a record."""
    fill = {k: v for k, v in vars(defaults).items() if v is not None}
    for lineno, obj in _iter_jsonl_objects(path):
        if isinstance(obj, DataError):
            yield _bad(path, lineno, obj.reason)
            continue
        if fill and isinstance(obj, dict):
            obj = {**fill, **obj}
        yield _item_or_problem(path, lineno, obj)


def _cell(row: dict[str, str], name: str | None, default: str | None) -> str | None:
    """A CSV cell by column name; empty or absent cells give `default`."""
    value = row.get(name) if name else None
    return value if value not in (None, "") else default


def _options_from(raw: Any) -> Any:
    if isinstance(raw, list):
        if len(raw) > len(LETTERS):
            return raw  # let validation report the count
        return {LETTERS[i]: v for i, v in enumerate(raw)}
    return raw


def _answer_letter(answer: Any, options: Any) -> Any:
    """Accept a letter, a 0-based index, or the full option text; return the letter if found."""
    if isinstance(options, dict):
        if isinstance(answer, bool):
            return answer
        if isinstance(answer, int) and 0 <= answer < len(options):
            return list(options)[answer]
        if isinstance(answer, str):
            a = answer.strip()
            if a in options:
                return a
            for k, v in options.items():
                if isinstance(v, str) and v.strip() == a:
                    return k
    return answer


def read_globmed(root: Path, defaults: Defaults = Defaults()) -> Iterator[Record]:
    """`ROOT/<lang>/<split>.json|jsonl`; ids default to `<dataset>-<lang>-<split>-<n>`."""
    lang_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not lang_dirs:
        yield _bad(root, None, "no language folders found (expected ROOT/<lang>/<split>.json)")
        return
    for loose in sorted([*root.glob("*.json"), *root.glob("*.jsonl")]):  # said, never dropped silently
        if not loose.name.startswith("."):
            yield _bad(loose, None, "outside a language folder, so not read in the GlobMed layout "
                                    "(ROOT/<lang>/<split>.json); use --format jsonl to read it")
    for lang_dir in lang_dirs:
        if not is_valid_code(lang_dir.name):
            yield _bad(lang_dir, None, f"folder name {lang_dir.name!r} is not a language code")
            continue
        for path in sorted([*lang_dir.glob("*.json"), *lang_dir.glob("*.jsonl")]):
            yield from _guarded(path, read_globmed_file, defaults)


def read_globmed_file(path: Path, defaults: Defaults = Defaults()) -> Iterator[Record]:
    """One GlobMed split file; language from its folder, split from its name, unless given."""
    lang = defaults.lang or path.parent.name
    split = defaults.split or path.stem
    dataset = defaults.dataset or path.parent.parent.name
    stream = _iter_json_array(path) if path.suffix == ".json" else _iter_jsonl_objects(path)
    for n, (lineno, obj) in enumerate(stream):
        if not isinstance(obj, dict):
            yield _not_a_record(path, lineno, obj)
            continue
        rec = {
            "id": str(obj.get("id", f"{dataset}-{lang}-{split}-{n}")),
            "dataset": obj.get("dataset", dataset),
            "lang": obj.get("lang", lang),
            "split": obj.get("split", split),
            "license": obj.get("license", defaults.license),
            **{k: v for k, v in obj.items() if k not in ("id", "dataset", "lang", "split", "license")},
        }
        if "messages" not in obj:
            options = _options_from(obj.get("options"))
            rec["options"] = options
            rec["answer"] = _answer_letter(obj.get("answer"), options)
        yield _item_or_problem(path, lineno, rec)


def read_mmedbench(path: Path, defaults: Defaults = Defaults()) -> Iterator[Record]:
    lang = defaults.lang or MMEDBENCH_LANGS.get(path.stem.lower())
    if lang is None:
        yield _bad(path, None, f"cannot tell the language from the file name {path.name!r}; pass lang=")
        return
    split = defaults.split or path.parent.name.lower()
    dataset = defaults.dataset or "mmedbench"
    for n, (lineno, obj) in enumerate(_iter_jsonl_objects(path)):
        if not isinstance(obj, dict):
            yield _not_a_record(path, lineno, obj)
            continue
        idx = obj.get("answer_idx")
        if isinstance(idx, str) and ("," in idx or len(idx.strip()) > 1):
            yield _bad(path, lineno, f"multi-answer item (answer_idx={idx!r}) is not supported")
            continue
        if idx is None:
            yield _bad(path, lineno, "missing field 'answer_idx'")
            continue
        options = obj.get("options")
        rec = {
            "id": str(obj.get("id", f"{dataset}-{lang}-{split}-{n}")),
            "dataset": dataset, "lang": lang, "split": split,
            "question": obj.get("question"), "options": options,
            "answer": idx.strip() if isinstance(idx, str) else idx,
            "license": defaults.license,
        }
        if obj.get("rationale"):
            rec["rationale"] = obj["rationale"]
        if isinstance(options, dict) and isinstance(obj.get("answer"), str) and isinstance(idx, str):
            gold = options.get(idx.strip())
            if isinstance(gold, str) and gold.strip() != obj["answer"].strip():
                yield _bad(path, lineno, f"answer text does not match option {idx} (answer_idx and answer disagree)")
                continue
        yield _item_or_problem(path, lineno, rec)


def _bad_utf8_line(path: Path) -> int:
    """The 1-based line of a file's first invalid UTF-8 byte."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 1


def read_csv(path: Path, mapping: CsvMapping, defaults: Defaults = Defaults()) -> Iterator[Record]:
    with open(path, "rb") as raw_fh:
        fh = io.TextIOWrapper(raw_fh, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError:
            yield _bad(path, _bad_utf8_line(path), "not valid UTF-8; re-save the file as UTF-8")
            return
        except csv.Error as exc:
            yield _bad(path, 1, f"malformed CSV header ({exc})")
            return
        option_cols = list(mapping.options) or [c for c in header if len(c) == 1 and c in LETTERS]
        if len(option_cols) > len(LETTERS):
            yield _bad(path, 1, f"{len(option_cols)} option columns; at most {len(LETTERS)} (A-{LETTERS[-1]})")
            return
        required = [mapping.question, mapping.answer, *option_cols]
        # lang and split must come from a column or a default; dataset defaults to the file name.
        optional = {"lang": mapping.lang, "split": mapping.split}
        for name, column in optional.items():
            if getattr(defaults, name) is None and (column is None or column not in header):
                required.append(column or name)
        missing = [c for c in required if c not in header]
        if not option_cols:
            missing.append("option columns (A, B, ... or options=col1,col2)")
        if missing:
            yield _bad(path, 1, f"missing column(s): {', '.join(missing)} (header: {', '.join(header)})")
            return
        n = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:  # decoding runs ahead in chunks: find the line itself
                yield _bad(path, _bad_utf8_line(path), "not valid UTF-8; re-save the file as UTF-8")
                return
            except csv.Error as exc:
                yield _bad(path, reader.line_num, f"malformed CSV ({exc})")
                return
            lineno = reader.line_num
            options = {LETTERS[i]: (row.get(c) or "") for i, c in enumerate(option_cols)}
            # Trailing empty option columns mean "fewer options", not "empty option".
            while options and not options[LETTERS[len(options) - 1]].strip():
                options.pop(LETTERS[len(options) - 1])

            lang = _cell(row, mapping.lang, defaults.lang)
            split = _cell(row, mapping.split, defaults.split)
            dataset = _cell(row, mapping.dataset, defaults.dataset or path.stem)
            rec: dict[str, Any] = {
                "id": _cell(row, mapping.id, None) or f"{dataset}-{split}-{n}",
                "dataset": dataset, "lang": lang, "split": split,
                "question": row.get(mapping.question), "options": options,
                "answer": _answer_letter((row.get(mapping.answer) or "").strip(), options),
                "license": _cell(row, mapping.license, defaults.license),
            }
            if _cell(row, mapping.rationale, None):
                rec["rationale"] = row[mapping.rationale]
            n += 1
            yield _item_or_problem(path, lineno, rec)


# ---------------------------------------------------------------------------- dispatch


def _visible(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern)
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def _detect_dir(root: Path) -> str:
    """`jsonl` (every *.jsonl under ROOT) or `globmed` (ROOT/<lang>/<split>.json|jsonl only).

    A folder holding both language folders and JSONL files outside them is refused: reading
    either layout alone would drop the other's files without a word (a folder with 3,885
    top-level items and `en/extra.jsonl` was read as GlobMed: 1 item)."""
    lang_dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                 and is_valid_code(p.name)]
    jsonl = _visible(root, "*.jsonl")
    if not lang_dirs:
        return "jsonl" if jsonl else "globmed"
    in_layout = {f for d in lang_dirs for f in [*d.glob("*.json"), *d.glob("*.jsonl")]}
    outside = [f for f in jsonl if f not in in_layout]
    if not outside:
        return "globmed"
    raise DataError(
        f"mixes layouts: {len(outside)} JSONL file(s) outside language folders (e.g. "
        f"{outside[0].relative_to(root)}) and language folders ({', '.join(d.name + '/' for d in lang_dirs[:3])}); "
        "pass --format jsonl to read every *.jsonl, or --format globmed to read only ROOT/<lang>/<split>.json",
        root)


def detect_format(source: Path) -> str:
    if source.is_dir():
        return _detect_dir(source)
    suffix = source.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".json":
        return "globmed"
    # Peek at the first non-blank line: MMedBench carries answer_idx.
    with open(source, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    obj = json.loads(raw.decode("utf-8-sig"))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    return "jsonl"
                return "mmedbench" if isinstance(obj, dict) and "answer_idx" in obj else "jsonl"
    return "jsonl"


def _guarded(path: Path, reader: Any, defaults: Defaults) -> Iterator[Record]:
    """One file found inside a folder: what cannot be read is a bad record, not a traceback."""
    if path.is_symlink() and not path.exists():
        yield _bad(path, None, "a dangling symbolic link (or a link loop)")
        return
    if path.is_dir():
        yield _bad(path, None, "a folder named like a data file; not read")
        return
    if not path.is_file():
        yield _bad(path, None, "not a regular file (a FIFO, device or socket); not read")
        return
    try:
        yield from reader(path, defaults)
    except OSError as exc:
        yield _bad(path, None, f"cannot be read ({exc.strerror or exc})")


def read(
    source: str | Path,
    fmt: str = "auto",
    *,
    defaults: Defaults = Defaults(),
    mapping: CsvMapping | None = None,
) -> Iterator[Record]:
    """Records from one file or directory in any supported layout."""
    source = Path(source)
    if not source.exists():
        raise DataError("no such file or directory" + (" (a dangling symbolic link)" if source.is_symlink() else ""),
                        source)
    if not source.is_dir() and not source.is_file():  # a FIFO would hang, /dev/zero never ends
        raise DataError("not a regular file or folder (a FIFO, device or socket)", source)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "auto":
        try:
            fmt = detect_format(source)
        except OSError as exc:
            raise DataError(f"cannot be read ({exc.strerror or exc})", source) from None
    if fmt == "jsonl":
        files = sorted(source.rglob("*.jsonl")) if source.is_dir() else [source]
        if not files:
            raise DataError("no *.jsonl files found", source)
        for f in files:
            yield from _guarded(f, read_jsonl, defaults)
    elif fmt == "globmed":
        if source.is_dir():
            yield from read_globmed(source, defaults)
        else:
            yield from _guarded(source, read_globmed_file, defaults)
    elif fmt == "mmedbench":
        files = sorted(source.rglob("*.jsonl")) if source.is_dir() else [source]
        for f in files:
            yield from _guarded(f, read_mmedbench, defaults)
    else:
        if source.is_dir():
            raise DataError("csv format needs a file, not a directory", source)
        try:
            yield from read_csv(source, mapping or CsvMapping(), defaults)
        except OSError as exc:
            yield _bad(source, None, f"cannot be read ({exc.strerror or exc})")


def iter_items(
    sources: Iterable[str | Path],
    *,
    fmt: str = "auto",
    defaults: Defaults = Defaults(),
    mapping: CsvMapping | None = None,
) -> Iterator[Item]:
    """Items from many sources; the first bad record raises DataError with file and line."""
    for source in sources:
        for rec in read(source, fmt, defaults=defaults, mapping=mapping):
            if rec.problem is not None:
                raise DataError(rec.problem.reason, rec.problem.path, rec.problem.line)
            assert rec.item is not None
            yield rec.item
