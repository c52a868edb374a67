"""Runtime backends behind one protocol (see base.py), found through one lazy registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from globmed_edge.registry import LazyRegistry

if TYPE_CHECKING:
    from globmed_edge.backends.base import Backend

BACKENDS = LazyRegistry(
    "backend",
    {
        "transformers": "globmed_edge.backends.transformers_backend:TransformersBackend",
        "llamacpp": "globmed_edge.backends.llamacpp_backend:LlamaCppBackend",
        "onnx": "globmed_edge.backends.onnx_backend:OnnxBackend",
        "gptq": "globmed_edge.backends.gptq_backend:GPTQBackend",
    },
)

#: Which backend serves which build format (the manifest's `format`).
FORMAT_BACKEND = {"hf": "transformers", "gguf": "llamacpp", "onnx": "onnx", "gptq": "gptq"}


#: Backends whose runtime is native code (C++) that can crash the process it runs in.
NATIVE = frozenset({"llamacpp", "onnx"})


def open_backend(path: str | Path, backend: str | None = None, *, isolate: bool | str = False,
                 **options: Any) -> Backend:
    """Construct (not load) the backend for a build or HF model folder.

    `isolate=True` runs it in a child process (`isolated.IsolatedBackend`), so that a native
    crash raises `RuntimeCrash` here instead of ending this process; `isolate="native"` (what
    quantize, bench and chat use) isolates the native runtimes (llama.cpp, onnxruntime) and runs
    torch in this process.
    """
    path = Path(path)
    check_threads(options.get("threads"))
    if backend is None:
        backend = FORMAT_BACKEND[detect_format(path)]
    cls = BACKENDS.load(backend)  # an unknown name fails here, with its did-you-mean
    if isolate == "native":
        isolate = backend in NATIVE
    elif not isinstance(isolate, bool):
        raise ValueError(f"isolate={isolate!r}: True, False or 'native'")
    real: Backend = cls(path, **options)  # cheap: checks the options here, loads nothing
    if isolate:
        from globmed_edge.backends.isolated import IsolatedBackend

        return IsolatedBackend(path, backend, **options)
    return real


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, else the machine's count)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads: object) -> None:
    """Refuse a thread count the machine cannot run: --threads 9999 made llama.cpp start 10,000
    threads (load average 686, no progress). "auto" and None are the runtime's own choice."""
    from globmed_edge.errors import ConfigError

    if threads is None or threads == "auto":
        return
    limit = usable_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limit:
        raise ConfigError(f"threads={threads!r}: must be a whole number from 1 to {limit} "
                          f"(the CPUs this machine lets this process use)")


def detect_format(path: Path) -> str:
    """The build format of a folder: its manifest's, else guessed from its files."""
    from globmed_edge.errors import ModelError

    manifest = path / "manifest.json"
    if manifest.is_file():
        import json

        try:
            fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (ValueError, OSError) as exc:
            raise ModelError(f"{manifest}: unreadable manifest ({exc})") from None
        if fmt in FORMAT_BACKEND:
            return str(fmt)
    if path.is_file() and path.suffix == ".gguf":
        return "gguf"
    if path.is_dir():
        if any(path.glob("*.gguf")):
            return "gguf"
        if any(path.glob("*.onnx")):
            return "onnx"
        if (path / "config.json").is_file():
            return "hf"
    raise ModelError(f"{path}: not a model folder or build (no manifest.json, config.json, *.gguf or *.onnx)")
