"""`globmed-edge quantize`: a thin CLI over quantize/runner.py.

Exit codes: 0 every requested build was made or is already up to date (formats this machine
cannot build are skipped with a warning); 1 a build failed (exporter error, or a parity check
failed without --allow-drift) or the source model is unusable; 2 a usage error (unknown format or
quantization, bad option); 3 nothing could be built: every requested format is unavailable here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from globmed_edge.clikit import human_size

EXIT_OK, EXIT_FAILED, EXIT_NOTHING_AVAILABLE = 0, 1, 3


def format_catalog() -> list[tuple[str, str]]:
    """(FMT:QUANT, when to choose it) for every registered exporter; imported only for --help."""
    from globmed_edge.quantize.base import EXPORTERS

    rows = []
    for fmt in EXPORTERS.names():
        try:
            quantizations = EXPORTERS.load(fmt).descriptor.quantizations
        except ImportError as exc:
            rows.append((f"{fmt}:*", f"(the {fmt} exporter is not installed here: {exc})"))
            continue
        for q, spec in quantizations.items():
            bits = f"~{spec.bits_per_weight:g} bits/weight; " if spec.bits_per_weight else ""
            th = spec.thresholds
            rows.append((f"{fmt}:{q}", f"{spec.help} ({bits}parity: top-1 >= {th.min_top1_agreement:g}, "
                                      f"mean KL <= {th.max_mean_kl:g})"))
    return rows


def option_catalog() -> list[tuple[str, str]]:
    """(FMT.KEY, what it does: type, default, allowed values) for every declared exporter option."""
    from globmed_edge.quantize.base import EXPORTERS

    rows = []
    for fmt in EXPORTERS.names():
        try:
            options = EXPORTERS.load(fmt).descriptor.options
        except ImportError:
            continue  # format_catalog says so
        rows += [(f"{fmt}.{opt.name}", opt.describe()) for opt in options]
    return rows


class QuantizeCommand(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Formats (FMT:QUANT)"):
            formatter.write_dl(format_catalog())
        with formatter.section("Exporter options (--option FMT.KEY=VALUE)"):
            formatter.write_dl(option_catalog())
        super().format_epilog(ctx, formatter)




def _verdict(o: Any) -> str:
    if o.status == "unavailable":
        return "unavailable"
    if o.status == "failed":
        return "FAIL" + (" (parity)" if o.parity else " (error)")
    verdict = "pass" if o.passed else "FAIL, drift accepted" if o.allow_drift else "FAIL"
    return f"{verdict}{' (up to date)' if o.status == 'skipped' else ''}"


def render_table(outcomes: list[Any]) -> str:
    from globmed_edge.clikit import table
    from globmed_edge.grade import parity_grade

    rows = []
    for o in outcomes:
        p = o.parity or {}
        greedy = f"{p['greedy_match_tokens']}/{p['greedy_tokens']}" if p else "-"
        rows.append([o.build, human_size(o.size_bytes),
                     f"{o.bits_per_weight:.2f}" if o.bits_per_weight is not None else "-",
                     "-" if not p else "yes" if p["tokens_identical"] else "NO",
                     f"{p['top1_agreement']:.3f}" if p else "-", f"{p['mean_kl']:.3g}" if p else "-",
                     greedy, _verdict(o), parity_grade(p), o.path or o.message[:60]])
    return table(["build", "size", "bits/w", "tokens same", "top-1", "mean KL", "greedy", "result", "grade", "path"],
                 rows, right=(1, 2, 4, 5, 6))


def exit_code(outcomes: list[Any]) -> int:
    if any(o.status == "failed" for o in outcomes):
        return EXIT_FAILED
    if outcomes and all(o.status == "unavailable" for o in outcomes):
        return EXIT_NOTHING_AVAILABLE
    return EXIT_OK



def _usable_cpus() -> int:
    from globmed_edge.backends import usable_cpus

    return usable_cpus()

@click.command(cls=QuantizeCommand)
@click.argument("model")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the builds (default: the data directory's builds/).")
@click.option("--format", "formats", multiple=True, metavar="FMT:Q1,Q2",
              help="Builds to make; repeatable (default: gguf:q8_0,q4_k_m and onnx:int8,int4).")
@click.option("--calibration", multiple=True, type=click.Path(exists=True, path_type=Path), metavar="DATA",
              help="Calibration data (files or folders in the project schema; train/dev items only). "
                   "Default: the packaged samples.")
@click.option("--calibration-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Calibration texts at most.")
@click.option("--option", "options", multiple=True, metavar="FMT.KEY=VALUE",
              help="Set an exporter option (listed below), e.g. onnx.block_size=64; repeatable. "
                   "Options that change a build are recorded in its manifest.")
@click.option("--no-imatrix", is_flag=True, help="GGUF: no importance matrix for the k-quants.")
@click.option("--allow-drift", is_flag=True,
              help="Keep builds that fail their parity check (recorded in the manifest).")
@click.option("--force", is_flag=True, help="Rebuild even when an up-to-date build exists.")
@click.option("--threads", type=click.IntRange(min=1, max=_usable_cpus()), default=None, help="CPU threads for the parity check (and GGUF quantization).")
@click.option("--json", "as_json", is_flag=True, help="Print the result table as JSON.")
@click.pass_context
def quantize(ctx: click.Context, model: str, out: Path | None, formats: tuple[str, ...],
             calibration: tuple[Path, ...], calibration_size: int, options: tuple[str, ...],
             no_imatrix: bool, allow_drift: bool, force: bool, threads: int | None, as_json: bool) -> None:
    """Export MODEL (an HF folder or an embedded model name) to GGUF / ONNX / GPTQ builds.

    Each build lands in OUT/<model>-<format>-<quant>/ with manifest.json, after a parity
    check against the source model (token ids, top-1 agreement, KL, greedy chat). Builds
    that already exist and verify are skipped; interrupted runs leave nothing that looks
    complete. Exit codes: 0 ok, 1 a build failed, 2 usage error, 3 nothing buildable here.
    """
    from globmed_edge.clikit import progress_enabled
    from globmed_edge.paths import builds_dir
    from globmed_edge.quantize.runner import DEFAULT_FORMATS, QuantizeOptions
    from globmed_edge.quantize.runner import quantize as run

    opts = QuantizeOptions(
        out=out or builds_dir(), formats=formats or DEFAULT_FORMATS, calibration=calibration,
        calibration_size=calibration_size, imatrix=not no_imatrix, allow_drift=allow_drift,
        force=force, threads=threads, progress=progress_enabled(), options=options)
    outcomes = run(model, opts, warn=lambda msg: click.echo(msg, err=True))
    if as_json:
        from globmed_edge.grade import parity_grade

        builds = [{**o.to_dict(), "grade": parity_grade(o.parity)} for o in outcomes]
        click.echo(json.dumps({"model": model, "out": str(opts.out), "builds": builds}, indent=2, ensure_ascii=False))
    else:
        click.echo(render_table(outcomes))
    ctx.exit(exit_code(outcomes))
