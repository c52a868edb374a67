"""The build manifest: `manifest.json` beside every build, and its verification.

A build without a valid manifest is not loaded, and a build whose files do not match their
recorded sha256 is refused (`verify_build`). The schema is versioned; readers reject unknown
top-level keys so a typo never passes silently.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_write_text, sha256_file
from globmed_edge.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FORMATS = ("hf", "gguf", "onnx", "gptq")


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
        if version != SCHEMA_VERSION:
            raise ManifestError(f"{where}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        for key in ("name", "format", "quantization", "files", "source"):
            if key not in data:
                raise ManifestError(f"{where}: missing key {key!r}")
        if data["format"] not in FORMATS:
            raise ManifestError(f"{where}: format {data['format']!r} is not one of {', '.join(FORMATS)}")
        try:
            files = [FileEntry(**f) for f in data["files"]]
        except TypeError as exc:
            raise ManifestError(f"{where}: bad file entry ({exc})") from None
        return cls(**{**data, "files": files})


def hash_build_files(build_dir: Path) -> list[FileEntry]:
    """Every file of a build except the manifest itself, sorted by path."""
    entries = []
    for p in sorted(build_dir.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            entries.append(FileEntry(p.relative_to(build_dir).as_posix(), p.stat().st_size, sha256_file(p)))
    return entries


def write_manifest(build_dir: Path, manifest: Manifest) -> Path:
    path = build_dir / MANIFEST
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def load_manifest(build_dir: Path) -> Manifest:
    path = Path(build_dir) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{build_dir}: no {MANIFEST}; not a globmed-edge build (or an interrupted one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ManifestError(f"{path}: invalid JSON ({exc})") from None
    return Manifest.from_dict(data, str(path))


@dataclass(frozen=True)
class Mismatch:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def verify_build(build_dir: Path, *, check_hashes: bool = True) -> tuple[Manifest, list[Mismatch]]:
    """Re-hash a build's files against its manifest. Returns the manifest and every mismatch."""
    build_dir = Path(build_dir)
    manifest = load_manifest(build_dir)
    problems: list[Mismatch] = []
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        p = build_dir / entry.path
        if not p.is_file():
            problems.append(Mismatch(entry.path, "missing"))
            continue
        size = p.stat().st_size
        if size != entry.size:
            problems.append(Mismatch(entry.path, f"size {size} != recorded {entry.size}"))
            continue
        if check_hashes and sha256_file(p) != entry.sha256:
            problems.append(Mismatch(entry.path, "sha256 differs from the manifest (file modified or corrupted)"))
    for p in sorted(build_dir.rglob("*")):
        rel = p.relative_to(build_dir).as_posix()
        if p.is_file() and p.name != MANIFEST and rel not in listed:
            problems.append(Mismatch(rel, "not listed in the manifest"))
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
