"""Opening a build for chat: verify it against its manifest, construct and load its backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from globmed_edge.backends.base import Backend

BackendFactory = Callable[[Path], "Backend"]


def resolve_build(arg: str | Path) -> Path:
    """A BUILD argument: a folder (build or HF model) or the name of a prepared embedded model."""
    from globmed_edge.models import resolve_model

    return resolve_model(arg)


def default_factory(path: Path, threads: int | str | None = None) -> Backend:
    """Apply the manifest rule (a build is re-hashed against manifest.json; a build without a
    valid one is refused unless `--unverified` named it), then construct its backend. The
    backend's `load()` applies the rule again, to files this process already hashed: it reuses
    that result (globmed_edge.trust's memo, also handed to a runtime child), so a build is
    hashed once.

    llama.cpp and onnxruntime builds are served from a child process (backends/isolated.py), so
    that a native crash costs the answer in progress and the app says so (RuntimeCrash).
    `threads`: CPU threads for the runtime (an int, or "auto"); by default a GGUF build gets
    `threads="auto"`: before each answer llama.cpp uses the physical cores
    that other programs leave free (on a busy 2-core laptop, 2 threads can decode 3x slower
    than 1; docs/backends.md, "Threads")."""
    from globmed_edge.backends import detect_format, open_backend
    from globmed_edge.trust import check_model

    check_model(path)  # the one manifest rule (globmed_edge.trust); a refused build raises here
    # native runtimes run in a child process: a crash there ends the answer, not the app
    if threads is None and detect_format(path) == "gguf":
        threads = "auto"
    if threads is None:
        return open_backend(path, isolate="native")
    return open_backend(path, isolate="native", threads=threads)


def threads_factory(threads: int | str | None) -> BackendFactory:
    """The default factory with a fixed thread setting (`chat --threads`)."""
    return lambda path: default_factory(path, threads)


def load_backend(path: Path, factory: BackendFactory | None = None) -> Backend:
    backend = (factory or default_factory)(path)
    backend.load()
    return backend


def build_label(path: Path) -> str:
    """A short name for a build: its manifest name, else the folder name."""
    from globmed_edge.manifest import MANIFEST, load_manifest

    if (path / MANIFEST).is_file():
        try:
            return load_manifest(path).name
        except Exception:
            return path.name
    return path.name
