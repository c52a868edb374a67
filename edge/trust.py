"""The one rule for opening a model, used by every backend's `load()` and so by every command.

* A folder with a `manifest.json` (of any kind: a file, a directory, a link) is opened only when
  the manifest is valid and every file matches it (`manifest.require_valid_build`).
* A folder that looks like a build (GGUF, ONNX or GPTQ files) but has no manifest, and a bare
  `.gguf` file outside a verified build, are refused: nothing says what their files should be.
* A plain Hugging Face folder without a manifest (a source model: the prepared embedded model,
  a fine-tune, a local checkpoint) is not a build and opens as it always did ("source").

Refused models run only when the user names them with `--unverified` (the commands put their
real paths in the GLOBMED_EDGE_UNVERIFIED environment variable, so bench and throughput child
processes honour it too) or when library code opens a model it just made (`verify=False`, the
parity check of quantize). They are then marked: `Verification.status == "unverified"`, shown on
screen by the chat app and recorded in bench records (`BuildInfo.unverified`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from globmed_edge.errors import ManifestError
from globmed_edge.manifest import MANIFEST, Manifest, require_valid_build, scan_build

UNVERIFIED_ENV = "GLOBMED_EDGE_UNVERIFIED"
#: Files that only a build (an export of quantize) holds; a plain HF folder has none of them.
BUILD_MARKERS = ("genai_config.json", "quantize_config.json")
BUILD_SUFFIXES = (".gguf", ".onnx")


@dataclass(frozen=True)
class Verification:
    """How a model was checked before it was opened."""

    folder: Path
    status: str  # "verified" (manifest + every file matches), "source" (HF folder), "unverified"
    manifest: Manifest | None = None
    reason: str | None = None  # why it is unverified

    @property
    def unverified(self) -> bool:
        return self.status == "unverified"

    def warning(self) -> str:
        return f"UNVERIFIED model {self.folder}: {self.reason}; its files were not checked against a manifest"


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def looks_like_build(folder: Path) -> bool:
    """A manifest entry of any kind, or files only builds hold."""
    if os.path.lexists(folder / MANIFEST) or any(os.path.lexists(folder / m) for m in BUILD_MARKERS):
        return True
    try:
        with os.scandir(folder) as it:
            return any(e.name.endswith(BUILD_SUFFIXES) for e in it)
    except OSError:
        return False


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def waived() -> set[str]:
    """Real paths of the folders the user allowed to run unverified (GLOBMED_EDGE_UNVERIFIED)."""
    raw = os.environ.get(UNVERIFIED_ENV, "")
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return set()
    return {str(v) for v in value} if isinstance(value, list) else set()


def is_waived(path: str | Path) -> bool:
    p = Path(path)
    return bool(waived()) and _key(_folder(p)) in waived()


def _waive(folder: Path) -> None:
    os.environ[UNVERIFIED_ENV] = json.dumps(sorted(waived() | {_key(folder)}))


# Folder -> (signature of its files, manifest) of the last successful verification in this
# process, so that the CLI's check and the backend's own check hash a build once, not twice.
_memo: dict[str, tuple[tuple[object, ...], Manifest]] = {}


def memo_snapshot() -> dict[str, tuple[tuple[object, ...], Manifest]]:
    """The builds this process verified, for a runtime child (backends/isolated.py) to start with:
    without it the child re-hashed every build its parent had just hashed. An entry counts there
    only while every file's stat signature is unchanged, as here."""
    return dict(_memo)


def seed_memo(entries: dict[str, tuple[tuple[object, ...], Manifest]]) -> None:
    _memo.update(entries)


def _signature(folder: Path) -> tuple[object, ...]:
    out: list[object] = []
    for rel in [MANIFEST, *sorted(r for r, _, _ in scan_build(folder))]:
        st = os.lstat(folder / rel)
        out.append((rel, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
    return tuple(out)


def _verify(folder: Path) -> Manifest:
    key = _key(folder)
    try:
        before = _signature(folder)
    except OSError:
        before = ()
    hit = _memo.get(key)
    if hit is not None and before and hit[0] == before:
        return hit[1]
    manifest = require_valid_build(folder)
    if before:
        _memo[key] = (before, manifest)
    return manifest


def check_model(path: str | Path, *, verify: bool = True) -> Verification:
    """Apply the rule to `path` (a folder or a model file); raises ManifestError when refused.

    A path that does not exist gets status "source": the backend then says what is missing."""
    path = Path(path)
    folder = _folder(path)
    if not os.path.lexists(path) or not (looks_like_build(folder) or path.is_file()):
        return Verification(folder, "source")
    if os.path.lexists(folder / MANIFEST):
        try:
            return Verification(folder, "verified", _verify(folder))
        except ManifestError as exc:
            reason = str(exc)
    elif path.is_file():
        reason = f"{path}: a model file with no {MANIFEST} beside it"
    else:
        reason = f"{folder}: looks like a build but has no {MANIFEST}"
    if not verify or is_waived(folder):
        return Verification(folder, "unverified", reason=reason)
    raise ManifestError(f"{reason}; refused (check it with `globmed-edge models verify`, "
                        "or run it anyway with --unverified)")


def permit_unverified(paths: Iterable[str | Path]) -> list[Verification]:
    """`--unverified`: allow each of `paths` that fails the rule; returns those (to warn about).

    Paths that verify (or are source models) are not waived, so they are still checked later."""
    out = []
    for p in paths:
        try:
            check_model(p)
        except ManifestError:
            _waive(_folder(Path(p)))
            out.append(check_model(p))
    return out
