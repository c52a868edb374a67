"""`bundle verify`: is this the bundle that was made, complete, unaltered and safe to unpack?

In order, each failure one line naming the file: the paths (no link, no special file, nothing
unlisted), the signature of SHA256SUMS when a public key is given, each file's size, then each
file's sha256, then bundle.json against what is on disk (its builds and wheels are there, its
format is one this version reads). Nothing is installed or changed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from globmed_edge.bundle.inventory import (
    BUILDS,
    MANIFEST,
    SIGNATURE,
    SUMS,
    WHEELS,
    check_files,
    extract_archive,
    read_sums,
)
from globmed_edge.errors import BundleError

FORMAT = "globmed-edge-bundle"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Verified:
    folder: Path
    manifest: dict[str, Any]
    files: int
    bytes: int
    signed: bool  # a SHA256SUMS.sig is present
    key_fingerprint: str | None  # the public key it was checked against (None: not checked)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{path}: not a globmed-edge bundle manifest (format is not {FORMAT!r})")
    if data.get("version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {data.get('version')!r}; this globmed-edge reads "
                          f"version {FORMAT_VERSION} (make the bundle with a matching globmed-edge)")
    for key in ("builds", "wheels", "files", "target"):
        if not isinstance(data.get(key), (list, dict)):
            raise BundleError(f"{path}: {key!r} is missing or not a list/object")
    return data


def _sizes(manifest: dict[str, Any], where: Path) -> dict[str, int]:
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(v, int) and v >= 0 for v in files.values()):
        raise BundleError(f"{where}: 'files' must map each path to its size in bytes")
    return {str(k): int(v) for k, v in files.items()}


def verify_folder(folder: Path, *, key: Path | None = None,
                  progress: Callable[[str, int], None] | None = None) -> Verified:
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder or .tar file")
    sums = read_sums(folder)
    sig = folder / SIGNATURE
    fingerprint = None
    if key is not None:
        if not sig.is_file() or sig.is_symlink():
            raise BundleError(f"{sig}: missing; the bundle is not signed, but a public key was given "
                              "(refusing: an unsigned bundle cannot prove where it came from)")
        from globmed_edge.bundle.signing import check_signature

        fingerprint = check_signature(key, (folder / SUMS).read_bytes(), sig.read_bytes(), str(folder / SUMS))
    # bundle.json is read for sizes before it is hashed: only numbers are taken from it until then
    manifest = read_manifest(folder)
    sizes = _sizes(manifest, folder / MANIFEST)
    if set(sizes) != set(sums) - {MANIFEST}:
        odd = sorted(set(sizes) ^ (set(sums) - {MANIFEST}))
        raise BundleError(f"{folder / MANIFEST}: its file list and {SUMS} disagree (first: {odd[0]})")
    total = check_files(folder, sums, sizes, progress)
    for b in manifest["builds"]:
        name = b.get("name") if isinstance(b, dict) else None
        if not isinstance(name, str) or f"{BUILDS}/{name}/manifest.json" not in sums:
            raise BundleError(f"{folder / MANIFEST}: build {name!r} has no {BUILDS}/{name}/manifest.json in the bundle")
    for w in manifest["wheels"]:
        fname = w.get("file") if isinstance(w, dict) else None
        if not isinstance(fname, str) or f"{WHEELS}/{fname}" not in sums:
            raise BundleError(f"{folder / MANIFEST}: wheel {fname!r} is not in the bundle's {WHEELS}/")
    return Verified(folder, manifest, len(sums), total, sig.is_file(), fingerprint)


@contextlib.contextmanager
def opened(path: Path, scratch: Path | None = None) -> Iterator[Path]:
    """The bundle folder of `path`: the folder itself, or a .tar unpacked (after its members are
    checked) into a temporary folder under `scratch` (default: the system's temporary folder, not the
    stick's, which may be read-only) that is removed afterwards."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle folder or .tar file")
    base = scratch or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", suffix=".partial", dir=base))
    try:
        yield extract_archive(path, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if scratch is not None:
            with contextlib.suppress(OSError):
                scratch.rmdir()  # only when empty: another install may be using it


def verify_bundle(path: Path, *, key: Path | None = None,
                  progress: Callable[[str, int], None] | None = None) -> Verified:
    with opened(path) as folder:
        return verify_folder(folder, key=key, progress=progress)
