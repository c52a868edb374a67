"""`globmed-edge train CONFIG [key=value ...]`: parse, load the config, run the recipe.

Nothing heavy is imported until the command runs (`--help` stays fast); library errors become
one line on stderr with a non-zero exit (the top-level group does that for GlobmedError).
"""

from __future__ import annotations

import json
import sys

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--merge", is_flag=True, default=None,
              help="Write <output_dir>/merged: a plain HF folder with a training card.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and the data plan; train nothing.")
@click.option("--list-presets", is_flag=True, help="List the shipped presets and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def train(config: str | None, overrides: tuple[str, ...], merge: bool | None, dry_run: bool,
          list_presets: bool, quiet: bool) -> None:
    """Fine-tune a causal LM (full or LoRA) on medical data in the project schema.

    CONFIG is a YAML file or a preset name (see --list-presets); OVERRIDES are key=value pairs
    that win over the file and over GLOBMED_TRAIN_<KEY> environment variables.

    \b
    Examples:
      globmed-edge train tiny-smoke model=./tiny-model
      globmed-edge train my-run.yaml method=full max_steps=500 --merge
      accelerate launch --config_file train/accelerate/fsdp.yaml -m globmed_edge train qwen3-4b
    """
    from globmed_edge.train.config import load_config, parse_overrides, preset_names

    if list_presets:
        for name in preset_names():
            click.echo(name)
        return
    values: dict[str, object] = dict(parse_overrides(overrides))
    if merge:
        values["merge"] = True
    cfg = load_config(config, overrides=values)
    if dry_run:
        from globmed_edge.train.data import splits_for

        splits = splits_for(cfg)
        click.echo(json.dumps({
            "config": cfg.to_dict(), "train_examples": len(splits.train),
            "train_items_per_language": splits.train_counts,
            "sampling_weights": {k: round(v, 4) for k, v in splits.weights.items()},
            "dev_items": len(splits.dev)}, indent=2, ensure_ascii=False))
        return
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    import contextlib

    from globmed_edge.train.recipe import run

    try:
        # The trainer prints its log lines; keep stdout for the result JSON alone.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(cfg, progress=not quiet)
    except KeyboardInterrupt:
        click.echo(f"interrupted; run the same command again to resume from the latest checkpoint "
                   f"in {cfg.output_dir}", err=True)
        sys.exit(130)
    click.echo(json.dumps({
        "steps": result.steps, "final": str(result.final_dir),
        "merged": str(result.merged_dir) if result.merged_dir else None,
        "resumed_from": result.resumed_from,
        "train_loss_first": result.losses[0] if result.losses else None,
        "train_loss_last": result.losses[-1] if result.losses else None,
        "dev_before": result.dev_before, "dev_after": result.dev_after}, indent=2))
