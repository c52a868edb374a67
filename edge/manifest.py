"""The build manifest: `manifest.json` beside every build, and its verification.

A build without a valid manifest is not loaded, and a build whose files do not match their
recorded sha256 is refused (`verify_build`). The schema is versioned; readers reject unknown
top-level keys and values of the wrong type, so a typo never passes silently.

Nothing outside the build is ever read because a manifest says so: a file path must be a plain
relative path inside the build (no `..`, no absolute path, no backslash), is checked component by
component with `lstat` (a symbolic link anywhere is refused, never followed) and is opened with
O_NOFOLLOW. A build may hold only regular files and folders.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_write_text, sha256_file
from globmed_edge.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMATS = ("hf", "gguf", "onnx", "gptq")
MAX_FILE_BYTES = 1 << 40  # 1 TiB: no model file is larger; a bigger recorded size is nonsense
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KB; refuse to slurp /dev/zero
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    name: str
    format: str
    quantization: str
    bits_per_weight: float | None
    files: list[FileEntry]
    source: dict[str, Any]
    tokenizer: dict[str, Any] = field(default_factory=dict)
    stop_tokens: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    tools: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    allow_drift: bool = False
    wall_seconds: float | None = None
    peak_rss_bytes: int | None = None
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: manifest must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise ManifestError(f"{where}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        for key in ("name", "format", "quantization", "files", "source"):
            if key not in data:
                raise ManifestError(f"{where}: missing key {key!r}")
        for key, kind in _TYPES.items():
            if key in data and not _is(data[key], kind):
                raise ManifestError(f"{where}: {key} must be {_KIND_NAMES[kind]}, not {_short(data[key])}")
        if data["format"] not in FORMATS:
            raise ManifestError(f"{where}: format {data['format']!r} is not one of {', '.join(FORMATS)}")
        if not data["name"].strip():
            raise ManifestError(f"{where}: name is empty")
        if not all(isinstance(t, str) for t in data.get("stop_tokens", [])):
            raise ManifestError(f"{where}: stop_tokens must be a list of strings")
        if not all(isinstance(v, str) for v in data.get("tools", {}).values()):
            raise ManifestError(f"{where}: tools must map names to version strings")
        files = [_file_entry(f, f"{where}: files[{i}]") for i, f in enumerate(data["files"])]
        seen: set[str] = set()
        for f in files:
            if f.path in seen:
                raise ManifestError(f"{where}: file {f.path!r} is listed twice")
            seen.add(f.path)
        return cls(**{**data, "files": files})


# Expected JSON type of each manifest key ("num" = int or float, never bool; "?" = or null).
_TYPES = {"name": "str", "format": "str", "quantization": "str", "bits_per_weight": "num?", "files": "list",
          "source": "dict", "tokenizer": "dict", "stop_tokens": "list", "calibration": "dict?", "tools": "dict",
          "parity": "dict?", "allow_drift": "bool", "wall_seconds": "num?", "peak_rss_bytes": "int?",
          "created_at": "str", "extra": "dict"}
_KIND_NAMES = {"str": "a string", "num?": "a number or null", "list": "a list", "dict": "an object",
               "dict?": "an object or null", "bool": "true or false", "int?": "an integer or null"}


def _is(value: Any, kind: str) -> bool:
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    if kind == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "list": list, "dict": dict, "bool": bool}[kind])


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _file_entry(item: Any, where: str) -> FileEntry:
    if not isinstance(item, dict) or set(item) != {"path", "size", "sha256"}:
        raise ManifestError(f"{where}: a file entry is an object with exactly path, size and sha256")
    path, size, digest = item["path"], item["size"], item["sha256"]
    if not isinstance(path, str):
        raise ManifestError(f"{where}: path must be a string, not {_short(path)}")
    check_relative_path(path, where)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE_BYTES:
        raise ManifestError(f"{where} ({path}): size must be an integer from 0 to {MAX_FILE_BYTES}, "
                            f"not {_short(size)}")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ManifestError(f"{where} ({path}): sha256 must be 64 lowercase hex digits, not {_short(digest)}")
    return FileEntry(path, size, digest)


def check_relative_path(path: str, where: str = MANIFEST) -> None:
    """Refuse a manifest file path that could name anything outside its build."""
    bad = None
    if not path or "\x00" in path or "\\" in path:
        bad = "an empty path, a NUL or a backslash"
    elif path.startswith("/") or re.match(r"[A-Za-z]:", path):
        bad = "an absolute path"
    elif any(part in ("", ".", "..") for part in path.split("/")):
        bad = "'..', '.' or an empty component"
    elif path == MANIFEST:
        bad = "the manifest itself"
    if bad:
        raise ManifestError(f"{where}: path {_short(path)} is {bad}; "
                            "file paths must be relative and stay inside the build")


def scan_build(build_dir: Path, *, skip_manifest: bool = True) -> Iterator[tuple[str, str, int]]:
    """(relative path, kind, size) of everything in a build, never following a link.

    kind is "file", "link" or "special" (FIFO, socket, device); folders are walked, not listed.
    The top-level manifest.json is left out unless `skip_manifest` is False (a bundle, whose
    inventory must list every file, walks its tree with this too)."""
    stack = [(str(build_dir), "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = prefix + e.name
            if skip_manifest and rel == MANIFEST:
                continue
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                yield rel, "link", 0
            elif stat.S_ISDIR(st.st_mode):
                stack.append((e.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                yield rel, "file", st.st_size
            else:
                yield rel, "special", 0


def hash_build_files(build_dir: Path) -> list[FileEntry]:
    """Every file of a build except the manifest itself, sorted by path (links are refused)."""
    entries = []
    for rel, kind, size in sorted(scan_build(Path(build_dir))):
        if kind != "file":
            raise ManifestError(f"{Path(build_dir) / rel}: a build may hold only regular files ({kind})")
        entries.append(FileEntry(rel, size, sha256_file(Path(build_dir) / rel, follow_symlinks=False)))
    return entries


def write_manifest(build_dir: Path, manifest: Manifest) -> Path:
    path = build_dir / MANIFEST
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def load_manifest(build_dir: Path) -> Manifest:
    path = Path(build_dir) / MANIFEST
    try:
        st = os.lstat(path)
    except OSError:
        raise ManifestError(f"{build_dir}: no {MANIFEST}; not a globmed-edge build (or an interrupted one)") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise ManifestError(f"{path}: {kind}; a manifest must be a regular file inside its build")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: {st.st_size} bytes, too large for a manifest")
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except PermissionError:
        raise ManifestError(f"{path}: not readable by this user (permissions)") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise ManifestError(f"{path}: invalid JSON ({reason})") from None
    return Manifest.from_dict(data, str(path))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


@dataclass(frozen=True)
class Mismatch:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def verify_build(build_dir: Path, *, check_hashes: bool = True) -> tuple[Manifest, list[Mismatch]]:
    """Re-hash a build's files against its manifest. Returns the manifest and every mismatch.

    Only what `scan_build` finds inside the folder is ever statted or opened, so a manifest
    cannot make this read, hash or measure a file elsewhere."""
    build_dir = Path(build_dir)
    manifest = load_manifest(build_dir)
    try:
        present = {rel: (kind, size) for rel, kind, size in sorted(scan_build(build_dir))}
    except OSError as exc:
        raise ManifestError(f"{build_dir}: cannot list the build ({exc.strerror})") from None
    problems: list[Mismatch] = []
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        kind, size = present.get(entry.path, (None, 0))
        if kind is None:
            problems.append(Mismatch(entry.path, "missing"))
        elif kind != "file":
            problems.append(Mismatch(entry.path, f"not a regular file ({kind}); builds hold only regular files"))
        elif size != entry.size:
            problems.append(Mismatch(entry.path, f"size {size} != recorded {entry.size}"))
        elif check_hashes:
            try:
                digest = sha256_file(build_dir / entry.path, follow_symlinks=False)
            except OSError as exc:
                problems.append(Mismatch(entry.path, f"cannot be read ({exc.strerror})"))
                continue
            if digest != entry.sha256:
                problems.append(Mismatch(entry.path, "sha256 differs from the manifest (file modified or corrupted)"))
    for rel, (kind, _) in present.items():
        if rel not in listed:
            what = {"file": "not listed in the manifest", "link": "a symbolic link (not allowed in a build)",
                    "special": "not a regular file (not allowed in a build)"}[kind]
            problems.append(Mismatch(rel, what))
    return manifest, problems


def require_valid_build(build_dir: Path) -> Manifest:
    """Load a build's manifest and refuse the build if any file does not match it."""
    manifest, problems = verify_build(build_dir)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ManifestError(f"{build_dir}: files do not match manifest.json: {shown}{more}")
    return manifest


def find_builds(roots: list[Path]) -> list[Path]:
    """Folders under `roots` (depth <= 2) that hold a manifest.json; hidden (partial) ones skipped."""
    found = []
    for root in roots:
        if not root.is_dir():
            continue
        for m in sorted(root.glob("*/manifest.json")) + sorted(root.glob("*/*/manifest.json")):
            if not any(part.startswith(".") for part in m.parent.relative_to(root).parts):
                found.append(m.parent)
    return found
