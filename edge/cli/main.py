"""`globmed-edge`: the entry point. Subcommands load lazily so `--help` imports nothing heavy."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from globmed_edge import __version__
from globmed_edge.errors import GlobmedError

# name -> ("module:attr", one-line help shown by `globmed-edge --help` without importing it)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "data": ("globmed_edge.cli.data_cmd:data", "Validate, inspect and convert medical QA datasets."),
    "models": ("globmed_edge.cli.models_cmd:models", "List, prepare, build and verify models and builds."),
    "train": ("globmed_edge.train.cli:train", "Fine-tune a model on medical data (full or LoRA)."),
    "quantize": ("globmed_edge.quantize.cli:quantize", "Export GGUF / ONNX / GPTQ builds with parity checks."),
    "bench": ("globmed_edge.bench.cli:bench", "Benchmark accuracy per language, drift and speed; write reports."),
    "chat": ("globmed_edge.tui.cli:chat", "Offline chat for clinic laptops (terminal app)."),
    "doctor": ("globmed_edge.cli.doctor_cmd:doctor", "Check this machine, its runtimes and every build on it."),
    "bundle": ("globmed_edge.bundle.cli:bundle", "Carry builds and a portable runtime to offline clinics (USB)."),
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (or its --help is asked)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS:
            return None
        module_name, _, attr = SUBCOMMANDS[cmd_name][0].partition(":")
        cmd = getattr(importlib.import_module(module_name), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name and name not in SUBCOMMANDS and not name.startswith("-"):
            import difflib

            close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GlobmedError as exc:
            raise UserError(exc) from None


class UserError(click.ClickException):
    """A library error shown as one line on stderr, with the error's own exit code."""

    def __init__(self, exc: GlobmedError) -> None:
        super().__init__(str(exc))
        self.exit_code = exc.exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        from globmed_edge.textsafe import clean_line

        # One line, and no control character from the data the message quotes.
        click.echo(f"error: {clean_line(self.format_message())}", err=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="globmed-edge")
def cli() -> None:
    """globmed-edge: offline multilingual medical language models for clinics.

    Fine-tune a small model on multilingual medical data (train), export builds for
    clinic hardware (quantize), measure accuracy per language and speed (bench), and chat
    with a build on a laptop with no GPU and no internet (chat).

    Nothing here downloads anything: models come from local folders or PyPI packages.
    """
    from globmed_edge.paths import force_offline

    force_offline()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="globmed-edge")
    except KeyboardInterrupt:  # pragma: no cover - click turns this into Abort normally
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
