"""What a GGUF file says about itself, read with gguf-py (no model is loaded).

One reader for the core and the stages: the GGUF exporter records these facts in every build's
manifest (quantize/gguf.py) and `models prepare` in the manifest of a packaged GGUF it registers as
a build (edge/models.py). gguf-py comes with the [torch] and [gguf] extras.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from globmed_edge.deps import require


def gguf_file_name(model: str, quantization: str) -> str:
    """`<model>-<QUANT>.gguf`, llama.cpp's convention (SmolLM2-135M-Instruct-Q4_K_M.gguf): a build's
    file copied to a USB stick or into another llama.cpp front end still says what it is (builds
    made before 2026-12-03 hold `model.gguf`; they still open: a backend takes a folder's one .gguf)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "model"
    return f"{stem}-{quantization.upper()}.gguf"


def read_gguf(path: Path) -> dict[str, Any]:
    """general.name, architecture, file type, bits per weight (stored tensor bytes x 8 / elements),
    stop tokens (eos/eot/eom), chat template (present, sha256), pre-tokenizer, gguf-py version."""
    gguf = require("gguf", "gguf")
    r = gguf.GGUFReader(str(path))

    def get(key: str) -> Any:
        f = r.fields.get(key)
        return f.contents() if f is not None else None

    tokens = get("tokenizer.ggml.tokens") or []
    stop_ids = [get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    stops = list(dict.fromkeys(tokens[i] for i in stop_ids if isinstance(i, int) and 0 <= i < len(tokens)))
    n_bytes = sum(int(t.n_bytes) for t in r.tensors)
    n_elems = sum(int(t.n_elements) for t in r.tensors)
    ftype = get("general.file_type")
    names = {int(v): k for k, v in vars(gguf.LlamaFileType).items() if k.startswith("MOSTLY_")
             or k == "ALL_F32"} if hasattr(gguf, "LlamaFileType") else {}
    template = get("tokenizer.chat_template")
    return {"general_name": get("general.name"), "architecture": get("general.architecture"),
            "file_type": names.get(int(ftype), str(ftype)) if ftype is not None else None,
            "bits_per_weight": round(n_bytes * 8 / n_elems, 3) if n_elems else None,
            "stop_tokens": stops, "has_chat_template": bool(template),
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
            "pre_tokenizer": get("tokenizer.ggml.pre"), "gguf_version": _version("gguf")}


def _version(dist: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"
