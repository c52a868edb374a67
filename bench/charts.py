"""PNG charts for bench reports (matplotlib, Agg backend; the `report` extra).

Each function takes records, draws one figure and returns the PNG bytes (None when the records
hold nothing to draw), so the report can both write the files and embed them in the HTML.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from globmed_edge.bench.records import Record
from globmed_edge.bench.summary import accuracy_records, drifts, groups, summarise, throughputs
from globmed_edge.languages import lookup

MB = 1024**2


def _plt() -> Any:
    from globmed_edge.deps import require

    matplotlib = require("matplotlib", "report")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110,
                         "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _log_x(ax: Any, xs: Sequence[float]) -> None:
    """Log x axis with plain-number labels and room for the point labels on the right."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    if xs:
        ax.set_xlim(min(xs) / 1.6, max(xs) * 3.0)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _chance(ax: Any, records: Sequence[Any]) -> None:
    """Dashed line at the accuracy of guessing (mean of 1/number of options)."""
    from globmed_edge.mcq.scorer import chance_level

    lps = [lp for r in records for lp in r.letter_logprobs if lp]
    if lps:
        ax.axhline(100 * chance_level(lps), ls="--", lw=1, color="grey", label="chance")


def short_names(names: Sequence[str]) -> dict[str, str]:
    """Build names without the prefix they all share ("smollm2-135m-instruct-gguf-q8_0" ->
    "gguf-q8_0"); a name that is only the prefix (the source model) keeps its full name."""
    parts = [n.split("-") for n in names]
    common = 0
    if len(parts) > 1:
        while all(len(p) > common for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
    return {n: "-".join(p[common:]) or n for n, p in zip(names, parts, strict=True)}


def _styles(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A colour and marker per build, stable across all charts of one report."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    return {n: (colours[i % len(colours)], markers[(i // len(colours)) % len(markers)])
            for i, n in enumerate(sorted(names))}


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def accuracy_vs_size(records: Sequence[Record]) -> bytes | None:
    """One small panel per language (+ macro): accuracy with 95% CI against build size."""
    gs = groups(records)
    if not gs:
        return None
    task, device = gs[0]
    acc = [r for r in accuracy_records(records) if r.task == task and r.device == device]
    langs = sorted({r.lang for r in acc})
    panels = ["macro", *langs]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    plt = _plt()
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, sharex=True)
    sums = {s.build.name: s for s in summarise(records, task, device)}
    short, style = short_names(list(sums)), _styles(list(sums))
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel == "macro":
            pts = sorted((s.build.size_bytes / MB, s.macro_accuracy, 0.0, 0.0, s.build.name) for s in sums.values())
            ax.set_title("macro average (all languages)", fontweight="bold")
        else:
            # clamped: at 0 correct, Wilson's lower bound can come out a rounding error above 0
            pts = sorted((r.build.size_bytes / MB, r.accuracy, max(0.0, r.accuracy - r.ci_low),
                          max(0.0, r.ci_high - r.accuracy), r.build.name) for r in acc if r.lang == panel)
            tag = " (low-resource)" if lookup(panel).is_low_resource else ""
            ax.set_title(f"{panel} - {lookup(panel).name}{tag} (n={next(r.n for r in acc if r.lang == panel)})")
        xs, ys = [p[0] for p in pts], [100 * p[1] for p in pts]
        ax.plot(xs, ys, "-", color="#bbbbbb", lw=1, zorder=1)
        for x, y, p in zip(xs, ys, pts, strict=True):
            colour, marker = style[p[4]]
            ax.errorbar([x], [y], yerr=[[100 * p[2]], [100 * p[3]]], fmt=marker, color=colour, ecolor=colour,
                        alpha=0.9, capsize=3, ms=6, zorder=2, label=short[p[4]])
        _log_x(ax, xs)
        _chance(ax, acc if panel == "macro" else [r for r in acc if r.lang == panel])
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy %")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9,
               bbox_to_anchor=(0.5, -0.02 - 0.04 * math.ceil(len(labels) / 4)))
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("build size (MiB, log scale)")
    fig.suptitle(f"Accuracy vs build size per language ({task}, {device}; bars = 95% Wilson CI)", y=1.0)
    fig.tight_layout()
    return _png(fig)


def accuracy_vs_speed(records: Sequence[Record]) -> bytes | None:
    """Macro accuracy against measured decode tokens/s, one point per build and device."""
    gs = groups(records)
    tps = throughputs(records)
    if not gs or not tps:
        return None
    task = gs[0][0]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = sorted({t.build.name for t in tps})
    short, style = short_names(names), _styles(names)
    for device, edge in (("cpu", "none"), ("cuda", "black")):
        sums = {s.build.name: s for s in summarise(records, task, device)} or {
            s.build.name: s for s in summarise(records, task, gs[0][1])}
        pts = [(t.decode_tokens_per_s, 100 * sums[t.build.name].macro_accuracy, t.build.name)
               for t in tps if t.device == device and t.build.name in sums]
        if not pts:
            continue
        for x, y, name in pts:
            colour, marker = style[name]
            ax.scatter([x], [y], s=60, marker=marker, color=colour, edgecolors=edge,
                       label=f"{short[name]} ({device})")
    _log_x(ax, [t.decode_tokens_per_s for t in tps])
    _chance(ax, accuracy_records(records))
    ax.set_xlabel("decode speed (tokens/s, median, log scale)")
    ax.set_ylabel("macro accuracy %")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"Accuracy vs decode speed ({task}); up and right is better")
    fig.tight_layout()
    return _png(fig)


def drift_heatmap(records: Sequence[Record]) -> bytes | None:
    """Accuracy delta (points) vs the reference, builds x languages; '?' marks n too small."""
    ds = drifts(records)
    if not ds:
        return None
    task, device, ref = ds[0].task, ds[0].device, ds[0].reference
    ds = [d for d in ds if (d.task, d.device, d.reference) == (task, device, ref)]
    builds = sorted({d.build for d in ds})
    langs = sorted({d.lang for d in ds})
    cell = {(d.build, d.lang): d for d in ds}
    import numpy as np

    grid = np.full((len(builds), len(langs)), np.nan)
    for (b, lang), d in cell.items():
        grid[builds.index(b), langs.index(lang)] = 100 * d.delta
    lim = max(5.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 5.0)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(langs) + 3.0), max(2.6, 0.6 * len(builds) + 1.6)))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(builds)), [short_names(builds)[b] for b in builds])
    for (b, lang), d in cell.items():
        txt = f"{100 * d.delta:+.1f}" + ("" if d.resolves_2pt else "?")
        ax.text(langs.index(lang), builds.index(b), txt, ha="center", va="center", fontsize=8,
                color="white" if abs(100 * d.delta) > 0.6 * lim else "black")
    fig.colorbar(im, ax=ax, label="accuracy change (points)")
    ax.set_title(f"Accuracy change vs reference {ref} ({task}, {device})\n"
                 "blue = better, red = worse; '?' = n too small to resolve a 2-point change", fontsize=10)
    fig.tight_layout()
    return _png(fig)


CHARTS = {"accuracy_vs_size.png": accuracy_vs_size, "accuracy_vs_speed.png": accuracy_vs_speed,
          "drift_heatmap.png": drift_heatmap}
