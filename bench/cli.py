"""`globmed-edge bench`: run benchmarks into a results file; render reports from results files."""

from __future__ import annotations

from pathlib import Path

import click

from globmed_edge.bench.scorer import DEFAULT_BATCH_ITEMS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmark builds: accuracy per language, drift against a reference, and speed.

    \b
    globmed-edge bench run BUILD... --data PATH... --out results.jsonl
    globmed-edge bench report results.jsonl... --out report/
    """


def _split_csv(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.strip() for raw in values for v in raw.split(",") if v.strip())


@bench.command("run")
@click.argument("builds", nargs=-1, required=True, metavar="BUILD...")
@click.option("--data", "sources", multiple=True, metavar="PATH",
              help="Dataset file or folder (repeatable): project JSONL, GlobMed, MMedBench, CSV. "
                   "Default: ../shared/data/mcq when present, else the packaged sample set.")
@click.option("--langs", multiple=True, metavar="CODES", help="Languages to score, e.g. en,sw,am (default: all found).")
@click.option("--datasets", multiple=True, metavar="NAMES", help="Only these datasets (the items' `dataset` field).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "dev", "train"]),
              help="Split to score.")
@click.option("--limit", type=int, default=None, help="At most N items per language (seeded, stratified sample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample and shot choice.")
@click.option("--shots", type=int, default=0, show_default=True,
              help="k solved examples from train/dev of the same language before each question.")
@click.option("--mode", type=click.Choice(["loglik", "generate"]), default="loglik", show_default=True,
              help="loglik: option log-likelihoods; generate: chat reply + answer extraction.")
@click.option("--reference", default=None, metavar="BUILD",
              help="Reference build (e.g. the f16 / source model): benched too, drift computed against it.")
@click.option("--throughput/--no-throughput", default=False, show_default=True,
              help="Also time prefill/decode/TTFT/peak memory (each build in its own process).")
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed throughput runs (after one warm-up).")
@click.option("--new-tokens", type=int, default=64, show_default=True, help="Tokens generated per throughput run.")
@click.option("--threads", type=int, default=None, help="CPU threads for the backends (default: runtime's own).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-items", type=int, default=DEFAULT_BATCH_ITEMS, show_default=True,
              help="Items handed to the backend per scoring call (it packs them into forward passes).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.jsonl"),
              show_default=True, help="Results file (JSON lines); records already there are skipped.")
def run_cmd(builds: tuple[str, ...], sources: tuple[str, ...], langs: tuple[str, ...], datasets: tuple[str, ...],
            split: str, limit: int | None, seed: int, shots: int, mode: str, reference: str | None,
            throughput: bool, repeats: int, new_tokens: int, threads: int | None, device: str,
            batch_items: int, out: Path) -> None:
    """Score BUILD... (model folders, build folders or .gguf files) and append records to --out."""
    from globmed_edge.bench.runner import RunConfig, run_bench
    from globmed_edge.bench.tasks import TaskSpec, default_sources
    from globmed_edge.cli.common import progress_enabled
    from globmed_edge.models import resolve_model

    resolved = tuple(str(resolve_model(b)) for b in builds)
    ref = str(resolve_model(reference)) if reference else None
    task = TaskSpec(sources=tuple(sources) or default_sources(), langs=_split_csv(langs),
                    datasets=_split_csv(datasets), split=split, limit=limit, shots=shots, mode=mode, seed=seed)
    cfg = RunConfig(builds=resolved, task=task, out=str(out), device=device, threads=threads, reference=ref,
                    throughput=throughput, repeats=repeats, new_tokens=new_tokens, batch_items=batch_items,
                    progress=progress_enabled())
    results = run_bench(cfg, log=lambda m: click.echo(m, err=True))
    click.echo(f"{len(results.records)} records in {out}")


@bench.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.html, report.md and the PNG charts.")
@click.option("--reference", default=None, metavar="BUILD", help="Build name to compute drift against "
              "(default: the reference of the drift records, if any).")
@click.option("--headroom-gb", type=float, default=1.5, show_default=True,
              help="RAM kept free for the OS and the chat app when recommending a build per RAM tier.")
@click.option("--charts/--no-charts", default=True, show_default=True, help="Draw PNG charts (needs matplotlib).")
def report_cmd(results: tuple[Path, ...], out: Path, reference: str | None, headroom_gb: float, charts: bool) -> None:
    """Merge RESULTS files (from any machines) into an HTML + Markdown + PNG report."""
    from globmed_edge.bench.report import write_report

    paths = write_report(list(results), out, reference=reference, headroom_gb=headroom_gb, charts=charts)
    for p in paths:
        click.echo(str(p))
