"""Runtime backends behind one protocol (see base.py), found through one lazy registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from globmed_edge.registry import LazyRegistry

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


def open_backend(path: str | Path, backend: str | None = None, **options: Any) -> Any:
    """Construct (not load) the backend for a build or HF model folder."""
    path = Path(path)
    if backend is None:
        backend = FORMAT_BACKEND[detect_format(path)]
    cls = BACKENDS.load(backend)
    return cls(path, **options)


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
