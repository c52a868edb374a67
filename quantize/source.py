"""The source model folder a build is made from: one check before any exporter runs.

`check_source` gives a one-line ModelError for a folder that cannot be quantized (not a folder,
no or invalid config.json, an unsupported architecture, missing weights or shards, a truncated or
garbled safetensors file, no tokenizer) and otherwise says what the folder holds; the exporters
share `SUPPORTED_ARCHITECTURES` and `check_safetensors`. `tokenizer_record` hashes the tokenizer
files and the chat template for the manifest.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from globmed_edge.errors import ModelError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


@dataclass(frozen=True)
class SourceInfo:
    architecture: str
    model_type: str | None
    weights: tuple[str, ...]
    tokenizer: dict[str, Any]


def check_source(path: Path) -> SourceInfo:
    """One-line ModelError for a folder that cannot be quantized; what it holds otherwise."""
    import json

    cfg = path / "config.json"
    if not path.is_dir():
        raise ModelError(f"{path}: not a folder")
    if not cfg.is_file():
        raise ModelError(f"{path}: missing config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{cfg}: invalid JSON ({exc})") from None
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(f"{cfg}: unsupported architecture {arch!r} "
                         f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    weights = _weight_files(path)
    for w in weights:
        if w.endswith(".safetensors"):
            check_safetensors(path / w)
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        raise ModelError(f"{path}: missing tokenizer files (tokenizer.json or tokenizer.model)")
    return SourceInfo(arch, config.get("model_type"), tuple(weights), tokenizer_record(path))


def _weight_files(path: Path) -> list[str]:
    import json

    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"{index}: unreadable shard index ({exc})") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelError(f"{path}: missing weight shard(s) {', '.join(missing)} listed in {index.name}")
        return shards
    found = sorted(p.name for p in path.glob("*.safetensors")) or sorted(p.name for p in path.glob("pytorch_model*.bin"))
    if not found:
        raise ModelError(f"{path}: missing weights (no *.safetensors or pytorch_model*.bin)")
    return found


def check_safetensors(path: Path) -> None:
    """Header and size of a safetensors file; catches truncated and garbled files cheaply."""
    import json

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little") if size >= 8 else -1
            if not 0 < n <= min(size - 8, 100 << 20):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(fh.read(n).decode("utf-8"))
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
        if 8 + n + max(ends, default=0) != size:
            raise ValueError(f"the header describes {8 + n + max(ends, default=0)} bytes, the file has {size}")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: corrupted safetensors file ({str(exc)[:160]})") from None


def tokenizer_record(path: Path) -> dict[str, Any]:
    """sha256 of the tokenizer files and of the chat template (what parity compares against)."""
    import hashlib
    import json

    from globmed_edge.atomic import sha256_file

    files = {n: sha256_file(path / n) for n in TOKENIZER_FILES if (path / n).is_file()}
    template, where = None, None
    if (path / "chat_template.jinja").is_file():
        template, where = (path / "chat_template.jinja").read_text(encoding="utf-8"), "chat_template.jinja"
    elif (path / "tokenizer_config.json").is_file():
        with contextlib.suppress(ValueError):
            t = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
            template, where = (t, "tokenizer_config.json") if isinstance(t, str) else (None, None)
    combined = hashlib.sha256("".join(f"{n}\t{h}\n" for n, h in files.items()).encode()).hexdigest()
    return {"sha256": combined, "files": files, "chat_template_from": where,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None}


def parameter_count(path: Path) -> int:
    """Parameters of a model folder, counted from its safetensors headers (no tensor is read)."""
    import json
    import math

    n = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        n += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return n
