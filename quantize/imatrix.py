"""Importance matrix for llama.cpp quantization, computed from calibration text with torch.

What llama-imatrix computes, per weight matrix W (out x in) of a transformer block: the sum over
all calibration tokens of the squared input activation of each input column, and the number of
tokens; llama.cpp's quantizer then weighs each column's rounding error by sum / count. Here the
activations come from forward pre-hooks on the source Hugging Face model's `nn.Linear` modules,
so the matrix describes the model being built (not a converted copy of it), and it is computed
once per export from the multilingual medical calibration set the runner passes in.

HF module names are mapped to GGUF tensor names with gguf-py's own tensor name map
(`gguf.get_tensor_name_map`), and checked against the tensors of the converted file. llama.cpp
(the version in llama-cpp-python 0.3.36) takes the matrix as a C array of
`llama_model_imatrix_data {name, data, size}` ended by a NULL name (src/llama-quant.cpp builds its
own map from it), which llama-cpp-python exposes as a ctypes structure: no C++ shim is needed.
Like llama-imatrix's default, only the blk.* matrices are collected (not the output head).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.errors import ConfigError, ModelError


@dataclass(frozen=True)
class Imatrix:
    """Per GGUF tensor name: mean squared input activation per input column (float32)."""

    values: dict[str, Any]  # name -> numpy float32 array of length in_features
    n_tokens: int
    n_texts: int
    unmapped: tuple[str, ...] = field(default=())

    @property
    def sha256(self) -> str:
        """Identity of the matrix: names, token count and the float32 bytes, in name order."""
        import numpy as np

        h = hashlib.sha256(f"imatrix/v1 tokens={self.n_tokens}\n".encode())
        for name in sorted(self.values):
            h.update(name.encode() + b"\0")
            h.update(np.ascontiguousarray(self.values[name], dtype=np.float32).tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> None:
        import numpy as np

        arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float32) for k, v in self.values.items()}
        np.savez(path, **arrays)


#: Token budget: texts are used in the calibration set's (language round-robin) order until it
#: is spent, so a cut keeps the languages balanced. 8.5k tokens (48 texts) already cut the KL of
#: SmolLM2-135M's q4_k_m build by a third; llama-imatrix is often run on ~50k. The forward pass
#: costs ~2 x parameters x tokens FLOPs (135M: ~2 TFLOP, a few minutes on 2 CPU cores).
DEFAULT_BUDGET = 8192


def collect(source: Path, texts: Sequence[str], *, max_tokens: int = 512,
            budget: int = DEFAULT_BUDGET, threads: int = 0,
            progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], int, int]:
    """Run the HF model over `texts` until `budget` tokens are seen.

    Returns {hf module name: (sum of x^2 per input column, token count)}, tokens, texts used.
    """
    if not texts:
        raise ConfigError("imatrix: the calibration set has no texts")
    from globmed_edge.deps import require, require_transformers
    from globmed_edge.paths import force_offline

    force_offline()
    torch = require("torch", "torch")
    transformers = require_transformers()
    tok = transformers.AutoTokenizer.from_pretrained(source)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.to(device).eval()
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def pre(_module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float()
            x = x.reshape(-1, x.shape[-1])
            sq = (x * x).sum(dim=0)
            sums[name] = sums[name] + sq if name in sums else sq
            counts[name] = counts.get(name, 0) + x.shape[0]
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"]
    if not handles:
        raise ModelError(f"{source}: imatrix found no linear layers inside transformer blocks")
    n_tokens = used = 0
    threads_before = torch.get_num_threads()
    if threads > 0:  # on a busy 2-core machine 1 thread ran ~6x faster than 2 (OpenMP contention)
        torch.set_num_threads(threads)
    # The transformer body only: the LM head's logits (vocab x tokens) are not needed.
    body = getattr(model, model.base_model_prefix, model)
    try:
        with torch.inference_mode():
            for i, text in enumerate(texts):
                if n_tokens >= budget:
                    break
                ids = tok(text, add_special_tokens=True, truncation=True,
                          max_length=min(max_tokens, budget - n_tokens), return_tensors="pt")["input_ids"]
                if ids.shape[1] == 0:
                    continue
                body(input_ids=ids.to(device))
                n_tokens += int(ids.shape[1])
                used += 1
                if progress is not None and (i % 16 == 0 or i == len(texts) - 1):
                    progress(f"imatrix: {i + 1}/{len(texts)} texts, {n_tokens} tokens")
    finally:
        for h in handles:
            h.remove()
        torch.set_num_threads(threads_before)
    if n_tokens == 0:
        raise ConfigError("imatrix: the calibration texts produced no tokens")
    # Every hooked layer sees every token once (no MoE here), so count == n_tokens per layer.
    out = {name: (s.cpu().numpy(), counts[name]) for name, s in sums.items()}
    return out, n_tokens, used


def to_gguf_names(stats: dict[str, Any], gguf_file: Path, n_tokens: int, n_texts: int) -> Imatrix:
    """Map HF module names to the tensor names of `gguf_file`; keep sizes that match."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(gguf_file))
    arch_name = _field_str(reader, "general.architecture")
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is None:
        raise ModelError(f"{gguf_file}: gguf {gguf.__name__} has no architecture {arch_name!r}")
    n_blocks = int(_field_value(reader, f"{arch_name}.block_count"))
    tmap = gguf.get_tensor_name_map(arch, n_blocks)
    ne0 = {t.name: int(t.shape[0]) for t in reader.tensors}  # shape[0] is llama.cpp's ne[0]
    values: dict[str, Any] = {}
    unmapped: list[str] = []
    for hf_name, (sq, count) in sorted(stats.items()):
        name = tmap.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        if name is None and hf_name.startswith("model.language_model."):  # Gemma 3 multimodal
            name = tmap.get_name("model." + hf_name.removeprefix("model.language_model.") + ".weight",
                                 try_suffixes=(".weight",))
        if name is None or name not in ne0 or ne0[name] != sq.shape[0] or count <= 0:
            unmapped.append(hf_name)
            continue
        values[name] = (np.asarray(sq, dtype=np.float64) / count).astype(np.float32)
    if not values:
        raise ModelError(f"{gguf_file}: no imatrix entry matched a tensor of the converted model "
                         f"(unmapped: {', '.join(unmapped[:4])}...)")
    return Imatrix(values=values, n_tokens=n_tokens, n_texts=n_texts, unmapped=tuple(unmapped))


def compute(source: Path, texts: Sequence[str], gguf_file: Path, *, max_tokens: int = 512,
            budget: int = DEFAULT_BUDGET, threads: int = 0,
            progress: Callable[[str], None] | None = None) -> Imatrix:
    """The importance matrix of `source` on `texts`, named for the converted `gguf_file`."""
    stats, n_tokens, used = collect(source, texts, max_tokens=max_tokens, budget=budget,
                                    threads=threads, progress=progress)
    return to_gguf_names(stats, gguf_file, n_tokens, used)


def load_c_array(path: Path) -> tuple[Any, list[Any]]:
    """A NULL-terminated `llama_model_imatrix_data[]` from a saved matrix, and its keep-alives."""
    import ctypes

    import llama_cpp
    import numpy as np

    data = np.load(path)
    names = sorted(data.files)
    arr = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()
    keep: list[Any] = [data]
    for i, name in enumerate(names):
        v = np.ascontiguousarray(data[name], dtype=np.float32)
        b = name.encode()
        keep += [v, b]
        arr[i].name = b
        arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = v.shape[0]
    arr[len(names)].name = None  # terminator: llama.cpp stops at the first NULL name
    return arr, keep


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        raise ModelError(f"GGUF metadata key {key!r} is missing")
    return f.parts[f.data[0]][0]


def _field_str(reader: Any, key: str) -> str:
    f = reader.fields.get(key)
    if f is None:
        raise ModelError(f"GGUF metadata key {key!r} is missing")
    return bytes(f.parts[f.data[0]]).decode("utf-8")
