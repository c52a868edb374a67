"""BUILD arguments: an existing path, or the short name of a build in the data home.

A build in the data home (`paths.builds_dir()`, so `GLOBMED_EDGE_HOME` moves it) is a folder
with a manifest.json; its folder name (`smollm2-135m-instruct-gguf-q4_k_m`) is its short name,
and a build one level deeper is named by its relative path (`team/x-gguf-q8_0`). Every command
that takes a build resolves it here, so a name works everywhere a path does and a typo gets the
same did-you-mean.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from globmed_edge.errors import UnknownNameError


def build_names(roots: list[Path] | None = None) -> dict[str, Path]:
    """Short name -> folder of every build under `roots` (default: the data home's builds/).

    Partial builds (hidden folders of an interrupted quantize) are not listed; where two roots
    hold the same name, the first root wins."""
    from globmed_edge.manifest import find_builds
    from globmed_edge.paths import builds_dir

    names: dict[str, Path] = {}
    for root in roots if roots is not None else [builds_dir()]:
        for build in find_builds([root]):
            names.setdefault(build.relative_to(root).as_posix(), build)
    return names


def resolve_build(arg: str | Path, *, roots: list[Path] | None = None, models: bool = False) -> Path:
    """The path a BUILD argument means.

    An existing path (a folder or a file) is returned unchanged; otherwise, with `models`, the
    name of an embedded model (its prepared folder, `models.resolve_model`); otherwise the build
    of that name under `roots` (default: the data home's builds/). Anything else raises
    UnknownNameError, one line that lists the known names and suggests the closest."""
    text = str(arg)
    path = Path(arg)
    if text and path.exists():  # Path("") is ".": an empty argument is no path
        return path
    embedded: list[str] = []
    if models:
        from globmed_edge.models import MODELS, resolve_model

        if text in MODELS:
            return resolve_model(text)  # says "not prepared yet" when it is not
        embedded = list(MODELS)
    names = build_names(roots)
    if text in names:
        return names[text]
    raise _unknown(text, names, embedded, roots)


def _unknown(text: str, names: dict[str, Path], embedded: list[str], roots: list[Path] | None) -> UnknownNameError:
    from globmed_edge.paths import builds_dir

    known = [*names, *embedded]
    error = UnknownNameError("build", text, known)
    close = difflib.get_close_matches(text, error.known, n=1)
    if not close:  # parts that only one name has ("q4_k_m", "smollm2-q4_k_m") suggest that name
        parts = [p for p in re.split(r"[-/\s]+", text) if p]
        having = [k for k in error.known if parts and all(p in k for p in parts)]
        close = having if len(having) == 1 else []
    where = ", ".join(str(r) for r in (roots if roots is not None else [builds_dir()]))
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = f"known: {', '.join(error.known)}" if known else "known: none"
    if not names:
        listed += "; no builds there yet (globmed-edge quantize makes them)"
    error.args = (f"{text!r} is neither an existing path nor the name of a build in {where}"
                  f"{' or an embedded model' if embedded else ''}{hint} ({listed})",)
    return error
