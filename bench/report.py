"""`bench report`: Markdown, self-contained HTML and PNG charts, rendered only from records.

The report is a list of sections (title, paragraphs, tables, charts); `to_markdown` and
`to_html` render the same list, so the two never disagree. Nothing in it depends on the clock or
the machine that renders it (the Markdown is golden-file tested).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from globmed_edge.atomic import atomic_write_bytes, atomic_write_text
from globmed_edge.bench.recommend import (
    DEFAULT_HEADROOM_GB,
    DEFAULT_MARGIN,
    DEGENERATE_SHARE,
    TIERS,
    TOO_FEW,
    UNRELIABLE_LOAD,
    UNRELIABLE_SPREAD,
    GiB,
    Recommendation,
    answer_spread,
    language_sets,
    memory_of,
    recommend,
    speed_of,
)
from globmed_edge.bench.records import AccuracyRecord, BuildInfo, DriftRecord, Record, merge
from globmed_edge.bench.summary import (
    accuracy_records,
    builds_in,
    drifts,
    fmt_pct,
    groups,
    summarise,
    throughputs,
)
from globmed_edge.errors import DataError
from globmed_edge.languages import lookup

MiB = 1024**2


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)  # file names


def _size(b: int) -> str:
    return f"{b / MiB:.1f}"


def _kl(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _short(name: str, names: Sequence[str]) -> str:
    from globmed_edge.bench.charts import short_names

    return short_names(list(names)).get(name, name)


def decision_sections(records: Sequence[Record], *, headroom_gb: float = DEFAULT_HEADROOM_GB,
                      margin: float = DEFAULT_MARGIN, reference: str | None = None) -> list[Section]:
    """The decision first: the recommended build per RAM tier and language set, the per-language
    verdicts it rests on, the warnings that qualify it, and the reasoning per build."""
    sets = language_sets(records)
    decisions = {(label, tier): recommend(records, ram_gb=tier, langs=langs, margin=margin,
                                          headroom_gb=headroom_gb, reference=reference)
                 for label, langs in sets for tier in TIERS}
    full = decisions[sets[0][0], TIERS[0]]
    ref, task = full.reference, full.task
    rows = []
    for label, langs in sets:
        row = [f"**{label}**" if label == sets[0][0] else label, ", ".join(langs)]
        for tier in TIERS:
            d = decisions[label, tier]
            row.append(f"**{d.choice}**" if d.choice else
                       f"none (least bad: {d.least_bad})" if d.least_bad else "none")
        rows.append(row)
    paras = [
        f"Rule (docs/bench.md, \"How a build is recommended\"): per language, a build is acceptable when its "
        f"accuracy on the same items is non-inferior to the reference **{ref}** within {margin:g} points "
        "(Newcombe's 95% interval for the paired difference lies above -margin); a language where the "
        "build is measurably worse excludes it. Where accuracy cannot tell (too few items, or a reference near "
        "chance), fidelity decides: a build whose answer-distribution KL is far above another's is not "
        "acceptable. Among the acceptable builds whose chat memory (peak RSS + KV cache at the chat's context "
        f"+ {headroom_gb:g} GiB headroom) fits the tier, the fastest decode wins; speeds and memory within "
        "noise are equal, and accuracy point estimates never decide.",
        f"Task {task}; GB here = GiB; `globmed-edge bench recommend --results ... --ram N --langs ...` gives "
        "the same decision for one clinic."]
    secs = [Section("Recommendation", paras, [Table(["language set", "languages", *[f"{t} GB" for t in TIERS]],
                                                    rows)])]
    warn = _warnings(full)
    if warn:
        secs[0].bullets += warn

    # per-language verdicts of the full language set (they do not depend on the tier)
    langs = full.langs
    names = [b.name for b in full.builds]
    vrows = []
    for b in full.builds:
        vrows.append([_short(b.name, names) + (" (reference)" if b.is_reference else ""),
                      *[v.cell(margin) for v in b.verdicts], _kl(b.mean_kl)])
    need_row = ["**items to resolve the margin**"]
    for i, _lang in enumerate(langs):
        vs = [b.verdicts[i] for b in full.builds if b.verdicts[i].verdict == TOO_FEW]
        if not vs:
            need_row.append("resolved")
        elif any(v.items_needed is None for v in vs):
            known = [v.items_needed for v in vs if v.items_needed]
            need_row.append((f"~{max(known)}; " if known else "") + "some builds: cannot")
        else:
            need_row.append(f"~{max(v.items_needed or 0 for v in vs)}")
    vrows.append([*need_row, ""])
    secs.append(Section(f"Acceptable per language (margin {margin:g} points, against {ref})", [
        "Each cell: verdict, then build minus reference accuracy in points with its 95% paired interval. "
        "OK = non-inferior; WORSE = measurably worse (excluded); ? = too few items to tell, with the items per "
        "language that would resolve the margin if the observed flip rates held. KL = mean KL(reference || "
        "build) of the answer distribution over these languages, in nats (the fidelity measure)."],
        [Table(["build", *langs, "answer KL"], vrows)]))

    why = Section("Why, per build", [f"All languages ({', '.join(langs)}); a larger tier lists only the builds "
                                     "whose status changes."])
    before: dict[str, str] = {}
    for tier in TIERS:
        d = decisions[sets[0][0], tier]
        why.bullets.append(f"**{tier} GB -> {d.choice}**" if d.choice else f"**{tier} GB -> none**: {d.summary}")
        changed = [(b, line) for b, line in zip(d.builds, d.reasons(), strict=True) if before.get(b.name) != b.status]
        why.bullets += [f"  {line}" for _b, line in changed] or ["  every build as in the tier above"]
        before = {b.name: b.status for b in d.builds}
    secs.append(why)
    return secs


def _warnings(d: Recommendation) -> list[str]:
    out = []
    ref = next(b for b in d.builds if b.is_reference)
    weak = [v.lang for v in ref.verdicts if v.reference_weak]
    if weak:
        out.append(f"The reference answers near chance or one letter for nearly everything in {', '.join(weak)}: "
                   "accuracy cannot separate builds there, so the choice rests on fidelity and speed.")
    names = [b.name for b in d.builds]
    degenerate = []
    for b in d.builds:
        langs = [v.lang for v in b.verdicts if v.spread and v.spread.degenerate]
        if langs:
            degenerate.append(f"{_short(b.name, names)} ({', '.join(langs)})")
    if degenerate:
        out.append(f"One letter for at least {100 * DEGENERATE_SHARE:.0f}% of the items (see Answer spread; top-1 "
                   f"agreement and flips are not evidence of fidelity there): {'; '.join(degenerate)}.")
    for b in d.builds:
        if b.speed and b.speed.unreliable:
            out.append(f"{b.name}: unreliable speed ({'; '.join(b.speed.unreliable)}): it counts only beyond a "
                       "factor of 4.")
    untimed = [b.name for b in d.builds if b.fits is None]
    if untimed:
        out.append(f"Not timed (no throughput record, memory unknown, not recommended): {', '.join(untimed)}.")
    return [f"Warning: {w}" for w in out]


def build_sections(records: Sequence[Record], chart_names: Sequence[str] = (), *,
                   headroom_gb: float = DEFAULT_HEADROOM_GB, margin: float = DEFAULT_MARGIN,
                   reference: str | None = None) -> list[Section]:
    acc = accuracy_records(records)
    secs: list[Section] = decision_sections(records, headroom_gb=headroom_gb, margin=margin,
                                            reference=reference) if acc else []
    builds = builds_in(records)
    secs.append(Section("Builds", [f"{len(records)} records; accuracy in %, sizes in MiB; parity = the exporter's "
                                   "check against the source (top-1 agreement, mean KL of next-token "
                                   "distributions) from the build's manifest."], [Table(
        ["build", "format", "quantization", "bits/weight", "size MiB", "parity"],
        [[b.name, b.format, b.quantization, "-" if b.bits_per_weight is None else f"{b.bits_per_weight:.2f}",
          _size(b.size_bytes), _parity(b)] for b in builds])]))
    for task, device in groups(records):
        rs = [r for r in acc if r.task == task and r.device == device]
        names = [b.name for b in builds_in(rs)]
        langs = sorted({r.lang for r in rs})
        cell = {(r.build.name, r.lang): r for r in rs}
        ds = {(d.build, d.lang): d for d in drifts(records) if d.task == task and d.device == device}
        rows = []
        for lang in langs:
            info = lookup(lang)
            ns = sorted({cell[b, lang].n for b in names if (b, lang) in cell})
            rows.append([lang, info.name, info.resource, "/".join(map(str, ns))] + [
                _acc_cell(cell[b, lang], ds.get((b, lang))) if (b, lang) in cell else "-" for b in names])
        sums = {s.build.name: s for s in summarise(records, task, device)}
        rows.append(["**macro**", "", "", ""] + [fmt_pct(sums[b].macro_accuracy) for b in names])
        rows.append(["**low-resource**", "", "low", ""] + [fmt_pct(sums[b].low_resource_accuracy) for b in names])
        rows.append(["**high-resource**", "", "high", ""] + [fmt_pct(sums[b].high_resource_accuracy) for b in names])
        text_row = [fmt_pct(sums[b].macro_accuracy_text) for b in names]
        if any(t != "-" for t in text_row):
            rows.append(["**macro, option-text rule**", "", "", "", *text_row])
        fail_row = [fmt_pct(sums[b].extraction_failure_rate) for b in names]
        if any(t != "-" for t in fail_row):
            rows.append(["**answer extraction failures**", "", "", "", *fail_row])
        secs.append(Section(f"Accuracy: {task} on {device}", [
            "Letter rule accuracy % with the 95% Wilson interval, then the option-text rule (text) and the answer "
            "KL against the reference, per language; macro = unweighted mean over languages; low-resource = macro "
            "over the languages marked low in the language table. Differences inside the intervals are not "
            "evidence (the recommendation uses the paired test above)."],
            [Table(["lang", "language", "resource", "n", *names], rows)]))
        srows = []
        for b in names:
            srow = [b]
            for lang in langs:
                sp = answer_spread(cell[b, lang]) if (b, lang) in cell else None
                srow.append("-" if sp is None else f"{sp.top_letter} {100 * sp.top_share:.0f}% (gold "
                            f"{100 * sp.gold_share:.0f}%, top gold {100 * sp.gold_max_share:.0f}%)"
                            + (" ONE LETTER" if sp.degenerate else ""))
            srows.append(srow)
        secs.append(Section(f"Answer spread: {task} on {device}", [
            "The most frequent predicted letter and its share of the items, against the share of items whose gold "
            "answer is that letter and the most frequent gold letter's share. ONE LETTER = at least "
            f"{100 * DEGENERATE_SHARE:.0f}% of the answers are one letter while the gold is not that concentrated: "
            "a constant answer, whose agreement with another constant answer says nothing about fidelity."],
            [Table(["build", *langs], srows)]))
    ds_all = drifts(records)
    if ds_all:
        spread = {(r.build.name, r.device, r.task, r.lang): answer_spread(r) for r in acc}

        def constant(name: str, d: DriftRecord) -> bool:
            sp = spread.get((name, d.device, d.task, d.lang))
            return bool(sp and sp.degenerate)

        rows = [[d.build, d.reference, d.lang, str(d.n), f"{100 * d.delta:+.1f}", f"{100 * d.flip_rate:.1f}",
                 f"{d.right_to_wrong}/{d.wrong_to_right}", f"{d.mcnemar_p:.3g}", f"{100 * d.top1_agreement:.1f}"
                 + (" (constant answers)" if constant(d.build, d) and constant(d.reference, d) else ""),
                 "-" if d.mean_kl is None else f"{d.mean_kl:.4f}", "" if d.resolves_2pt else "n too small"]
                for d in ds_all]
        small = sorted({d.lang for d in ds_all if not d.resolves_2pt})
        paras = ["delta = accuracy minus the reference's (points); flips = items whose correctness changed; "
                 "r->w / w->r = right-to-wrong / wrong-to-right; p = exact McNemar test on those counts; "
                 "top-1 = same predicted letter; KL = mean KL(reference || build) of the answer distribution "
                 "(softmax over option-letter log-likelihoods), in nats."]
        if small:
            paras.append(f"Warning: for {', '.join(small)} the test set is too small to resolve a 2-point "
                         "accuracy change (95% CI half-width > 2 points); read those deltas as noise.")
        secs.append(Section("Drift against the reference", paras, [Table(
            ["build", "reference", "lang", "n", "delta", "flips %", "r->w/w->r", "McNemar p", "top-1 %",
             "KL", "note"], rows)]))
    secs += _throughput_sections(records, headroom_gb)
    if chart_names:
        secs.append(Section("Charts", charts=list(chart_names)))
    return secs


def _parity(b: BuildInfo) -> str:
    if b.parity_passed is None:
        return "-"
    top = "-" if b.parity_top1 is None else f"{100 * b.parity_top1:.1f}%"
    return f"{'passed' if b.parity_passed else 'FAILED'} (top-1 {top}, KL {_kl(b.parity_mean_kl)})"


def _acc_cell(r: AccuracyRecord, d: DriftRecord | None) -> str:
    text = f"{fmt_pct(r.accuracy)} [{fmt_pct(r.ci_low)}-{fmt_pct(r.ci_high)}]"
    if r.accuracy_text is not None:
        text += f" text {fmt_pct(r.accuracy_text)}"
    if d is not None and d.mean_kl is not None:
        text += f" KL {d.mean_kl:.3f}"
    return text


def _throughput_sections(records: Sequence[Record], headroom_gb: float) -> list[Section]:
    tps = throughputs(records)
    if not tps:
        return []
    rows = []
    for t in tps:
        sp = speed_of([t])
        assert sp is not None
        load = "-" if sp.other_cpu_share is None else f"{100 * sp.other_cpu_share:.0f}"
        rows.append([t.build.name, t.device, sp.threads, str(t.prompt_tokens), f"{t.prefill_tokens_per_s:.1f}",
                     f"{t.decode_tokens_per_s:.1f}", f"{sp.low:.1f}-{sp.high:.1f}", load,
                     f"{1000 * t.ttft_s:.0f}", _size(t.peak_rss_bytes),
                     "-" if t.cuda_peak_allocated_bytes is None else _size(t.cuda_peak_allocated_bytes),
                     "UNRELIABLE: " + "; ".join(sp.unreliable) if sp.unreliable else ""])
    sec = Section("Throughput", [
        "Medians over the timed repeats after a warm-up, each build in its own process; prompt = clinic system "
        "prompt + a typical question through the chat template. runs = slowest-fastest timed decode; other CPU % = "
        "the share of the machine's CPUs other programs used during the timed runs (- = not recorded); threads "
        "auto = the chat app's policy. A run whose decode runs spread more than "
        f"{100 * UNRELIABLE_SPREAD:.0f}% of the median, or with other programs above {100 * UNRELIABLE_LOAD:.0f}%, "
        "is unreliable. TTFT includes prefill; peak RSS includes mapped weights."], [Table(
            ["build", "device", "threads", "prompt tok", "prefill tok/s", "decode tok/s", "runs", "other CPU %",
             "TTFT ms", "peak RSS MiB", "CUDA peak alloc MiB", "note"], rows)])
    hw = tps[0].hardware
    if hw:
        libs = ", ".join(f"{k} {v}" for k, v in sorted(hw.get("libraries", {}).items()))
        gpu = ", ".join(g.get("name", "?") for g in hw.get("gpus", [])) or "none"
        sec.bullets.append(f"hardware ({hw.get('host', '?')}): {hw.get('cpu', '?')}, "
                           f"{hw.get('cores_logical', '?')} logical cores, "
                           f"{hw.get('ram_bytes', 0) / 1024**3:.1f} GiB RAM, GPU: {gpu}; {libs}")
    mrows = []
    for name in sorted({t.build.name for t in tps if t.device == "cpu"}):
        m = memory_of([t for t in tps if t.device == "cpu" and t.build.name == name], headroom_gb)
        kv = "unknown" if m.kv_bytes is None else f"{_size(m.kv_bytes)} at {m.context_tokens} tok" + (
            " (in RSS)" if m.kv_counted else "")
        est = (m.peak_rss_bytes or 0) + m.logits_bytes
        est += (m.kv_bytes or 0) if not m.kv_counted else 0
        long = "-" if not m.long_peak_rss_bytes else f"{_size(m.long_peak_rss_bytes)} at {m.long_prompt_tokens} tok"
        mrows.append([name, _size(m.peak_rss_bytes or 0), kv, _size(m.logits_bytes) if m.logits_bytes else "-",
                      _size(est), long, f"{(m.need_bytes or 0) / GiB:.2f}"])
    mem = Section("Memory in the chat", [
        "The RAM a build needs in a conversation: measured peak RSS (short prompt) plus its KV cache at the chat's "
        "context length (from the model's shape; llama.cpp allocates the whole cache at load, so it is already in "
        "the RSS) plus the logits a prefill of that context keeps (ONNX and transformers keep every position's), "
        "or the peak RSS measured after a conversation that fills the context (--long-context) when larger, plus "
        f"{headroom_gb:g} GiB headroom."], [Table(
            ["build", "peak RSS MiB", "KV cache MiB", "prefill logits MiB", "estimate MiB", "measured long run MiB",
             "needs GiB"], mrows)])
    return [sec, mem]


def _md_table(t: Table) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in [t.headers, *t.rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in t.headers) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in esc[1:]]


def to_markdown(sections: Sequence[Section], title: str = "GlobMed-Bench report") -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [p, ""]
        for t in s.tables:
            lines += [*_md_table(t), ""]
        if s.bullets:
            lines += [f"  - {b[2:]}" if b.startswith("  ") else f"- {b}" for b in s.bullets] + [""]
        for c in s.charts:
            lines += [f"![{c}]({c})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    out = html.escape(text)
    while "**" in out:
        out = out.replace("**", "<b>", 1).replace("**", "</b>", 1)
    while out.count("`") >= 2:
        out = out.replace("`", "<code>", 1).replace("`", "</code>", 1)
    return out


_CELL_CLASSES = (("OK ", "ok"), ("WORSE", "worse"), ("? ", "unsure"), ("reference", "ref"))


def _cls(cell: str) -> str:
    """A verdict cell's colour class (green acceptable, red worse, amber undecided)."""
    if "ONE LETTER" in cell or "UNRELIABLE" in cell:
        return " class='unsure'"
    return next((f" class='{c}'" for prefix, c in _CELL_CLASSES if cell.startswith(prefix)), "")


def to_html(sections: Sequence[Section], images: dict[str, bytes], title: str = "GlobMed-Bench report") -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
             ".ok{background:#d8f0d8}.worse{background:#f6cccc}.unsure{background:#fbecc4}.ref{color:#777}"
             "h2:first-of-type+p,h2:first-of-type+p+p{max-width:1100px}"
             f"</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.headers) + "</tr>")
            parts += ["<tr>" + "".join(f"<td dir='auto'{_cls(c)}>{_inline(c)}</td>" for c in r) + "</tr>"
                      for r in t.rows]
            parts.append("</table>")
        if s.bullets:
            parts.append("<ul>" + "".join(
                f"<li style='list-style:circle;margin-left:2em'>{_inline(b[2:])}</li>" if b.startswith("  ")
                else f"<li>{_inline(b)}</li>" for b in s.bullets) + "</ul>")
        for c in s.charts:
            data = base64.b64encode(images[c]).decode("ascii")
            parts.append(f"<p><img alt='{html.escape(c)}' src='data:image/png;base64,{data}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(records: Sequence[Record], *, headroom_gb: float = DEFAULT_HEADROOM_GB, margin: float = DEFAULT_MARGIN,
           reference: str | None = None, charts: bool = True) -> tuple[str, str, dict[str, bytes]]:
    """(markdown, html, {chart file name: PNG bytes}) for `records`."""
    from globmed_edge.bench.charts import CHARTS

    if not records:
        raise DataError("no records to report on")
    images: dict[str, bytes] = {}
    if charts:
        for name, fn in CHARTS.items():
            png = fn(records)
            if png is not None:
                images[name] = png
    sections = build_sections(records, list(images), headroom_gb=headroom_gb, margin=margin, reference=reference)
    return to_markdown(sections), to_html(sections, images), images


def write_report(results: Sequence[Path], out: Path, *, reference: str | None = None,
                 headroom_gb: float = DEFAULT_HEADROOM_GB, margin: float = DEFAULT_MARGIN,
                 charts: bool = True) -> list[Path]:
    """Merge result files and write report.md, report.html and the PNGs into `out`."""
    records = merge(results)
    if reference is not None:
        from globmed_edge.bench.drift import drift_records

        keys = {r.key() for r in records}
        names = {r.build.name for r in records if isinstance(r, AccuracyRecord)}
        if reference not in names:
            raise DataError(f"reference build {reference!r} has no accuracy records "
                            f"(builds: {', '.join(sorted(names))})")
        records += [d for d in drift_records(records, reference) if d.key() not in keys]
    md, page, images = render(records, headroom_gb=headroom_gb, margin=margin, reference=reference, charts=charts)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(f"{out}: not writable")
    except OSError as exc:  # a read-only or full output folder: one line, before anything is written
        raise DataError(f"{out}: cannot write the report there ({exc.strerror or exc})") from None
    paths = []
    for name, png in images.items():
        atomic_write_bytes(out / name, png)
        paths.append(out / name)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", page)
    return [*paths, out / "report.md", out / "report.html"]
