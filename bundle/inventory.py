"""What a bundle holds and how its files are checked: SHA256SUMS, paths, the archive form.

A bundle is a folder (or one .tar of that folder):

    bundle.json          what is inside and why (builds, tiers, languages, target, sizes, records)
    builds/<name>/...    each build exactly as `quantize` wrote it, manifest included
    wheels/*.whl         the clinic side's wheelhouse (pip install --no-index)
    install.sh, README.txt
    SHA256SUMS           `sha256sum -c` format, one line for every other file (bundle.json too)
    SHA256SUMS.sig       optional: an Ed25519 signature of SHA256SUMS (bundle/signing.py)

The signature covers SHA256SUMS, and SHA256SUMS covers every byte of every other file, so one
signature check plus the checksums authenticate the whole bundle, with nothing but `openssl` and
`sha256sum` on a laptop that has no globmed-edge yet (install.sh does exactly that, in sh).
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from globmed_edge.atomic import sha256_file
from globmed_edge.errors import BundleError
from globmed_edge.manifest import scan_build

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
MANIFEST = "bundle.json"
BUILDS = "builds"
WHEELS = "wheels"
UNLISTED = (SUMS, SIGNATURE)  # the only files SHA256SUMS does not list
_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")
_NAME = re.compile(r"[A-Za-z0-9._+@=,-]+")  # what create ever writes: no spaces, quotes or escapes


def check_path(rel: str, where: str) -> None:
    """Refuse a bundle path that could name anything outside the bundle, or that sha256sum would
    print escaped (create never writes such a name)."""
    parts = rel.split("/")
    if rel.startswith("/") or re.match(r"[A-Za-z]:", rel):
        raise BundleError(f"{where}: {rel!r} is an absolute path; a bundle holds only relative paths")
    if any(part in ("", ".", "..") for part in parts):
        raise BundleError(f"{where}: {rel!r} has a '..', '.' or empty component; it would leave the bundle")
    bad = next((part for part in parts if not _NAME.fullmatch(part)), None)
    if bad is not None:
        raise BundleError(f"{where}: {rel!r} has a character a bundle never uses (letters, digits and ._+@=,- only)")


def walk(root: Path) -> Iterator[tuple[str, int]]:
    """(relative path, size) of every regular file under `root`, never following a link; a link, a
    device, a FIFO or a socket anywhere in the bundle is refused (create never makes one)."""
    for rel, kind, size in scan_build(root, skip_manifest=False):
        full = root / rel
        if kind == "link":
            raise BundleError(f"{full}: a symbolic link inside the bundle (to {os.readlink(full)!r}); refused")
        if kind != "file":
            raise BundleError(f"{full}: not a regular file (a device, FIFO or socket); refused")
        yield rel, size


def write_sums(root: Path, progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Hash every file under `root` (but SHA256SUMS and its signature) and write SHA256SUMS."""
    sums = {}
    for rel, _size in sorted(walk(root)):
        if rel in UNLISTED:
            continue
        check_path(rel, str(root / rel))
        if progress:
            progress(rel)
        sums[rel] = sha256_file(root / rel, follow_symlinks=False)
    (root / SUMS).write_text("".join(f"{h}  {rel}\n" for rel, h in sums.items()), encoding="ascii")
    return sums


def read_sums(root: Path) -> dict[str, str]:
    """SHA256SUMS parsed strictly: each line `<64 hex>  <safe relative path>`, no duplicates."""
    path = root / SUMS
    if not path.is_file() or path.is_symlink():
        raise BundleError(f"{path}: missing; this is not a globmed-edge bundle, or it was copied incompletely")
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError:
        raise BundleError(f"{path}: not plain ASCII; it was altered or damaged") from None
    for n, line in enumerate(lines, 1):
        m = _LINE.fullmatch(line)
        if m is None:
            raise BundleError(f"{path}:{n}: not a '<sha256>  <path>' line")
        digest, rel = m.groups()
        check_path(rel, f"{path}:{n}")
        if rel in UNLISTED:
            raise BundleError(f"{path}:{n}: lists {rel}, which it cannot cover")
        if rel in out:
            raise BundleError(f"{path}:{n}: {rel} is listed twice")
        out[rel] = digest
    if MANIFEST not in out:
        raise BundleError(f"{path}: does not list {MANIFEST}")
    return out


def check_files(root: Path, sums: dict[str, str], sizes: dict[str, int],
                progress: Callable[[str, int], None] | None = None) -> int:
    """Every file on disk listed, every listed file present with its recorded size and sha256.
    Sizes are compared first (an interrupted copy is named at once, before hours of hashing).
    Returns the bytes hashed."""
    on_disk = dict(walk(root))
    for rel in sorted(on_disk):
        if rel not in sums and rel not in UNLISTED:
            raise BundleError(f"{root / rel}: not listed in {SUMS}; something was added to the bundle")
    for rel in sums:
        if rel not in on_disk:
            raise BundleError(f"{root / rel}: listed in {SUMS} but missing (copied incompletely?)")
        want = sizes.get(rel)
        if want is not None and on_disk[rel] != want:
            raise BundleError(f"{root / rel}: {on_disk[rel]} bytes, the bundle says {want} (copied incompletely?)")
    total = 0
    for rel, digest in sums.items():
        if progress:
            progress(rel, on_disk[rel])
        if sha256_file(root / rel, follow_symlinks=False) != digest:
            raise BundleError(f"{root / rel}: sha256 differs from {SUMS}; the file was altered or damaged")
        total += on_disk[rel]
    return total


# ------------------------------------------------------------------------------ the archive form

def write_archive(folder: Path, tar_path: Path, top: str) -> None:
    """`folder` as one uncompressed tar (GGUF weights do not compress) under the top folder `top`;
    only regular files and folders, no owner names, mode 0644/0755."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() or info.name.endswith(".sh") else 0o644
        return info

    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(folder, arcname=top, recursive=True, filter=clean)


def extract_archive(tar_path: Path, dest: Path) -> Path:
    """Unpack a bundle .tar into the empty folder `dest` after checking every member: regular files
    and folders only, each under one top folder, no link, no absolute path, no '..'. Returns the
    bundle folder. Nothing is taken from the archive but names and bytes (no owners, no modes but
    the execute bit of install.sh), so this does not depend on tarfile's extraction filters."""
    try:
        tar = tarfile.open(tar_path, "r:")  # noqa: SIM115 - closed by the `with` below
        members = tar.getmembers()
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{tar_path}: not a readable bundle archive ({exc})") from None
    with tar:
        tops = set()
        for m in members:
            check_path(m.name.rstrip("/"), f"{tar_path}: member {m.name!r}")
            if not (m.isfile() or m.isdir()):
                raise BundleError(f"{tar_path}: member {m.name!r} is a link or special file; refused")
            tops.add(m.name.split("/")[0])
        if len(tops) != 1:
            raise BundleError(f"{tar_path}: holds {len(tops)} top-level entries; a bundle archive holds one folder")
        for m in members:
            target = dest / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None  # a regular member always has data
            with src, open(target, "xb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
            if m.name.endswith(".sh"):
                target.chmod(0o755)
    return dest / tops.pop()
