"""Write files and directories so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask sets it)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(path: Path, mode: int | None = None) -> int:
    """The permissions a rewritten `path` gets: `mode` when given, else those of the regular file
    it replaces, else what `open()` would give a new file (0666 less the umask).

    mkstemp makes its file 0600, so without this every atomically written file would be
    private to its owner: a manifest another user cannot read makes a shared build unusable."""
    if mode is not None:
        return mode
    try:
        st = os.lstat(path)
    except OSError:
        return 0o666 & ~current_umask()
    import stat

    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666 & ~current_umask()


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8", *, mode: int | None = None) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename over `path`."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename over `path`.

    The file gets `file_mode(path, mode)`: an explicit mode, the replaced file's, or the umask's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    perms = file_mode(path, mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, perms)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; rename it to `final` only on success.

    The temporary name starts with `.` and ends with `.partial`, so listings that skip
    hidden entries never show it, and an interrupted run leaves nothing that looks complete.
    On failure (including KeyboardInterrupt) the temporary directory is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(final)
        # Move the old one aside first so there is never a moment with neither.
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def sha256_file(path: Path, chunk: int = 1 << 20, *, follow_symlinks: bool = True) -> str:
    """sha256 of a file; with follow_symlinks=False a symbolic link is refused (OSError, ELOOP)
    instead of hashing whatever it points to."""
    import hashlib

    flags = os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    h = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
