"""`bench report`: Markdown, self-contained HTML and PNG charts, rendered only from records.

The report is a list of sections (title, paragraphs, tables, charts); `to_markdown` and
`to_html` render the same list, so the two never disagree. Nothing in it depends on the clock or
the machine that renders it (the Markdown is golden-file tested).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from globmed_edge.atomic import atomic_write_bytes, atomic_write_text
from globmed_edge.bench.records import AccuracyRecord, Record, merge
from globmed_edge.bench.summary import (
    accuracy_records,
    builds_in,
    drifts,
    fmt_pct,
    groups,
    recommend,
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


def build_sections(records: Sequence[Record], chart_names: Sequence[str] = (), *,
                   headroom_gb: float = 1.5) -> list[Section]:
    secs: list[Section] = []
    acc = accuracy_records(records)
    builds = builds_in(records)
    secs.append(Section("Builds", [f"{len(records)} records; accuracy in %, sizes in MiB."], [Table(
        ["build", "format", "quantization", "bits/weight", "size MiB"],
        [[b.name, b.format, b.quantization, "-" if b.bits_per_weight is None else f"{b.bits_per_weight:.2f}",
          _size(b.size_bytes)] for b in builds])]))
    for task, device in groups(records):
        rs = [r for r in acc if r.task == task and r.device == device]
        names = [b.name for b in builds_in(rs)]
        langs = sorted({r.lang for r in rs})
        cell = {(r.build.name, r.lang): r for r in rs}
        rows = []
        for lang in langs:
            info = lookup(lang)
            ns = sorted({cell[b, lang].n for b in names if (b, lang) in cell})
            rows.append([lang, info.name, info.resource, "/".join(map(str, ns))] + [
                f"{fmt_pct(cell[b, lang].accuracy)} [{fmt_pct(cell[b, lang].ci_low)}-{fmt_pct(cell[b, lang].ci_high)}]"
                if (b, lang) in cell else "-" for b in names])
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
            "Accuracy % with the 95% Wilson interval, per language; macro = unweighted mean over languages; "
            "low-resource = macro over the languages marked low in the language table."],
            [Table(["lang", "language", "resource", "n", *names], rows)]))
    ds = drifts(records)
    if ds:
        rows = [[d.build, d.reference, d.lang, str(d.n), f"{100 * d.delta:+.1f}", f"{100 * d.flip_rate:.1f}",
                 f"{d.right_to_wrong}/{d.wrong_to_right}", f"{d.mcnemar_p:.3g}", f"{100 * d.top1_agreement:.1f}",
                 "-" if d.mean_kl is None else f"{d.mean_kl:.4f}", "" if d.resolves_2pt else "n too small"]
                for d in ds]
        small = sorted({d.lang for d in ds if not d.resolves_2pt})
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
    tps = throughputs(records)
    if tps:
        secs.append(Section("Throughput", [
            "Medians over the timed repeats after a warm-up, each build in its own process; prompt = clinic "
            "system prompt + a typical question through the chat template. TTFT includes prefill; peak RSS "
            "includes mapped weights."], [Table(
                ["build", "device", "threads", "prompt tok", "prefill tok/s", "decode tok/s", "TTFT ms",
                 "peak RSS MiB", "CUDA peak alloc MiB", "CUDA reserved MiB"],
                [[t.build.name, t.device, str(t.threads or "default"), str(t.prompt_tokens),
                  f"{t.prefill_tokens_per_s:.1f}", f"{t.decode_tokens_per_s:.1f}", f"{1000 * t.ttft_s:.0f}",
                  _size(t.peak_rss_bytes),
                  "-" if t.cuda_peak_allocated_bytes is None else _size(t.cuda_peak_allocated_bytes),
                  "-" if t.cuda_reserved_bytes is None else _size(t.cuda_reserved_bytes)] for t in tps])]))
        hw = tps[0].hardware
        if hw:
            libs = ", ".join(f"{k} {v}" for k, v in sorted(hw.get("libraries", {}).items()))
            gpu = ", ".join(g.get("name", "?") for g in hw.get("gpus", [])) or "none"
            secs[-1].bullets.append(f"hardware ({hw.get('host', '?')}): {hw.get('cpu', '?')}, "
                                    f"{hw.get('cores_logical', '?')} logical cores, "
                                    f"{hw.get('ram_bytes', 0) / 1024**3:.1f} GiB RAM, GPU: {gpu}; {libs}")
    return secs + _tail_sections(records, chart_names, headroom_gb)


def _tail_sections(records: Sequence[Record], chart_names: Sequence[str], headroom_gb: float) -> list[Section]:
    out = []
    if acc := accuracy_records(records):
        del acc
        tiers = recommend(records, headroom_gb=headroom_gb)
        sec = Section("Recommendation per RAM tier", [
            f"Best macro accuracy among builds whose measured CPU peak RSS plus {headroom_gb:g} GB of headroom "
            "(OS, chat app) fits the laptop's RAM (GB here = GiB). Accuracy differences smaller than the "
            "confidence intervals in the accuracy table are not evidence that one build is better."])
        for t in tiers:
            sec.bullets.append(f"**{t.ram_gb} GB -> {t.choice or 'none'}**")
            sec.bullets += [f"  {r}" for r in t.reasons]
        out.append(sec)
    if chart_names:
        out.append(Section("Charts", charts=list(chart_names)))
    return out



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
    return out


def to_html(sections: Sequence[Section], images: dict[str, bytes], title: str = "GlobMed-Bench report") -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
             f"</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
        for t in s.tables:
            parts.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.headers) + "</tr>")
            parts += ["<tr>" + "".join(f"<td dir='auto'>{_inline(c)}</td>" for c in r) + "</tr>" for r in t.rows]
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


def render(records: Sequence[Record], *, headroom_gb: float = 1.5, charts: bool = True
           ) -> tuple[str, str, dict[str, bytes]]:
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
    sections = build_sections(records, list(images), headroom_gb=headroom_gb)
    return to_markdown(sections), to_html(sections, images), images


def write_report(results: Sequence[Path], out: Path, *, reference: str | None = None,
                 headroom_gb: float = 1.5, charts: bool = True) -> list[Path]:
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
    md, page, images = render(records, headroom_gb=headroom_gb, charts=charts)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in images.items():
        atomic_write_bytes(out / name, png)
        paths.append(out / name)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", page)
    return [*paths, out / "report.md", out / "report.html"]
