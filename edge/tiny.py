"""A tiny randomly initialised causal LM for fast tests and drift checks.

Its weights are drawn from a normal distribution, so unlike the embedded models (dequantized
from 4-bit GGUFs) they do not lie on a low-bit grid: re-quantizing it shows real drift, in the
expected order f16 < q8_0 < q4_k_m. Dimensions are multiples of 256 so llama.cpp's k-quants
apply to every matrix. The tokenizer and chat template are the embedded default model's
(read from its packaged GGUF), so the model handles real multilingual text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from globmed_edge.atomic import atomic_dir
from globmed_edge.errors import ConfigError
from globmed_edge.paths import force_offline

Arch = Literal["qwen3", "llama"]
ARCHES: tuple[str, ...] = ("qwen3", "llama")


def build_tiny_model(
    out: str | Path,
    *,
    arch: Arch = "qwen3",
    seed: int = 0,
    hidden_size: int = 256,
    intermediate_size: int = 512,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    init_std: float = 0.05,
    max_position_embeddings: int = 2048,
) -> Path:
    """Write a tiny random model folder (bf16 safetensors + tokenizer) to `out`; return it."""
    if arch not in ARCHES:
        raise ConfigError(f"unknown tiny architecture {arch!r} (known: {', '.join(ARCHES)})")
    if hidden_size % num_heads:
        raise ConfigError("hidden_size must be divisible by num_heads")
    force_offline()
    from globmed_edge.deps import require, require_transformers

    torch = require("torch", "torch")
    transformers = require_transformers()
    from globmed_edge.models import _locate_smollm2

    gguf = _locate_smollm2()
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    common = dict(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, max_position_embeddings=max_position_embeddings,
        initializer_range=init_std, tie_word_embeddings=True, rms_norm_eps=1e-6,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    if arch == "qwen3":
        config = transformers.Qwen3Config(head_dim=hidden_size // num_heads, **common)
    else:
        config = transformers.LlamaConfig(**common)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.architectures = [type(model).__name__]
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "globmed_model.json").write_text(json.dumps({
            "name": f"tiny-random-{arch}", "title": f"tiny random {arch} (seed {seed})",
            "license": "Apache-2.0", "seed": seed, "init_std": init_std,
        }, indent=2) + "\n", encoding="utf-8")
    return out
