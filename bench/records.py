"""Typed, versioned result records, written as JSON lines and read back tolerantly.

Record types (field `type`), each with `schema_version`:

* `accuracy`   one build x device x task x language: accuracy (letter and text rules), n, Wilson
               95% CI, extraction failures (generate mode) and the per-item predictions and
               option log-likelihoods that drift and every report number are re-derived from.
* `drift`      one build x reference x device x task x language (computed from two accuracy records).
* `throughput` one build x device x thread policy: prefill/decode tokens/s, TTFT, peak memory,
               the machine's load during the timed runs, the model's KV-cache shape, the logits the
               runtime keeps per prompt token and the chat's context length (for the memory
               estimate), optionally a long-conversation run's
               peak memory, and the hardware profile.

Schema 2 added optional fields (the build's parity summary; throughput load, KV shape and the
long run); schema 1 records still read, with those fields empty.

`ResultsFile.append` writes one line, flushes and fsyncs it, so a killed run loses at most the
record being written. Reading skips a truncated (unterminated, undecodable) last line and keeps
the first record of any duplicated key, so a resumed run never redoes or double-counts work.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from globmed_edge.errors import DataError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class BuildInfo:
    """What a report needs to know about a build, read from its manifest (or its files)."""

    name: str
    path: str
    format: str
    quantization: str
    size_bytes: int
    bits_per_weight: float | None = None
    parity_passed: bool | None = None  # the exporter's parity check against the source (manifest)
    parity_top1: float | None = None
    parity_mean_kl: float | None = None
    unverified: bool = False  # run with --unverified: no valid manifest, its files were not checked


@dataclass(frozen=True)
class AccuracyRecord:
    type: ClassVar[str] = "accuracy"
    build: BuildInfo
    device: str
    task: str  # e.g. "mcq-loglik-0shot"
    lang: str
    datasets: tuple[str, ...]
    split: str
    items_hash: str  # sha256 of the sorted item ids scored: part of the resume key
    n: int
    correct_letter: int
    correct_text: int
    accuracy: float  # the headline rule: letter (loglik) or extracted answer (generate)
    accuracy_text: float | None
    ci_low: float
    ci_high: float
    extraction_failures: int | None = None  # generate mode only
    item_ids: tuple[str, ...] = ()
    gold: tuple[str, ...] = ()
    pred: tuple[str, ...] = ()  # "" = no answer extracted (generate mode)
    pred_text: tuple[str, ...] = ()
    letter_logprobs: tuple[tuple[float, ...], ...] = ()
    seconds: float = 0.0
    host: str = ""
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def key(self) -> tuple[str, ...]:
        return self.key_for(self.build.name, self.device, self.task, self.lang, self.items_hash)

    @classmethod
    def key_for(cls, build: str, device: str, task: str, lang: str, items_hash: str) -> tuple[str, ...]:
        """The resume key of the record these would make (a run skips keys already written)."""
        return (cls.type, build, device, task, lang, items_hash)


@dataclass(frozen=True)
class DriftRecord:
    type: ClassVar[str] = "drift"
    build: str
    reference: str
    device: str
    task: str
    lang: str
    n: int
    accuracy: float
    reference_accuracy: float
    delta: float  # accuracy - reference accuracy
    flips: int  # items whose correctness differs
    flip_rate: float
    right_to_wrong: int
    wrong_to_right: int
    mcnemar_p: float
    top1_agreement: float
    mean_kl: float | None  # None when there are no option log-likelihoods (generate mode)
    resolves_2pt: bool  # False: n too small to resolve a 2-point accuracy change
    items_hash: str = ""
    schema_version: int = SCHEMA_VERSION

    def key(self) -> tuple[str, ...]:
        return (self.type, self.build, self.reference, self.device, self.task, self.lang, self.items_hash)


@dataclass(frozen=True)
class ThroughputRecord:
    type: ClassVar[str] = "throughput"
    build: BuildInfo
    device: str
    threads: int | str | None  # a count, "auto" (the chat's policy) or None (the runtime's default)
    prompt_tokens: int
    new_tokens: int
    repeats: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    ttft_s: float
    peak_rss_bytes: int
    cuda_peak_allocated_bytes: int | None = None
    cuda_reserved_bytes: int | None = None
    runs: tuple[dict[str, float], ...] = ()  # every repeat, for the medians to be re-derived
    hardware: dict[str, Any] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)  # other programs' CPU use during the timed runs
    context_tokens: int | None = None  # the context length the chat opens this build with
    kv_bytes_per_token: int | None = None  # K and V of every layer for one token
    kv_preallocated: bool | None = None  # True: the runtime allocates (and touches) the whole KV cache at load
    logits_bytes_per_token: int | None = None  # prefill keeps logits for every prompt position (0: last only)
    long_prompt_tokens: int | None = None  # the long-conversation run (--long-context)
    long_peak_rss_bytes: int | None = None
    host: str = ""
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def key(self) -> tuple[str, ...]:
        return self.key_for(self.build.name, self.device, self.threads)

    @classmethod
    def key_for(cls, build: str, device: str, threads: int | str | None) -> tuple[str, ...]:
        """The resume key of the record these would make (a run skips keys already written)."""
        return (cls.type, build, device, str(threads))


Record = AccuracyRecord | DriftRecord | ThroughputRecord
RECORD_TYPES: dict[str, type[Any]] = {c.type: c for c in (AccuracyRecord, DriftRecord, ThroughputRecord)}


def to_dict(rec: Record) -> dict[str, Any]:
    return {"type": rec.type, **asdict(rec)}


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def from_dict(data: Any, where: str = "record") -> Record:
    if not isinstance(data, dict):
        raise DataError(f"{where}: a record must be a JSON object")
    kind = data.get("type")
    if kind not in RECORD_TYPES:
        raise DataError(f"{where}: unknown record type {kind!r} (known: {', '.join(RECORD_TYPES)})")
    if data.get("schema_version") not in READABLE_VERSIONS:
        raise DataError(f"{where}: schema_version {data.get('schema_version')!r} is not supported "
                        f"(readable: {', '.join(map(str, READABLE_VERSIONS))})")
    cls = RECORD_TYPES[kind]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known - {"type"})
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)} in a {kind} record")
    kwargs = {k: (v if k in ("hardware", "load") else _tuples(v)) for k, v in data.items() if k != "type"}
    runs = data.get("runs")
    if kind == "throughput" and isinstance(runs, list) and all(isinstance(r, dict) for r in runs):
        kwargs["runs"] = tuple(dict(r) for r in runs)  # anything else is refused by _check_types
    if "build" in kwargs and isinstance(data["build"], dict):
        build_keys = {f.name for f in fields(BuildInfo)}
        bad = sorted(set(data["build"]) - build_keys)
        if bad:
            raise DataError(f"{where}: unknown key(s) {', '.join(bad)} in the build of a {kind} record")
        try:
            kwargs["build"] = BuildInfo(**data["build"])
        except TypeError as exc:
            raise DataError(f"{where}: bad build in a {kind} record ({exc})") from None
    try:
        rec = cls(**kwargs)
    except TypeError as exc:
        raise DataError(f"{where}: bad {kind} record ({exc})") from None
    _check_types(rec, where)
    return rec


def _type_ok(value: Any, hint: Any) -> bool:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (types.UnionType, typing.Union):
        return any(_type_ok(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):  # JSON has one number type; never a bool, never a string
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, tuple) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _type_ok(v, args[1]) for k, v in value.items())
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _check_types(rec: Any, where: str) -> None:
    """Every field of a record read back has its declared type, and an accuracy record adds up:
    a report must fail on a bad line with its place, not with a traceback or a wrong number."""
    import json as _json
    import typing

    for obj in (rec, getattr(rec, "build", None)):
        if obj is None or isinstance(obj, str):
            continue
        hints = typing.get_type_hints(type(obj))
        for f in fields(obj):
            value = getattr(obj, f.name)
            if not _type_ok(value, hints[f.name]):
                shown = _json.dumps(value, default=str)[:40]
                owner = "build." if obj is not rec else ""
                raise DataError(f"{where}: {owner}{f.name} must be {hints[f.name]}, not {shown}".replace("typing.", ""))
    if isinstance(rec, AccuracyRecord):
        n = rec.n
        per_item = {"item_ids": rec.item_ids, "gold": rec.gold, "pred": rec.pred, "pred_text": rec.pred_text,
                    "letter_logprobs": rec.letter_logprobs}
        wrong = [k for k, v in per_item.items() if len(v) not in (0, n)]
        if n < 0 or not 0 <= rec.correct_letter <= max(n, 0) or wrong:
            raise DataError(f"{where}: inconsistent accuracy record (n={n}, correct_letter={rec.correct_letter}"
                            + (f", {wrong[0]} has {len(per_item[wrong[0]])} entries" if wrong else "") + ")")
        expected = rec.correct_letter / n if n else 0.0
        if abs(rec.accuracy - expected) > 1e-6:
            raise DataError(f"{where}: inconsistent accuracy record (accuracy {rec.accuracy} but "
                            f"{rec.correct_letter} of {n} correct)")


def iter_records(path: Path) -> Iterator[Record]:
    """Records of one results file; a truncated last line (a killed run) is skipped, others raise."""
    path = Path(path)
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = i == len(lines)  # no newline after it: the write was interrupted
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            if last:
                continue
            raise DataError("not a JSON record", path, i) from None
        yield from_dict(data, f"{path}:{i}")


def merge(paths: Iterable[Path]) -> list[Record]:
    """Records of several files (several machines), first occurrence of each key kept."""
    seen: set[tuple[str, ...]] = set()
    out: list[Record] = []
    for p in paths:
        for rec in iter_records(p):
            if rec.key() not in seen:
                seen.add(rec.key())
                out.append(rec)
    return out


def _mark_unverified(rec: Record) -> Record:
    """A record of a build the user ran with --unverified says so (see globmed_edge.trust)."""
    from dataclasses import replace

    from globmed_edge.trust import is_waived

    build = getattr(rec, "build", None)
    if isinstance(build, BuildInfo) and not build.unverified and is_waived(build.path):
        return replace(rec, build=replace(build, unverified=True))  # type: ignore[arg-type]
    return rec


class ResultsFile:
    """Append-only JSON-lines results file that knows which keys it already holds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:  # before any scoring: a read-only --out failed only after a whole language was scored
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):
                pass
        except OSError as exc:
            raise DataError(f"cannot write results here ({exc.strerror or exc})", self.path) from None
        self.records: list[Record] = merge([self.path]) if self.path.is_file() else []
        self.keys = {r.key() for r in self.records}
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Make the next append start on a fresh line.

        A last line without its newline is cut only when it does not parse (an interrupted
        write); a complete record that merely lacks the newline (a file edited by hand, or
        joined with `cat`) is kept and the newline added, since its key was already loaded."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            try:
                json.loads(data[cut:].decode("utf-8"))
                whole = True
            except (ValueError, UnicodeDecodeError):
                whole = False
            with open(self.path, "r+b") as fh:
                if whole:
                    fh.seek(0, os.SEEK_END)
                    fh.write(b"\n")
                else:
                    fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def append(self, rec: Record) -> bool:
        """Write `rec` durably unless its key is already there; True when written."""
        if rec.key() in self.keys:
            return False
        rec = _mark_unverified(rec)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(to_dict(rec), ensure_ascii=False, allow_nan=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.keys.add(rec.key())
        self.records.append(rec)
        return True

    def set_aside(self, match: Callable[[Record], bool], stamp: str) -> tuple[int, Path | None]:
        """`bench run --force`: move the records `match` picks out of this file, into
        `<file>.replaced-<stamp>.jsonl` beside it (nothing is lost), so they are measured again.
        The aside file is written first and the results file then replaced atomically; lines
        that do not parse stay where they are. Returns (records moved, the aside file)."""
        from globmed_edge.atomic import atomic_write_text

        keep: list[str] = []
        moved: list[str] = []
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                rec = from_dict(json.loads(line), str(self.path))
            except (ValueError, DataError):
                keep.append(line)
                continue
            (moved if match(rec) else keep).append(line)
        if not moved:
            return 0, None
        aside = self.path.with_name(f"{self.path.name}.replaced-{stamp}.jsonl")
        atomic_write_text(aside, "".join(moved))
        atomic_write_text(self.path, "".join(keep))
        self.records = merge([self.path])
        self.keys = {r.key() for r in self.records}
        return len(moved), aside
