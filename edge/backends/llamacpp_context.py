"""The one class that touches llama-cpp-python's private state: a `Llama`'s KV cache and batch.

The backend keeps llama.cpp's KV cache between calls and decodes exactly the tokens a call
needs, with logits only where it needs them. `Llama`'s public API cannot do that (`eval()`
computes no partial outputs and `reset()` forgets the whole cache), so this class drives its
internals: `_ctx` (the context wrapper: `decode`, `kv_cache_seq_rm`, `kv_cache_clear`, `memory`),
`_batch` (the reusable `llama_batch`) and the `input_ids` / `n_tokens` bookkeeping that the rest
of `Llama` (tokenize, close, the tests' checks) reads. Those names are llama-cpp-python 0.3.36's
(the version pinned in pyproject.toml); another version is refused when a model loads
(`llamacpp_runtime.check_version`) rather than decoding with a changed internal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from globmed_edge.errors import BackendError


class LlamaContext:
    """The KV cache, batched decode and thread count of one loaded `llama_cpp.Llama`."""

    def __init__(self, llm: Any) -> None:
        from globmed_edge.backends import llamacpp_runtime

        llamacpp_runtime.check_version()
        self.llm = llm
        self.n_vocab = int(llm.n_vocab())

    @property
    def n_tokens(self) -> int:
        """Positions the KV cache holds."""
        return int(self.llm.n_tokens)

    def common_prefix(self, tokens: np.ndarray, limit: int) -> int:
        """How many of the first `limit` tokens the cache already holds, in order."""
        keep = min(self.n_tokens, limit)
        differ = np.flatnonzero(self.llm.input_ids[:keep] != tokens[:keep])
        return int(differ[0]) if differ.size else keep

    def clear(self) -> None:
        """Forget every cached position."""
        self.llm._ctx.kv_cache_clear()
        self.llm.n_tokens = 0

    def truncate(self, keep: int) -> int:
        """Keep the first `keep` cached positions; returns how many are kept: `keep`, or 0 where
        the cache cannot roll back (a recurrent model, whose seq_rm refuses, or a sliding-window
        cache that dropped early positions; not with swa_full, kept as a guard), then cleared."""
        import llama_cpp

        llm = self.llm
        pruned = keep < llm.n_tokens and llama_cpp.llama_memory_seq_pos_min(llm._ctx.memory, 0) > 0
        if pruned or not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm._ctx.kv_cache_clear()
            keep = 0
        llm.n_tokens = keep
        return keep

    def decode(self, chunk: np.ndarray, start: int, outputs_from: int) -> np.ndarray | None:
        """Evaluate `chunk` at positions start.. (after the cached `start`); the logits (float32
        copies, one row per position) of positions from `outputs_from` on, None if none asked."""
        import llama_cpp

        llm = self.llm
        llm._batch.set_batch(batch=chunk.tolist(), n_past=start, logits_all=False)
        lo = max(outputs_from, start)
        for i in range(lo - start, len(chunk)):
            llm._batch.batch.logits[i] = True
        try:
            llm._ctx.decode(llm._batch)
        except RuntimeError as exc:
            raise BackendError(f"llama.cpp decode failed ({exc})") from None
        end = start + len(chunk)
        llm.input_ids[start:end] = chunk
        llm.n_tokens = end
        if lo >= end:
            return None
        n_out = end - lo
        out = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(n_out * self.n_vocab,))
        return out.reshape(n_out, self.n_vocab).astype(np.float32, copy=True)

    def set_threads(self, n: int) -> None:
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm.ctx, n, n)
