"""The builds on this machine, as the picker shows them (no textual, no model loading).

Builds come from `find_builds(builds_dir())` (each with a manifest, checked for missing or
resized files here and re-hashed in full when loaded) plus the prepared embedded models. Each
carries its parity verdict and grade (globmed_edge.grade) from its manifest. Memory
is the peak RSS a `bench run --throughput` measured when a results file mentions the build (every
file `bench run` wrote is listed in the data home, paths.known_results_files), else an estimate
(file size times a per-format factor plus runtime overhead); speed comes from the same records, and
so do the measured languages: for each language `bench run` scored the build in (the record with
the most items), its accuracy and whether it is better than guessing (the lower end of its 95%
interval above the chance of the items' option counts).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Resident memory per byte of model files, by format (bf16 HF folders load as fp32 on CPU).
MEMORY_FACTOR = {"hf": 2.0, "gguf": 1.1, "onnx": 1.2, "gptq": 1.5}
RUNTIME_OVERHEAD = 300 * 2**20


@dataclass(frozen=True)
class LangResult:
    """One language's benchmark accuracy for a build (letter rule), from a bench accuracy record."""

    lang: str
    accuracy: float
    n: int
    ci_low: float
    chance: float

    @property
    def above_chance(self) -> bool:
        return self.ci_low > self.chance


@dataclass(frozen=True)
class BuildChoice:
    name: str
    path: Path
    format: str
    quantization: str
    size_bytes: int
    languages: str
    expected_memory: int
    decode_tokens_per_s: float | None = None
    problem: str | None = None  # why it cannot be loaded (manifest mismatch), shown greyed out
    parity_passed: bool | None = None  # the manifest's parity check: None when none is recorded
    grade: str = "-"  # globmed_edge.grade.parity_grade of that check
    memory_measured: bool = False  # expected_memory is a bench throughput record's peak RSS, not an estimate
    measured: tuple[LangResult, ...] = ()  # bench accuracy per language, by language code

    def language_column(self) -> str:
        """The picker's languages cell: the languages measured better than guessing, when any were
        measured ("–" when none is), else the model's declared languages."""
        if not self.measured:
            return self.languages
        return " ".join(r.lang for r in self.measured if r.above_chance) or "–"

    def measured_summary(self) -> tuple[str, dict[str, str]] | None:
        """(interface string key, its values) saying what bench measured; None when nothing was:
        `measured_langs` when some language is better than guessing, else `measured_none`."""
        if not self.measured:
            return None
        ns = sorted({r.n for r in self.measured})
        good = ", ".join(f"{r.lang} {100 * r.accuracy:.0f}%" for r in self.measured if r.above_chance)
        weak = ", ".join(r.lang for r in self.measured if not r.above_chance)
        n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
        if not good:
            return "measured_none", {"n": n, "weak": weak}
        return "measured_langs", {"n": n, "good": good, "weak": weak or "–"}

    def parity_text(self) -> str:
        """"parity pass, small loss" (or FAIL), "" when no parity check is recorded."""
        if self.parity_passed is None and self.grade == "-":
            return ""
        verdict = {True: "pass", False: "FAIL", None: "-"}[self.parity_passed]
        return f"parity {verdict}, {self.grade}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def free_memory() -> int:
    """Bytes of RAM available to a new process (psutil, else /proc/meminfo)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a core dependency
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        return 0


def expected_memory(fmt: str, size_bytes: int) -> int:
    return int(size_bytes * MEMORY_FACTOR.get(fmt, 1.5)) + RUNTIME_OVERHEAD


def _other_dtype(build: dict[str, Any]) -> bool:
    """A record of a model folder run in another torch dtype (`bench run --torch-dtype`, named
    NAME-bf16): its speed and memory are not what the chat, in the default dtype, gets."""
    from globmed_edge.backends.transformers_backend import is_dtype_variant

    name, path = build.get("name"), build.get("path")
    return (build.get("format") == "hf" and isinstance(name, str) and isinstance(path, str)
            and is_dtype_variant(name, Path(path).name))


def _records(results: Iterable[Path]) -> Iterable[dict[str, Any]]:
    """The JSON records of bench results files; unreadable files and lines are skipped."""
    for path in results:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("build"), dict):
                yield rec


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lang_result(rec: dict[str, Any]) -> LangResult | None:
    """A CPU or CUDA accuracy record as a LangResult; None when a field is missing or malformed."""
    lang, n, acc, low = rec.get("lang"), rec.get("n"), _number(rec.get("accuracy")), _number(rec.get("ci_low"))
    if not isinstance(lang, str) or not isinstance(n, int) or isinstance(n, bool) or n <= 0 or acc is None or low is None:
        return None
    from globmed_edge.mcq.scorer import chance_level

    lps = [list(lp) for lp in rec.get("letter_logprobs") or () if isinstance(lp, (list, dict))]
    return LangResult(lang, acc, n, low, chance_level(lps))


class Measured:
    """What bench records say about each build, by build path or name: the best CPU decode
    tokens/s with the peak RSS of that run, and the accuracy per language."""

    def __init__(self, results: Iterable[Path]) -> None:
        self.speed: dict[str, tuple[float, int | None]] = {}
        langs: dict[str, dict[str, LangResult]] = {}
        for rec in _records(results):
            build = rec["build"]
            keys = [str(k) for k in (build.get("path"), build.get("name")) if k]
            if _other_dtype(build):  # the chat runs the folder in its default dtype: not this record's
                keys = [str(build["name"])]
            if rec.get("type") == "throughput" and rec.get("device") == "cpu":
                tps, rss = _number(rec.get("decode_tokens_per_s")), rec.get("peak_rss_bytes")
                if tps is None:
                    continue
                peak = int(rss) if isinstance(rss, int) and not isinstance(rss, bool) and rss > 0 else None
                for key in keys:
                    if tps > self.speed.get(key, (0.0, None))[0]:
                        self.speed[key] = (tps, peak)
            elif rec.get("type") == "accuracy" and (result := _lang_result(rec)) is not None:
                for key in keys:  # the record with the most items per language; a later one on a tie
                    held = langs.setdefault(key, {}).get(result.lang)
                    if held is None or result.n >= held.n:
                        langs[key][result.lang] = result
        self.langs = {key: tuple(by_lang[k] for k in sorted(by_lang)) for key, by_lang in langs.items()}

    def of(self, *keys: str) -> tuple[tuple[float | None, int | None], tuple[LangResult, ...]]:
        """((decode tokens/s, peak RSS), languages) of the first key that has them."""
        speed: tuple[float | None, int | None] = next((self.speed[k] for k in keys if k in self.speed), (None, None))
        return speed, next((self.langs[k] for k in keys if k in self.langs), ())


def default_results_files() -> list[Path]:
    """Results files under the data home's bench/, and every one `bench run` wrote elsewhere."""
    from globmed_edge.paths import data_home, known_results_files

    return list(dict.fromkeys([*sorted((data_home() / "bench").glob("**/*.jsonl")), *known_results_files()]))


def discover_builds(roots: list[Path] | None = None, results: list[Path] | None = None,
                    include_embedded: bool = True) -> list[BuildChoice]:
    from globmed_edge.errors import ModelError
    from globmed_edge.grade import parity_grade
    from globmed_edge.manifest import find_builds, verify_build
    from globmed_edge.paths import builds_dir
    from globmed_edge.textsafe import clean_line

    measured = Measured(results if results is not None else default_results_files())
    found: list[BuildChoice] = []
    for path in find_builds(roots if roots is not None else [builds_dir()]):
        try:
            manifest, problems = verify_build(path, check_hashes=False)
        except ModelError as exc:  # a malformed manifest: listed as invalid, with its reason
            found.append(BuildChoice(clean_line(path.name), path, "?", "?", 0, "?", 0, problem=clean_line(exc)))
            continue
        langs = (manifest.source.get("languages") or manifest.extra.get("languages")
                 or _model_languages(str(manifest.source.get("id", ""))) or "?")
        if isinstance(langs, list):
            langs = ", ".join(str(x) for x in langs)
        passed = (manifest.parity or {}).get("passed")
        (tps, rss), langs_measured = measured.of(str(path), manifest.name)
        found.append(BuildChoice(
            clean_line(manifest.name), path, manifest.format, clean_line(manifest.quantization),
            manifest.size_bytes, clean_line(langs), rss or expected_memory(manifest.format, manifest.size_bytes),
            tps, problem=clean_line("; ".join(str(p) for p in problems[:2])) or None,
            parity_passed=passed if isinstance(passed, bool) else None, grade=parity_grade(manifest.parity),
            memory_measured=rss is not None, measured=langs_measured))
    if include_embedded:
        found += _embedded(measured)
    return found


def _model_languages(model_id: str) -> str | None:
    """Languages of an embedded source model (builds made from it record its name as `id`)."""
    from globmed_edge.models import MODELS

    spec = MODELS.get(model_id)
    return spec.languages if spec else None


def _embedded(measured: Measured) -> list[BuildChoice]:
    from globmed_edge.models import MODELS, prepared_path, read_record

    out = []
    for name, spec in MODELS.items():
        path = prepared_path(name)
        if read_record(path) is None:
            continue
        size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        (tps, rss), langs_measured = measured.of(str(path), name)
        out.append(BuildChoice(name, path, "hf", "bf16", size, spec.languages,
                               rss or expected_memory("hf", size), tps, memory_measured=rss is not None,
                               measured=langs_measured))
    return out


def fits_in_memory(choice: BuildChoice, free: int | None = None) -> bool:
    return choice.expected_memory <= (free_memory() if free is None else free)


#: the grades from best to worst (globmed_edge.grade); "-" is a build with no parity recorded
GRADE_ORDER = ("near-lossless", "small loss", "lossy", "-")


def best_choice(choices: Iterable[BuildChoice], free: int | None = None) -> BuildChoice | None:
    """The build to answer with when none is named (`chat --prompt` without BUILD): a verified
    build, not a source model (those run on torch, ~10x slower to load), whose parity did not fail
    and that fits in free memory; the least lossy grade first, then the fastest measured decode
    speed (unmeasured last), then the smallest. None when no build qualifies."""
    room = free_memory() if free is None else free
    ok = [c for c in choices if c.problem is None and c.format != "hf" and c.parity_passed is not False
          and c.expected_memory <= room]
    if not ok:
        return None
    return min(ok, key=lambda c: (GRADE_ORDER.index(c.grade) if c.grade in GRADE_ORDER else len(GRADE_ORDER),
                                  -(c.decode_tokens_per_s or 0.0), c.size_bytes, c.name))
