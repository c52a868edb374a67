"""The llama.cpp backend: GGUF builds through llama-cpp-python (CPU; CUDA where built with it).

One `llama_cpp.Llama` context serves everything. Its KV cache is kept between calls and every
call states the whole token sequence it needs (`_advance`): the longest common prefix with what
is already cached is kept and only the rest is evaluated, so a second chat turn evaluates just
the new turn, and the options of a multiple-choice item (or items sharing a k-shot prefix) reuse
the context. Logits are requested only for the positions a call needs (the last one while
generating, every continuation position while scoring), because the output projection over a
49k-262k vocabulary is a large part of the work of a small model.

Sampling is done here in numpy (greedy at temperature 0, seeded temperature/top-p otherwise),
the same algorithm as the onnx backend. The chat template is the build's own
`tokenizer.chat_template` from the GGUF metadata, rendered the way transformers renders it.
llama.cpp's log output is routed to this module's logger at DEBUG level.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import logging
import math
import os
import re
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from globmed_edge.backends.base import (
    Backend,
    Capabilities,
    GenerationRequest,
    MemoryReport,
    Message,
    ScoreRequest,
    ScoreResult,
    StreamEvents,
    TokenEvent,
    defuse_specials,
    pick_token,
    process_memory,
    result_from_rows,
    score_groups,
)
from globmed_edge.backends.chat_template import SPECIAL_KEYS, compile_template
from globmed_edge.backends.common import (
    ScoreCollector,
    check_options,
    loaded,
    log_softmax,
    verify_build,
)
from globmed_edge.errors import BackendError, ConfigError, ModelError

if TYPE_CHECKING:
    import numpy as np

    from globmed_edge.backends.llamacpp_context import LlamaContext

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096
# Logit rows per decode call when many are wanted: llama.cpp's output buffer grows to the largest
# request and stays (64 x 262k-vocabulary x 4 bytes = 67 MB for Gemma 3, instead of 537 MB at 512).
OUTPUT_ROWS = 64
OPTIONS = ("device", "threads", "n_ctx", "context_length", "n_batch", "n_gpu_layers", "verify", "seed")
# GGUF metadata key of each special token transformers passes to chat templates.
_SPECIAL_META = {"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding",
                 "sep_token": "seperator", "cls_token": "cls", "mask_token": "mask"}

@functools.cache
def gpu_offload_supported() -> bool:
    """Whether the installed llama-cpp-python was built with a GPU backend (CUDA, Metal...)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    from globmed_edge.backends import llamacpp_runtime

    return bool(llamacpp_runtime.load().llama_supports_gpu_offload())


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def other_running_tasks(samples: int = 5) -> int | None:
    """Runnable threads of other processes right now (Linux; None elsewhere).

    /proc/loadavg's running count minus this process's own running threads, sampled `samples`
    times 1 ms apart; the minimum, so that a momentary burst does not count as load.
    """
    import time

    if not os.path.isfile("/proc/loadavg"):
        return None
    seen = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text(encoding="ascii").split()[3].split("/")[0])
            own = 0
            for task in os.scandir("/proc/self/task"):
                with contextlib.suppress(OSError), open(f"{task.path}/stat", encoding="ascii") as f:
                    own += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, ValueError, IndexError):
            return None
        seen.append(max(0, running - own))
        if i < samples - 1:
            time.sleep(0.001)
    return min(seen)


def auto_threads(physical: int, logical: int, busy: int | None) -> int:
    """Threads for the next generation: the physical cores that other work leaves free.

    llama.cpp's threads wait for each other at every step, so one thread that shares its core
    with another program slows them all: on 2 cores with one busy process, 2 threads decoded
    31-34 tokens/s and 1 thread 82-87 (lab/perf/llamacpp_under_load.py).
    """
    if not busy:
        return physical
    return max(1, physical - math.ceil(busy * physical / max(logical, physical)))


class _Capabilities:
    """`capabilities` as data; "cuda" appears only when this llama.cpp build can offload."""

    def __get__(self, obj: object, owner: type | None = None) -> Capabilities:
        return Capabilities(devices=("cpu", "cuda") if gpu_offload_supported() else ("cpu",))


class LlamaCppBackend:
    name: ClassVar[str] = "llamacpp"
    capabilities: ClassVar[Capabilities] = _Capabilities()  # type: ignore[assignment]

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | str | None = None,
                 n_ctx: int | None = None, context_length: int | None = None, n_batch: int = 512,
                 n_gpu_layers: int | None = None, verify: bool = True, seed: int = 0,
                 **unknown: Any) -> None:
        check_options(self.name, unknown, OPTIONS)
        if n_ctx and context_length and n_ctx != context_length:
            raise ConfigError(f"n_ctx={n_ctx} and context_length={context_length} disagree (give one)")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise ConfigError(f"device {device!r}: the llamacpp backend runs on 'cpu', 'cuda' or 'cuda:N'")
        self.main_gpu = int(device.partition(":")[2] or 0)
        if threads == "auto":
            self.auto_threads, threads = True, None
        elif isinstance(threads, str):
            raise ConfigError(f"threads={threads!r}: must be a positive integer or 'auto'")
        else:
            self.auto_threads = False
        for key, value in (("threads", threads), ("n_ctx", n_ctx or context_length), ("n_batch", n_batch)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"{key}={value}: must be a positive integer")
        self.path = Path(path)
        self.threads = threads
        self.current_threads = 0  # what llama.cpp uses now (set by load(), changed by "auto")
        self.n_ctx = int(n_ctx or context_length or DEFAULT_CONTEXT)
        self.n_batch = int(n_batch)
        # device="cuda" offloads every layer unless n_gpu_layers says otherwise (-1 = all).
        self.n_gpu_layers = int(n_gpu_layers) if n_gpu_layers is not None else (-1 if device != "cpu" else 0)
        self.device = "cpu" if self.n_gpu_layers == 0 else ("cuda" if device == "cpu" else device)
        self.verify = verify
        self.seed = seed
        self.llm: Any = None  # the llama_cpp.Llama
        self._state: LlamaContext | None = None  # its KV cache and decode (llamacpp_context.py)
        self.manifest: Any = None
        self.model_file: Path | None = None
        self.metadata: dict[str, str] = {}
        self.evaluated_tokens = 0  # tokens run through the model since load (prefix reuse is visible here)
        self._vocab: Any = None
        self._n_vocab = 0
        self._template: Any = None
        self._special: dict[str, str | None] = {}
        self._control: list[str] | None = None  # control token texts, read on first render_chat
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    def _resolve(self) -> Path:
        """The GGUF file to load, after the manifest rule (globmed_edge.trust) allowed it."""
        folder = self.path if self.path.is_dir() else self.path.parent
        self.verification = verify_build(self.path, "gguf", verify=self.verify, where=folder)
        self.manifest = self.verification.manifest
        if self.path.is_file():
            return self.path
        if not self.path.is_dir():
            raise ModelError(f"{self.path}: no such GGUF file or build folder")
        files = [p for p in sorted(self.path.glob("*.gguf")) if "imatrix" not in p.name]
        if len(files) != 1:
            found = ", ".join(p.name for p in files) or "none"
            raise ModelError(f"{self.path}: expected exactly one model .gguf file, found {found}")
        return files[0]

    def load(self) -> None:
        from globmed_edge.backends import llamacpp_runtime
        from globmed_edge.backends.llamacpp_context import LlamaContext

        llama_cpp = llamacpp_runtime.load()
        llamacpp_runtime.check_version()  # before a model loads: LlamaContext drives 0.3.36's internals
        self.close()
        self.model_file = self._resolve()
        if self.n_gpu_layers and not gpu_offload_supported():
            raise BackendError(f"n_gpu_layers={self.n_gpu_layers} ({self.device}) requested but this "
                               "llama-cpp-python was built without GPU offload (CPU build)")
        errors = llamacpp_runtime.recent_errors
        errors.clear()
        threads = int(self.threads or physical_cores())
        self.current_threads = threads
        try:
            llm = llamacpp_runtime.new_llama(
                model_path=str(self.model_file), n_ctx=self.n_ctx, n_batch=self.n_batch,
                n_ubatch=self.n_batch, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=self.n_gpu_layers, main_gpu=self.main_gpu, seed=self.seed, logits_all=False,
                swa_full=True,  # keep sliding-window layers' full KV so any prefix can be reused
                verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            # llama.cpp's first error line is the specific one ("invalid magic characters...")
            detail = errors[0] if errors else str(exc).splitlines()[0]
            raise ModelError(f"{self.model_file}: llama.cpp cannot load this GGUF "
                             f"({' '.join(detail.split())[:200]})") from None
        self.llm = llm
        # Freed on close(), on garbage collection, or at exit before llama_cpp's module globals
        # are torn down (a Llama left to __del__ then prints "Exception ignored ... TypeError").
        self._finalizer = weakref.finalize(self, llm.close)
        self._state = LlamaContext(llm)
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._n_vocab = self._state.n_vocab
        self.metadata = dict(llm.metadata)
        self._special = {}
        for key, meta in _SPECIAL_META.items():
            tid = self.metadata.get(f"tokenizer.ggml.{meta}_token_id")
            if tid is not None and tid.lstrip("-").isdigit() and 0 <= int(tid) < self._n_vocab:
                self._special[key] = llama_cpp.llama_vocab_get_text(self._vocab, int(tid)).decode("utf-8")
        self._control = None
        self._template = None
        self.evaluated_tokens = 0
        log.debug("loaded %s (%d threads, n_ctx %d, %d GPU layers)", self.model_file, threads,
                  self.n_ctx, self.n_gpu_layers)

    def close(self) -> None:
        self.llm = None
        self._state = None
        if self._finalizer is not None:
            self._finalizer()  # runs llm.close() once
            self._finalizer = None

    def _adapt_threads(self) -> None:
        """threads="auto": before each generation, use the physical cores other work leaves free."""
        state = loaded(self._state)
        n = auto_threads(physical_cores(), os.cpu_count() or 1, other_running_tasks())
        if n != self.current_threads:
            with self._lock:
                state.set_threads(n)
            log.debug("threads %d -> %d (other work on the CPU)", self.current_threads, n)
            self.current_threads = n

    def reset_cache(self) -> None:
        """Forget the KV cache, so the next call evaluates its whole prompt (benchmarks of TTFT
        use this; a chat keeps the cache to reuse the conversation's prefix)."""
        state = loaded(self._state)
        with self._lock:
            state.clear()

    def _require_loaded(self) -> Any:
        return loaded(self.llm)

    # ------------------------------------------------------------------ text

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """Token ids like transformers' `tokenizer(text, add_special_tokens=add_special)`:
        special tokens written in the text are parsed; BOS/EOS added only if asked and the
        vocabulary adds them (GGUF `tokenizer.ggml.add_bos_token`)."""
        llm = self._require_loaded()
        return [int(t) for t in llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)]

    def detokenize(self, token_ids: Sequence[int], *, special: bool = False) -> str:
        """Text of token ids; special tokens are skipped unless `special` (like skip_special_tokens)."""
        import llama_cpp

        self._require_loaded()
        ids = (llama_cpp.llama_token * max(1, len(token_ids)))(*token_ids)
        size = max(64, 8 * len(token_ids))
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_detokenize(self._vocab, ids, len(token_ids), buf, size, False, special)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            size = -n + 1
        raise BackendError(f"llama_detokenize failed for {len(token_ids)} tokens")

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        self._require_loaded()
        if self._template is None:
            source = self.metadata.get("tokenizer.chat_template")
            if not source:
                raise ModelError(f"{self.model_file}: the GGUF has no chat template "
                                 "(metadata key tokenizer.chat_template)")
            self._template = compile_template(source)
        if self._control is None:
            # Control and user-defined tokens (<|im_start|>...) written in a message are defused
            # before the template runs, so user text cannot open a turn (role injection).
            import llama_cpp

            flags = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
            self._control = [llama_cpp.llama_vocab_get_text(self._vocab, i).decode("utf-8", "replace")
                             for i in range(self._n_vocab) if llama_cpp.llama_vocab_get_attr(self._vocab, i) & flags]
        return str(self._template.render(
            messages=[{"role": m.role, "content": defuse_specials(m.content, self._control)} for m in messages],
            add_generation_prompt=add_generation_prompt, tools=None, documents=None,
            **{k: self._special.get(k) for k in SPECIAL_KEYS}))

    # ------------------------------------------------------------------ the KV cache

    def _advance(self, tokens: Sequence[int], first: int) -> np.ndarray:
        """Make the KV cache hold exactly `tokens`; return the logits of positions first..end.

        The cached prefix that agrees with `tokens` is kept (up to `first`, whose logits must be
        computed); the rest is decoded in chunks of n_batch with outputs only where needed.
        """
        import numpy as np

        state = loaded(self._state)
        n = len(tokens)
        if not 0 <= first < n:
            raise BackendError(f"internal: no logits position {first} in {n} tokens")
        if n > self.n_ctx:
            raise BackendError(f"{n} tokens exceed the context length {self.n_ctx} (n_ctx option)")
        arr = np.asarray(tokens, dtype=np.intc)
        with self._lock:
            start = state.truncate(state.common_prefix(arr, first))
            rows = []
            while start < n:
                end = min(n, start + self.n_batch)
                if end > first:  # llama.cpp keeps an output buffer as large as the most rows asked
                    end = min(end, max(first, start) + OUTPUT_ROWS)
                out = state.decode(arr[start:end], start, first)
                self.evaluated_tokens += end - start
                if out is not None:
                    rows.append(out)
                start = end
            return np.concatenate(rows)

    def _decode_afresh_if_cached(self, tokens: Sequence[int]) -> None:
        """Forget the cache when it already holds all of `tokens` but their last logits.

        Those logits would then come from the last token decoded alone, and llama.cpp's one-token
        and batched matrix paths differ: by 0.12 nat over a 3-token continuation of the SmolLM2
        Q4_1 GGUF with the haswell (x86-64-v3) kernels (2e-3 with zen4's;
        lab/results/llamacpp-score-paths-2026-12-03). A context scored twice would score
        differently the second time; decoded afresh, it scores as it did the first time.
        """
        import numpy as np

        state = loaded(self._state)
        arr = np.asarray(tokens, dtype=np.intc)
        with self._lock:
            if len(arr) > 1 and state.common_prefix(arr, len(arr)) >= len(arr) - 1:
                state.clear()

    # ------------------------------------------------------------------ generation

    def stream(self, request: GenerationRequest, *, cancel: threading.Event | None = None
               ) -> Iterator[TokenEvent]:
        import llama_cpp
        import numpy as np

        self._require_loaded()
        ids = self.tokenize(self.render_chat(request.messages), add_special=False)
        if len(ids) >= self.n_ctx:
            raise BackendError(f"the prompt ({len(ids)} tokens) fills the context length {self.n_ctx} "
                               "(n_ctx option)")
        budget = min(request.max_new_tokens, self.n_ctx - len(ids))
        if self.auto_threads:
            self._adapt_threads()
        rng = np.random.default_rng(request.seed)
        events = StreamEvents(request, self.detokenize, len(ids), budget,
                              lambda t: bool(llama_cpp.llama_vocab_is_eog(self._vocab, t)))
        seq = list(ids)
        for i in range(budget):
            if cancel is not None and cancel.is_set():
                yield events.cancelled(i)
                return
            token = pick_token(self._advance(seq, len(seq) - 1)[-1], request, rng, seq[len(ids):])
            event = events.next(i, token)
            yield event
            if event.finish_reason is not None:
                return
            seq.append(token)

    # ------------------------------------------------------------------ scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods. A context is evaluated once (or found in the KV cache) and each of
        its continuations runs over it; one-token continuations need no extra evaluation."""
        import numpy as np

        self._require_loaded()
        results = ScoreCollector(len(requests))
        for group in score_groups(requests, lambda s: self.tokenize(s, add_special=True)):
            ctx = group.prefix
            self._decode_afresh_if_cached(ctx)
            last = log_softmax(self._advance(ctx, len(ctx) - 1))
            scored = []
            for cont, skip in zip(group.continuations, group.skip, strict=True):
                table = last
                if len(cont) > 1:
                    table = np.concatenate([last, log_softmax(self._advance(ctx + cont[:-1], len(ctx)))])
                scored.append(result_from_rows(table, cont, skip))
            results.put(group.indices, scored)
        return results.results()

    def logprobs(self, token_ids: Sequence[int]) -> np.ndarray:
        self._require_loaded()
        if not token_ids:
            raise BackendError("logprobs() needs at least one token")
        bad = [t for t in token_ids if not 0 <= int(t) < self._n_vocab]
        if bad:
            raise BackendError(f"logprobs(): token id {bad[0]} is outside the vocabulary ({self._n_vocab})")
        return log_softmax(self._advance([int(t) for t in token_ids], 0))

    # ------------------------------------------------------------------ memory

    def memory(self) -> MemoryReport:
        rss, peak = process_memory()
        return MemoryReport(rss, peak, self.device)


if TYPE_CHECKING:  # mypy checks the class against the protocol, structurally
    _: type[Backend] = LlamaCppBackend
