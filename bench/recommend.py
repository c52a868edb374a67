"""Which build goes to a clinic: the decision rule, computed only from result records.

`recommend(records, ram_gb=4, langs=("sw", "en"), margin=2.0)` returns a `Recommendation`: the
chosen build (or none, with the least-bad one and its loss) and one line of reasoning per build.
`bench recommend`, the report, and later `bundle create --from-results` and the chat picker all
call this one function, so they cannot disagree. The rule (docs/bench.md, "How a build is
recommended"):

1. Accuracy, per requested language, on the paired items of the build and the reference:
   Newcombe's 95% interval for (build - reference) accuracy (`stats.paired_diff_ci`).
   *non-inferior* when its lower bound is above -margin; *inferior* when its upper bound is below
   0 (the build is measurably worse); otherwise *too few items*, with the items that would
   resolve the margin if the observed flip rates held. An inferior language excludes the build.
2. Fidelity decides where accuracy cannot: for a build whose acceptance rests on a language with
   too few items, or whose reference answers near chance or one letter for nearly everything,
   the answer-distribution KL (mean over the requested languages) must not be far above another
   eligible build's (more than FIDELITY_RATIO times and by more than FIDELITY_GAP nats), and its
   exporter's parity check must not have failed.
3. Memory: peak RSS measured by `bench run --throughput`, plus the KV cache of a conversation
   at the chat's context length when the runtime grows its cache (llama.cpp allocates its
   whole cache at load, so the measured RSS holds it) and the logits a prefill of that context
   keeps when the runtime keeps every position's (ONNX, transformers), or the peak RSS of a measured
   long-conversation run when that is larger, plus the headroom, must fit the tier. A build
   without a throughput record is *not timed*: its memory is unknown, so it is not recommended.
4. Among the builds left, the fastest decode wins; speeds within a factor of 2 (SPEED_NOISE) or
   with overlapping run ranges are equal, and a speed from an unreliable run (spread or machine
   load) only counts beyond a factor of 4. Equal
   speeds go to the smaller memory need (within MEMORY_NOISE: equal), then to the lower KL
   (within KL_NOISE or KL_FLOOR: equal), then to the smaller file. Accuracy point estimates never decide.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence, Set
from dataclasses import asdict, dataclass, field
from typing import Any

from globmed_edge.bench.records import AccuracyRecord, DriftRecord, Record, ThroughputRecord
from globmed_edge.bench.stats import items_to_resolve, kl_divergence, paired_diff_ci, wilson
from globmed_edge.errors import DataError
from globmed_edge.languages import lookup
from globmed_edge.mcq.scorer import chance_level, softmax

GiB = 1024**3
MiB = 1024**2
TIERS = (4, 8, 16)
DEFAULT_MARGIN = 2.0  # accuracy points
DEFAULT_HEADROOM_GB = 1.5
DEGENERATE_SHARE = 0.9  # one letter for at least this share of the items
FIDELITY_RATIO = 4.0
FIDELITY_GAP = 0.02  # nats
# Speeds within a factor of 2 are equal: on the 2-core VM the same GGUF builds decoded 103.7 / 70.8
# tok/s (q8_0 / q4_k_m) in one demo run and 74.9 / 106.6 in the next, 20 minutes later, with other
# programs at 1-2% of the CPUs during the timed runs; each build is timed once, in its own child.
SPEED_NOISE = 0.5
UNRELIABLE_NOISE = 0.75  # an unreliable record's speed only counts beyond a factor of 4
MEMORY_NOISE = 0.05
# Answer KLs within 10%, or 0.005 nats, of each other are equal. The floor is arithmetic, not
# quantization: the same weights up to bfloat16 rounding (Qwen2.5-Coder-1.5B's packaged Q4_K_M
# in llama.cpp, and its dequantized folder in torch bfloat16) differ by 0.0016 nats over 8
# languages (2026-12-04), so a difference of a few thousandths says nothing about which build
# lost less.
KL_NOISE, KL_FLOOR = 0.10, 0.005
UNRELIABLE_SPREAD = 0.25  # (max - min) / median of the timed decode runs
UNRELIABLE_LOAD = 0.25  # other programs' share of the machine's CPUs during the timed runs
REFERENCE_QUANTS = ("f32", "fp32", "float32", "f16", "fp16", "float16", "bf16", "bfloat16")

NON_INFERIOR, INFERIOR, TOO_FEW, NOT_BENCHED = "non-inferior", "inferior", "too few items", "not benched"
REFERENCE = "reference"


@dataclass(frozen=True)
class AnswerSpread:
    """How concentrated a build's predicted letters are in one language, against the gold."""

    top_letter: str
    top_share: float  # share of items predicted `top_letter`
    gold_share: float  # share of items whose gold answer is `top_letter`
    gold_max_share: float  # the most frequent gold letter's share
    degenerate: bool  # top_share >= DEGENERATE_SHARE while the gold is not that concentrated


@dataclass(frozen=True)
class LangVerdict:
    lang: str
    verdict: str  # NON_INFERIOR / INFERIOR / TOO_FEW / NOT_BENCHED
    n: int = 0
    delta: float = 0.0  # build - reference accuracy (fraction)
    ci_low: float = 0.0
    ci_high: float = 0.0
    right_to_wrong: int = 0
    wrong_to_right: int = 0
    items_needed: int | None = None  # TOO_FEW: items that would resolve the margin (None: cannot)
    mean_kl: float | None = None  # KL(reference || build) of the answer distribution, nats
    top1_agreement: float | None = None
    accuracy: float = 0.0
    accuracy_text: float | None = None
    reference_accuracy: float = 0.0
    spread: AnswerSpread | None = None
    reference_weak: bool = False  # the reference is near chance or degenerate here

    def cell(self, margin: float) -> str:
        """Compact text for the verdict table."""
        if self.verdict == NOT_BENCHED:
            return "not benched"
        if self.verdict == REFERENCE:
            return "reference"
        d = f"{100 * self.delta:+.1f} [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}]"
        if self.verdict == NON_INFERIOR:
            return f"OK {d}"
        if self.verdict == INFERIOR:
            return f"WORSE {d}"
        need = f"~{self.items_needed} items" if self.items_needed else "cannot resolve"
        return f"? {d} ({need})"


@dataclass(frozen=True)
class Memory:
    peak_rss_bytes: int | None = None
    kv_bytes: int | None = None  # the KV cache at the chat's context length (None: shape unknown)
    kv_counted: bool = False  # True: already inside the measured peak RSS (preallocated cache)
    context_tokens: int | None = None
    long_peak_rss_bytes: int | None = None
    long_prompt_tokens: int | None = None
    chat_bytes: int | None = None  # the estimate the tier check uses, before headroom
    need_bytes: int | None = None  # chat_bytes + headroom
    logits_bytes: int = 0  # logits a prefill of the whole context keeps (every position: ONNX, transformers)

    def describe(self, headroom_gb: float) -> str:
        if self.peak_rss_bytes is None or self.need_bytes is None:
            return "not timed (no throughput record: memory and speed unknown)"
        parts = [f"peak RSS {self.peak_rss_bytes / MiB:.0f} MiB"]
        if self.kv_bytes is None:
            parts.append("KV cache unknown (record has no model shape)")
        elif self.kv_counted:
            parts.append(f"KV cache {self.kv_bytes / MiB:.0f} MiB at {self.context_tokens} tokens already in it")
        else:
            parts.append(f"+ KV cache {self.kv_bytes / MiB:.0f} MiB at {self.context_tokens} tokens")
        if self.logits_bytes:
            parts.append(f"+ prefill logits {self.logits_bytes / MiB:.0f} MiB")
        if self.long_peak_rss_bytes:
            parts.append(f"measured {self.long_peak_rss_bytes / MiB:.0f} MiB after a "
                         f"{self.long_prompt_tokens}-token conversation")
        parts.append(f"+ {headroom_gb:g} GiB headroom = {self.need_bytes / GiB:.2f} GiB")
        return ", ".join(parts)


@dataclass(frozen=True)
class Speed:
    decode_tokens_per_s: float
    low: float  # slowest timed run
    high: float  # fastest timed run
    spread: float  # (high - low) / median
    threads: str
    other_cpu_share: float | None  # None: load not recorded (schema 1 record)
    unreliable: tuple[str, ...] = ()

    def describe(self) -> str:
        load = "load not recorded" if self.other_cpu_share is None else \
            f"other programs {100 * self.other_cpu_share:.0f}% of the CPUs"
        text = (f"decode {self.decode_tokens_per_s:.1f} tok/s (runs {self.low:.1f}-{self.high:.1f}, "
                f"threads {self.threads}, {load})")
        return text + (f" UNRELIABLE: {'; '.join(self.unreliable)}" if self.unreliable else "")


@dataclass(frozen=True)
class BuildAssessment:
    name: str
    size_bytes: int
    is_reference: bool
    verdicts: tuple[LangVerdict, ...]
    mean_kl: float | None  # mean over the requested languages (0 for the reference)
    parity_passed: bool | None
    memory: Memory
    speed: Speed | None
    fits: bool | None  # None: not timed
    status: str  # "chosen", "not chosen" (acceptable), "excluded", "not timed", "does not fit"
    reason: str  # one line: why this status

    @property
    def worst(self) -> LangVerdict | None:
        benched = [v for v in self.verdicts if v.verdict not in (NOT_BENCHED, REFERENCE)] or \
            [v for v in self.verdicts if v.verdict == REFERENCE]
        return min(benched, key=lambda v: v.delta, default=None)


@dataclass(frozen=True)
class Recommendation:
    ram_gb: float
    langs: tuple[str, ...]
    margin: float  # points
    headroom_gb: float
    reference: str
    task: str
    choice: str | None
    least_bad: str | None  # when nothing is acceptable: the build that loses least
    summary: str
    builds: tuple[BuildAssessment, ...] = field(default_factory=tuple)
    choice_path: str | None = None  # where the chosen build was benched (its records' path)

    def reasons(self) -> list[str]:
        return [f"{b.name}: {b.status}: {b.reason}" for b in self.builds]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (NaN, which JSON lacks, becomes null)."""
        return _clean(asdict(self))


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# ------------------------------------------------------------------------------ per language

def answer_spread(rec: AccuracyRecord) -> AnswerSpread | None:
    preds = [p for p in rec.pred if p]
    if not preds or not rec.gold:
        return None
    letter, count = Counter(preds).most_common(1)[0]
    golds = Counter(rec.gold)
    top, gold_share, gold_max = count / len(rec.pred), golds[letter] / len(rec.gold), max(golds.values()) / len(rec.gold)
    return AnswerSpread(letter, top, gold_share, gold_max, top >= DEGENERATE_SHARE and gold_max < DEGENERATE_SHARE)


def chance(rec: AccuracyRecord) -> float:
    """Accuracy of guessing: the mean of 1 / number of options (4 options when not recorded)."""
    return chance_level(rec.letter_logprobs)


def reference_weak(ref: AccuracyRecord) -> bool:
    """The reference answers near chance (chance inside its 95% interval) or one letter for
    nearly everything: its accuracy cannot tell builds apart there."""
    spread = answer_spread(ref)
    low, high = wilson(ref.correct_letter, ref.n)
    return (spread is not None and spread.degenerate) or low <= chance(ref) <= high


def compare(rec: AccuracyRecord, ref: AccuracyRecord, margin: float) -> LangVerdict:
    """The paired non-inferiority verdict of `rec` against `ref` in one language (margin in points)."""
    if rec.items_hash != ref.items_hash or sorted(rec.item_ids) != sorted(ref.item_ids):
        raise DataError(f"{rec.build.name} and {ref.build.name} ({rec.lang}) were scored on different items")
    pos = {item_id: i for i, item_id in enumerate(ref.item_ids)}
    both = only_b = only_r = neither = agree = 0
    kls: list[float] = []
    for i, item_id in enumerate(rec.item_ids):
        j = pos[item_id]
        ok, ref_ok = rec.pred[i] == rec.gold[i], ref.pred[j] == ref.gold[j]
        both += ok and ref_ok
        only_b += ok and not ref_ok
        only_r += ref_ok and not ok
        neither += not ok and not ref_ok
        agree += rec.pred[i] == ref.pred[j] and rec.pred[i] != ""
        if rec.letter_logprobs and ref.letter_logprobs:
            kls.append(kl_divergence(softmax(ref.letter_logprobs[j]), softmax(rec.letter_logprobs[i])))
    m = margin / 100
    delta, low, high = paired_diff_ci(both, only_b, only_r, neither)
    if low > -m:
        verdict, needed = NON_INFERIOR, None
    elif high < 0:
        verdict, needed = INFERIOR, None
    else:
        verdict, needed = TOO_FEW, items_to_resolve(both, only_b, only_r, neither, m)
    n = rec.n
    return LangVerdict(rec.lang, verdict, n, delta, low, high, only_r, only_b, needed,
                       sum(kls) / len(kls) if kls else None, agree / n if n else None, rec.accuracy,
                       rec.accuracy_text, ref.accuracy, answer_spread(rec), reference_weak(ref))


# ------------------------------------------------------------------------------ memory and speed

def _cpu_throughputs(records: Sequence[Record], name: str) -> list[ThroughputRecord]:
    return [r for r in records if isinstance(r, ThroughputRecord) and r.device == "cpu" and r.build.name == name]


def memory_of(tps: Sequence[ThroughputRecord], headroom_gb: float) -> Memory:
    """The RAM a build needs in the chat: the largest of its CPU records' estimates."""
    best: Memory | None = None
    for t in tps:
        kv = t.kv_bytes_per_token * t.context_tokens if t.kv_bytes_per_token and t.context_tokens else None
        logits = t.logits_bytes_per_token * t.context_tokens if t.logits_bytes_per_token and t.context_tokens else 0
        counted = bool(t.kv_preallocated)
        chat = t.peak_rss_bytes + (kv if kv and not counted else 0) + logits
        chat = max(chat, t.long_peak_rss_bytes or 0)
        m = Memory(t.peak_rss_bytes, kv, counted, t.context_tokens, t.long_peak_rss_bytes, t.long_prompt_tokens,
                   chat, chat + int(headroom_gb * GiB), logits)
        if best is None or (m.need_bytes or 0) > (best.need_bytes or 0):
            best = m
    return best or Memory()


def speed_of(tps: Sequence[ThroughputRecord]) -> Speed | None:
    """Decode speed from the record the chat's thread policy made ("auto"), else the first."""
    if not tps:
        return None
    t = next((r for r in tps if r.threads == "auto"), None) or sorted(tps, key=lambda r: str(r.threads))[0]
    runs = [float(r["decode_tokens_per_s"]) for r in t.runs if not math.isnan(float(r["decode_tokens_per_s"]))]
    med = t.decode_tokens_per_s
    low, high = (min(runs), max(runs)) if runs else (med, med)
    spread = (high - low) / med if med > 0 else math.inf
    share = t.load.get("other_cpu_share") if t.load else None
    flags = []
    if spread > UNRELIABLE_SPREAD:
        flags.append(f"runs spread {100 * spread:.0f}% of the median")
    if share is not None and share > UNRELIABLE_LOAD:
        flags.append(f"other programs used {100 * share:.0f}% of the CPUs")
    used = sorted({int(r["threads_used"]) for r in t.runs if "threads_used" in r})
    threads = str(t.threads or "default") + (f" (used {'/'.join(map(str, used))})" if t.threads == "auto" and used else "")
    return Speed(med, low, high, spread, threads, share, tuple(flags))


def speed_tied(a: Speed, b: Speed) -> bool:
    """Equal within noise: overlapping run ranges, or within SPEED_NOISE; with an unreliable record
    on either side, anything within a factor of 1 / (1 - UNRELIABLE_NOISE)."""
    fast, slow = (a, b) if a.decode_tokens_per_s >= b.decode_tokens_per_s else (b, a)
    noise = UNRELIABLE_NOISE if a.unreliable or b.unreliable else SPEED_NOISE
    return slow.high >= fast.low or slow.decode_tokens_per_s >= (1 - noise) * fast.decode_tokens_per_s


# ------------------------------------------------------------------------------ the decision

def task_of(records: Sequence[Record], task: str | None = None) -> tuple[str, str]:
    """(task, device) of the accuracy records to decide on: `task` if given, CPU first."""
    pairs = sorted({(r.task, r.device) for r in records if isinstance(r, AccuracyRecord)},
                   key=lambda p: (p[1] != "cpu", p))
    if task is not None:
        pairs = [p for p in pairs if p[0] == task]
        if not pairs:
            known = sorted({r.task for r in records if isinstance(r, AccuracyRecord)})
            raise DataError(f"task {task!r} has no accuracy records (tasks: {', '.join(known) or 'none'})")
    if not pairs:
        raise DataError("no accuracy records to recommend from")
    return pairs[0]


def reference_of(records: Sequence[Record], names: Sequence[str], reference: str | None = None) -> str:
    """The reference build: `reference`, else the one the drift records name, else the only
    unquantized build (an HF folder or an f16/bf16/f32 build)."""
    if reference is not None:
        if reference not in names:
            raise DataError(f"reference build {reference!r} has no accuracy records (builds: {', '.join(names)})")
        return reference
    refs = Counter(r.reference for r in records if isinstance(r, DriftRecord) and r.reference in names)
    if refs:
        return refs.most_common(1)[0][0]
    infos = {r.build.name: r.build for r in records if isinstance(r, AccuracyRecord)}
    plain = sorted(n for n in names if infos[n].format == "hf" or infos[n].quantization.lower() in REFERENCE_QUANTS)
    if len(plain) == 1:
        return plain[0]
    raise DataError(f"cannot tell which build is the reference ({', '.join(plain or names)}): "
                    "pass --reference NAME")


def recommend(records: Sequence[Record], *, ram_gb: float, langs: Sequence[str] | None = None,
              margin: float = DEFAULT_MARGIN, headroom_gb: float = DEFAULT_HEADROOM_GB,
              reference: str | None = None, task: str | None = None) -> Recommendation:
    """The build to ship to a clinic with `ram_gb` GiB of RAM that speaks `langs` (default: every
    language in the records), by the rule in this module's docstring."""
    if ram_gb <= 0:
        raise DataError(f"ram_gb={ram_gb:g}: must be positive")
    if not margin > 0:
        raise DataError(f"margin={margin:g}: must be a positive number of accuracy points")
    task_name, device = task_of(records, task)
    acc = [r for r in records if isinstance(r, AccuracyRecord) and r.task == task_name and r.device == device]
    cell = {(r.build.name, r.lang): r for r in acc}
    infos = {r.build.name: r.build for r in acc}
    names = sorted(infos)
    ref = reference_of(records, names, reference)
    have = sorted({lang for b, lang in cell if b == ref})
    wanted = tuple(dict.fromkeys(langs)) if langs else tuple(have)
    missing = [lang for lang in wanted if lang not in have]
    if missing:
        raise DataError(f"language {missing[0]!r} has no {task_name} records for the reference {ref} "
                        f"(languages: {', '.join(have)})")

    prelim: dict[str, tuple[tuple[LangVerdict, ...], float | None, Memory, Speed | None, int]] = {}
    for name in names:
        found: list[LangVerdict] = []
        for lang in wanted:
            if (name, lang) not in cell:
                found.append(LangVerdict(lang, NOT_BENCHED))
            elif name == ref:
                r = cell[name, lang]
                found.append(LangVerdict(lang, REFERENCE, r.n, 0.0, 0.0, 0.0, 0, 0, None, 0.0, 1.0, r.accuracy,
                                            r.accuracy_text, r.accuracy, answer_spread(r), reference_weak(r)))
            else:
                found.append(compare(cell[name, lang], cell[ref, lang], margin))
        kls = [v.mean_kl for v in found if v.mean_kl is not None]
        tps = _cpu_throughputs(records, name)
        prelim[name] = (tuple(found), sum(kls) / len(kls) if len(kls) == len(wanted) else None,
                        memory_of(tps, headroom_gb), speed_of(tps), infos[name].size_bytes)

    tier_bytes = ram_gb * GiB
    status: dict[str, tuple[str, str]] = {}
    eligible: list[str] = []
    for name, (verdicts, _kl, mem, _speed, _size) in prelim.items():
        bad = [v for v in verdicts if v.verdict == INFERIOR]
        absent = [v.lang for v in verdicts if v.verdict == NOT_BENCHED]
        if absent:
            status[name] = ("excluded", f"not benched in {', '.join(absent)}")
        elif bad:
            status[name] = ("excluded", "inferior to the reference in " + ", ".join(
                f"{v.lang} ({100 * v.delta:+.1f} points, 95% CI {100 * v.ci_low:+.1f} to {100 * v.ci_high:+.1f})"
                for v in bad))
        elif mem.need_bytes is None:
            status[name] = ("not timed", "no throughput record, so its memory and speed are unknown "
                            "(bench run --throughput)")
        elif mem.need_bytes > tier_bytes:
            status[name] = ("does not fit", f"needs {mem.need_bytes / GiB:.2f} GiB > {ram_gb:g} GiB")
        else:
            eligible.append(name)

    def rests_on_fidelity(name: str) -> bool:
        return name != ref and any(v.verdict == TOO_FEW or v.reference_weak for v in prelim[name][0])

    acceptable = []
    for name in eligible:
        verdicts, kl, _mem, _speed, _size = prelim[name]
        if not rests_on_fidelity(name):
            acceptable.append(name)
            continue
        if infos[name].parity_passed is False:
            status[name] = ("excluded", "accuracy cannot tell and its exporter's parity check failed")
            continue
        if kl is None:
            status[name] = ("excluded", "accuracy cannot tell and there is no answer-distribution KL to judge "
                            "fidelity by (generate-mode records)")
            continue
        better = [o for o in eligible if o != name and prelim[o][1] is not None
                  and kl > FIDELITY_RATIO * prelim[o][1] and kl - prelim[o][1] > FIDELITY_GAP]  # type: ignore[operator]
        if better:
            o = min(better, key=lambda b: (b == ref, prelim[b][1]))  # name a build, not the reference, if one
            status[name] = ("excluded", f"accuracy cannot tell, and its answer-distribution KL {kl:.4f} is far "
                            f"above {o}'s {prelim[o][1]:.4f} (>{FIDELITY_RATIO:g}x and >{FIDELITY_GAP:g} nats)")
            continue
        acceptable.append(name)

    drifted = {n for n in acceptable if infos[n].parity_passed is False}  # kept with --allow-drift
    choice, why = _choose(acceptable, prelim, drifted)
    if choice is not None and rests_on_fidelity(choice):
        weak = sorted({v.lang for v in prelim[choice][0] if v.verdict == TOO_FEW or v.reference_weak})
        why += (f"; accuracy cannot tell the builds apart in {', '.join(weak)} (too few items or a reference "
                "near chance), so fidelity decided which builds were acceptable")
    for name in acceptable:
        status[name] = ("chosen", why) if name == choice else ("not chosen", _why_not(name, choice, prelim, drifted))

    builds = []
    for name in names:
        verdicts, kl, mem, speed, _size = prelim[name]
        st, reason = status[name]
        basis = _basis(verdicts, name == ref, kl)
        builds.append(BuildAssessment(
            name, infos[name].size_bytes, name == ref, verdicts, kl, infos[name].parity_passed, mem, speed,
            None if mem.need_bytes is None else mem.need_bytes <= tier_bytes, st,
            f"{reason}. {basis}; memory: {mem.describe(headroom_gb)}"
            + (f"; {speed.describe()}" if speed else "")))

    least_bad = None
    if choice is not None:
        summary = f"{choice}: {why}"
    else:
        fitting = [b for b in builds if b.fits and b.worst is not None]
        lb = max(fitting, key=lambda b: (b.worst.delta, -(b.mean_kl or 0.0)), default=None)  # type: ignore[union-attr]
        least_bad = lb.name if lb else None
        timed = any(b.fits is not None for b in builds)
        if lb is not None and lb.worst is not None:
            w = lb.worst
            summary = (f"no build is acceptable for {', '.join(wanted)} in {ram_gb:g} GiB; least bad: {lb.name}, "
                       f"which loses {-100 * w.delta:.1f} points in {w.lang} "
                       f"(95% CI {100 * w.ci_low:+.1f} to {100 * w.ci_high:+.1f})")
        elif not timed:
            summary = "no build is timed (bench run --throughput), so none can be checked against the RAM tier"
        else:
            summary = f"no benched build fits {ram_gb:g} GiB"
    return Recommendation(ram_gb, wanted, margin, headroom_gb, ref, task_name, choice, least_bad, summary,
                          tuple(builds), infos[choice].path if choice else None)


def _basis(verdicts: Sequence[LangVerdict], is_ref: bool, kl: float | None) -> str:
    if is_ref:
        return "accuracy: the reference itself"
    groups: dict[str, list[str]] = {}
    for v in verdicts:
        groups.setdefault(v.verdict, []).append(v.lang)
    text = "; ".join(f"{k} in {', '.join(ls)}" for k, ls in groups.items())
    weak = [v.lang for v in verdicts if v.reference_weak]
    if weak:
        text += f" (reference near chance in {', '.join(weak)})"
    return f"accuracy: {text}; answer KL {'-' if kl is None else f'{kl:.4f}'}"


def _choose(names: Sequence[str], prelim: dict[str, Any],
            drifted: Set[str] = frozenset()) -> tuple[str | None, str]:
    if not names:
        return None, ""
    if len(names) == 1:
        return names[0], "the only acceptable build that fits"
    speed = {n: prelim[n][3] for n in names}
    fastest = max(names, key=lambda n: speed[n].decode_tokens_per_s)
    group = [n for n in names if speed_tied(speed[n], speed[fastest])]
    need = {n: prelim[n][2].need_bytes for n in group}
    if len(group) == 1:
        rest = sorted((n for n in names if n != fastest), key=lambda n: -speed[n].decode_tokens_per_s)
        return fastest, (f"acceptable in every requested language, fits, and the fastest: decode "
                         f"{speed[fastest].decode_tokens_per_s:.1f} tok/s against {rest[0]}'s "
                         f"{speed[rest[0]].decode_tokens_per_s:.1f} (more than the factor of 2 that timings vary "
                         "by between runs); once a build fits, speed is what the clinic waits on")
    smallest = min(group, key=lambda n: need[n])
    group2 = [n for n in group if need[n] <= (1 + MEMORY_NOISE) * need[smallest]]
    tied = ", ".join(sorted(n for n in group if n != smallest))
    if len(group2) == 1:
        return smallest, (f"acceptable in every requested language and fits; its speed equals {tied}'s within "
                          f"noise, and it needs the least memory ({need[smallest] / GiB:.2f} GiB)")
    kl = {n: prelim[n][1] if prelim[n][1] is not None else math.inf for n in group2}
    low = min(kl.values())
    group3 = [n for n in group2 if kl[n] <= low * (1 + KL_NOISE) + KL_FLOOR]
    others = ", ".join(sorted(n for n in group2 if n not in group3))
    if len(group3) == 1:
        best = group3[0]
        return best, (f"acceptable in every requested language and fits; speed and memory equal {others}'s within "
                      f"noise, and it is the most faithful (answer KL {kl[best]:.4f})")
    # Equal on everything measured: a build whose exporter's parity check failed (kept with
    # --allow-drift) gives way to one whose did not, then the smaller file wins.
    best = min(group3, key=lambda n: (n in drifted, prelim[n][4], n))
    passed = (" whose parity check did not fail" if best not in drifted
              and any(n in drifted and prelim[n][4] <= prelim[best][4] for n in group3) else "")
    return best, (f"acceptable in every requested language and fits; speed, memory and fidelity equal "
                  f"{', '.join(sorted(n for n in group3 if n != best))}'s within noise, and it is the smallest file"
                  f"{passed} ({prelim[best][4] / MiB:.0f} MiB)")


def _why_not(name: str, choice: str | None, prelim: dict[str, Any], drifted: Set[str] = frozenset()) -> str:
    if choice is None:
        return "acceptable"
    s, c = prelim[name][3], prelim[choice][3]
    if not speed_tied(s, c):
        return f"acceptable but slower than {choice} ({s.decode_tokens_per_s:.1f} vs {c.decode_tokens_per_s:.1f} tok/s)"
    mn, mc = prelim[name][2].need_bytes, prelim[choice][2].need_bytes
    if mn > (1 + MEMORY_NOISE) * mc:
        return f"acceptable and as fast as {choice} within noise, but needs more memory ({mn / GiB:.2f} vs {mc / GiB:.2f} GiB)"
    kn, kc = prelim[name][1], prelim[choice][1]
    if kn is not None and kc is not None and kn > kc * (1 + KL_NOISE) + KL_FLOOR:
        return f"acceptable and equal to {choice} on speed and memory within noise, but less faithful"
    if name in drifted and choice not in drifted:
        return (f"acceptable and equal to {choice} on speed, memory and fidelity within noise, but its exporter's "
                "parity check failed (kept with --allow-drift)")
    return f"acceptable and equal to {choice} on speed, memory and fidelity within noise, but a larger file"


# ------------------------------------------------------------------------------ report helpers

def language_sets(records: Sequence[Record], task: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
    """The language sets a report recommends for: all, low-resource, high-resource, each language."""
    task_name, device = task_of(records, task)
    langs = sorted({r.lang for r in records if isinstance(r, AccuracyRecord) and r.task == task_name
                    and r.device == device})
    low = tuple(lang for lang in langs if lookup(lang).is_low_resource)
    high = tuple(lang for lang in langs if not lookup(lang).is_low_resource)
    sets = [("all languages", tuple(langs))]
    if low and high:
        sets += [("low-resource", low), ("high-resource", high)]
    if len(langs) > 1:
        sets += [(f"{lang} only", (lang,)) for lang in langs]
    return sets
