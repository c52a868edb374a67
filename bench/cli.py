"""`globmed-edge bench`: run benchmarks into a results file; render reports from results files."""

from __future__ import annotations

from pathlib import Path

import click

from globmed_edge.clikit import split_csv
from globmed_edge.mcq.scorer import DEFAULT_BATCH_ITEMS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmark builds: accuracy per language, drift against a reference, and speed.

    \b
    globmed-edge bench run BUILD... --data PATH... --out results.jsonl
    globmed-edge bench report results.jsonl... --out report/
    globmed-edge bench recommend --results results.jsonl... --ram 4 --langs sw,en
    """




class Threads(click.ParamType):
    """A positive thread count or "auto" (the chat app's policy)."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or str(value).strip().lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            n = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither a positive integer nor 'auto'", param, ctx)
        if n < 1:
            self.fail(f"{n} must be at least 1 (or 'auto')", param, ctx)
        return n


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
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Timed throughput runs (after one warm-up).")
@click.option("--new-tokens", type=int, default=64, show_default=True, help="Tokens generated per throughput run.")
@click.option("--threads", type=Threads(), default=None,
              help="CPU threads: N, or 'auto' for what the chat gets (llama.cpp re-picks the free physical "
                   "cores before each generation; other runtimes use their default). Default: runtime's own.")
@click.option("--long-context/--no-long-context", default=False, show_default=True,
              help="Throughput: also one generation after a conversation that fills the chat's context, "
                   "recording its peak memory (checks the KV-cache estimate of the recommendation).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--batch-items", type=int, default=DEFAULT_BATCH_ITEMS, show_default=True,
              help="Items handed to the backend per scoring call (it packs them into forward passes).")
@click.option("--torch-dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Compute dtype of model folders (run by torch; other builds are unaffected). Default: "
                   "float32 on CPU, bfloat16 on CUDA. bfloat16 on a CPU with AMX is several times faster "
                   "than float32 (docs/bench.md); such records are named BUILD-bf16.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.jsonl"),
              show_default=True, help="Results file (JSON lines); records already there are skipped.")
@click.option("--unverified", is_flag=True, help="Also run builds that have no valid manifest; their records "
              "are marked unverified.")
@click.option("--force", is_flag=True, help="Measure again what --out already holds for these builds (the "
              "earlier records are moved to OUT.replaced-<time>.jsonl, not deleted).")
def run_cmd(builds: tuple[str, ...], sources: tuple[str, ...], langs: tuple[str, ...], datasets: tuple[str, ...],
            split: str, limit: int | None, seed: int, shots: int, mode: str, reference: str | None,
            throughput: bool, repeats: int, new_tokens: int, threads: int | str | None, long_context: bool,
            device: str, batch_items: int, torch_dtype: str | None, out: Path, unverified: bool,
            force: bool) -> None:
    """Score BUILD... (model folders, build folders, builds' short names, embedded model names or
    .gguf files) and append records to --out."""
    from globmed_edge.bench.runner import RunConfig, run_bench
    from globmed_edge.bench.tasks import TaskSpec, default_sources
    from globmed_edge.buildref import resolve_build

    resolved = tuple(str(resolve_build(b, models=True)) for b in builds)
    ref = str(resolve_build(reference, models=True)) if reference else None
    if unverified:
        from globmed_edge.trust import permit_unverified

        for v in permit_unverified([*resolved, *([ref] if ref else [])]):
            click.echo(f"warning: {v.warning()}", err=True)
    task = TaskSpec(sources=tuple(sources) or default_sources(), langs=split_csv(langs),
                    datasets=split_csv(datasets), split=split, limit=limit, shots=shots, mode=mode, seed=seed)
    cfg = RunConfig(builds=resolved, task=task, out=str(out), device=device, threads=threads, reference=ref,
                    throughput=throughput, repeats=repeats, new_tokens=new_tokens, batch_items=batch_items,
                    long_context=long_context, progress=True, force=force, torch_dtype=torch_dtype)
    try:
        results = run_bench(cfg, log=lambda m: click.echo(m, err=True))
    except KeyboardInterrupt:  # Ctrl+C: one line, exit 130; every finished record is on disk
        from globmed_edge.errors import Interrupted

        raise Interrupted(f"interrupted; the records finished so far are kept in {out}: "
                          "run the same command again to resume") from None
    click.echo(f"{len(results.records)} records in {out}")


@bench.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Folder for report.html, report.md and the PNG charts.")
@click.option("--reference", default=None, metavar="BUILD", help="Build name to compute drift against "
              "(default: the reference of the drift records, if any).")
@click.option("--headroom-gb", type=float, default=1.5, show_default=True,
              help="RAM kept free for the OS and the chat app when recommending a build per RAM tier.")
@click.option("--margin", type=float, default=2.0, show_default=True,
              help="Non-inferiority margin in accuracy points (per language, against the reference).")
@click.option("--charts/--no-charts", default=True, show_default=True, help="Draw PNG charts (needs matplotlib).")
def report_cmd(results: tuple[Path, ...], out: Path, reference: str | None, headroom_gb: float, margin: float,
               charts: bool) -> None:
    """Merge RESULTS files (from any machines) into an HTML + Markdown + PNG report."""
    from globmed_edge.bench.report import write_report

    paths = write_report(list(results), out, reference=reference, headroom_gb=headroom_gb, margin=margin,
                         charts=charts)
    for p in paths:
        click.echo(str(p))


@bench.command("recommend")
@click.argument("more", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="[FILE...]")
@click.option("--results", "results", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="Results file(s) from bench run (repeatable; more files may follow as arguments).")
@click.option("--ram", "ram_gb", type=float, required=True, help="The laptop's RAM in GB (GiB), e.g. 4, 8, 16.")
@click.option("--langs", multiple=True, metavar="CODES",
              help="Languages the clinic needs, e.g. sw,en (default: every language in the records).")
@click.option("--margin", type=float, default=2.0, show_default=True,
              help="Non-inferiority margin in accuracy points (per language, against the reference).")
@click.option("--headroom-gb", type=float, default=1.5, show_default=True,
              help="RAM kept free for the OS and the chat app.")
@click.option("--reference", default=None, metavar="BUILD",
              help="Reference build name (default: the drift records' reference, or the one unquantized build).")
@click.option("--task", default=None, help="Task to decide on (default: the CPU one, e.g. mcq-loglik-0shot).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole decision as JSON.")
def recommend_cmd(more: tuple[Path, ...], results: tuple[Path, ...], ram_gb: float, langs: tuple[str, ...],
                  margin: float, headroom_gb: float, reference: str | None, task: str | None, as_json: bool) -> None:
    """The build to ship to one clinic: its RAM and its languages, one line of reasoning per build."""
    import json

    from globmed_edge.bench.recommend import recommend
    from globmed_edge.bench.records import merge
    from globmed_edge.errors import ConfigError

    files = [*results, *more]
    if not files:
        raise ConfigError("no results file: pass --results FILE (from bench run)")
    rec = recommend(merge(files), ram_gb=ram_gb, langs=split_csv(langs) or None, margin=margin,
                    headroom_gb=headroom_gb, reference=reference, task=task)
    if as_json:
        click.echo(json.dumps(rec.to_json(), ensure_ascii=False, indent=2, allow_nan=False))
        return
    click.echo(f"{ram_gb:g} GiB, languages {', '.join(rec.langs)} (margin {margin:g} points against "
               f"{rec.reference}, {rec.task}):")
    click.echo(f"recommended: {rec.choice or 'none'}" + (f" ({rec.choice_path})" if rec.choice_path else "")
               + (f" (least bad: {rec.least_bad})" if rec.least_bad else ""))
    click.echo(f"  {rec.summary}")
    for line in rec.reasons():
        click.echo(f"- {line}")
