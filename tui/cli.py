"""`globmed-edge chat`: the offline chat app, or a one-shot answer with --prompt."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click


def _default_lang() -> str:
    """The interface language from the environment (LANG=fr_FR.UTF-8 -> fr), else English."""
    from globmed_edge.tui.i18n import normalize

    for var in ("GLOBMED_EDGE_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var, "")
        if value and value not in ("C", "POSIX") and not value.startswith("C."):
            return normalize(value.split(".")[0])
    return "en"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("build", required=False)
@click.option("--prompt", "-p", help="Answer this one question on stdout and exit (no UI); "
              "'-' reads it from standard input. Without BUILD it uses the best verified build here.")
@click.option("--lang", "-l", help="Interface and reply language (en, fr, sw, ar, ...). "
              "Default: $GLOBMED_EDGE_LANG, else the one chosen last time (F4), else from $LANG, else en.")
@click.option("--max-tokens", type=click.IntRange(1, 8192), default=256, show_default=True,
              help="Longest answer, in tokens.")
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), default=0.0, show_default=True,
              help="0 = greedy (repeatable answers).")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="History file (default: chat/chat_history.sqlite3 under the data home).")
@click.option("--conversation", type=int, help="Open this saved conversation (id from history).")
@click.option("--fresh-history", is_flag=True,
              help="If the history file is damaged, keep it aside (renamed *.damaged-<time>) and start a new one.")
@click.option("--threads", metavar="N|auto", default=None,
              help="CPU threads for the model (default: auto for GGUF builds: the cores other "
                   "programs leave free, checked before each answer).")
@click.option("--unverified", is_flag=True,
              help="Run BUILD even though it has no valid manifest (its files cannot be checked); "
                   "the app then marks it UNVERIFIED.")
@click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Repetition guard for every answer: 1.0 = off; default 1.15 (stops the small "
                   "models' loops; recorded with each answer).")
@click.option("--export-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for exported conversations (F3), e.g. a USB stick; made if missing.")
def chat(build: str | None, prompt: str | None, lang: str | None, max_tokens: int,
         temperature: float, db: Path | None, conversation: int | None, fresh_history: bool,
         threads: str | None, unverified: bool, repetition_penalty: float | None,
         export_dir: Path | None) -> None:
    """Offline chat with a build on this machine (terminal app; nothing is sent anywhere).

    BUILD is a build folder, a build's short name (`globmed-edge models list` shows them), an HF
    model folder, or the name of a prepared embedded model. Without BUILD the app lists the
    builds found on this machine.

    \b
    Examples:
      globmed-edge chat                       # pick a build
      globmed-edge chat smollm2-135m-instruct --lang sw
      globmed-edge chat BUILD --prompt "Signs of severe dehydration in a child?"
    """
    from globmed_edge.buildref import resolve_build
    from globmed_edge.tui.i18n import normalize
    from globmed_edge.tui.loader import threads_factory

    language = normalize(lang) if lang else _default_lang()
    factory = threads_factory(_threads(threads)) if threads is not None else None
    if unverified and build is None:
        raise click.UsageError("--unverified needs BUILD: it applies to the build named, never to a whole folder")
    if prompt is not None:
        import sys

        from globmed_edge.models import DEFAULT_MODEL
        from globmed_edge.textsafe import SafeWriter
        from globmed_edge.tui.headless import run_prompt

        if prompt == "-":
            prompt = sys.stdin.read().strip()
            if not prompt:
                raise click.UsageError("--prompt -: standard input was empty")
        path = resolve_build(build, models=True) if build else _pick_for_prompt(DEFAULT_MODEL)
        _check_build(path, unverified)
        # Model output is data: control characters never reach the terminal.
        run_prompt(path, prompt, lang=language, max_new_tokens=max_tokens, temperature=temperature,
                   out=SafeWriter(sys.stdout), err=SafeWriter(sys.stderr),  # type: ignore[arg-type]
                   backend_factory=factory, repetition_penalty=repetition_penalty)
        return
    from globmed_edge.deps import require

    require("textual", "tui")
    from globmed_edge.tui.app import make_app

    chosen = resolve_build(build, models=True) if build else None
    if chosen is not None:
        _check_build(chosen, unverified)
    store = _open_store(db, fresh_history)
    if not lang and not os.environ.get("GLOBMED_EDGE_LANG"):  # the language chosen last time (F4)
        remembered = store.get_setting("ui_lang")
        language = normalize(remembered) if remembered else language
    try:
        make_app(chosen, lang=language, store=store, max_new_tokens=max_tokens,
                 conversation=conversation, backend_factory=factory,
                 repetition_penalty=repetition_penalty, export_dir=export_dir).run()
    finally:
        store.close()


def _pick_for_prompt(fallback: str) -> Path:
    """No BUILD with --prompt: the best verified build on this machine (tui.builds.best_choice),
    said on stderr; the embedded source model only when there is none."""
    from globmed_edge.buildref import resolve_build
    from globmed_edge.tui.builds import best_choice, discover_builds

    choice = best_choice(discover_builds(include_embedded=False))
    if choice is None:
        click.echo(f"note: no verified build fits here; answering with the source model {fallback} "
                   "(slow to load: make builds with `globmed-edge quantize`)", err=True)
        return resolve_build(fallback, models=True)
    click.echo(f"note: answering with {choice.name} ({choice.format} {choice.quantization}"
               + (f", {choice.grade}" if choice.grade != "-" else "") + "); name a BUILD to choose", err=True)
    return choice.path


def _threads(value: str) -> int | str:
    """--threads: "auto" or a whole number from 1 to this machine's CPUs (one line otherwise)."""
    from globmed_edge.backends import check_threads

    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a whole number or 'auto'", param_hint="--threads") from None
    try:
        check_threads(n)
    except Exception as exc:
        raise click.BadParameter(str(exc), param_hint="--threads") from None
    return n


def _check_build(path: Path, unverified: bool) -> None:
    """The manifest rule before anything starts: a refused build is a one-line error here; with
    --unverified it runs, with a warning (the app also marks it on screen)."""
    from globmed_edge.trust import check_model, permit_unverified

    if unverified:
        for v in permit_unverified([path]):
            click.echo(f"warning: {v.warning()}", err=True)
    check_model(path)


def _open_store(db: Path | None, fresh: bool) -> Any:
    """The history; a damaged one is an error that says what is wrong, or with --fresh-history
    is renamed aside (never modified) and a new one started."""
    from globmed_edge.errors import HistoryError
    from globmed_edge.tui.store import ChatStore, default_db_path, set_aside

    try:
        return ChatStore(db)
    except HistoryError:
        if not fresh:
            raise
    aside = set_aside(db if db is not None else default_db_path())
    click.echo(f"warning: the damaged chat history was kept as {aside}; starting a fresh one", err=True)
    return ChatStore(db)
