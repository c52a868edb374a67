"""The transformers/torch backend: the reference runtime for HF model folders (CPU or CUDA)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from globmed_edge.backends.base import (
    Capabilities,
    GenerationRequest,
    MemoryReport,
    Message,
    ScoreRequest,
    ScoreResult,
    TokenEvent,
    process_memory,
    score_groups,
)
from globmed_edge.deps import require
from globmed_edge.errors import BackendError, ModelError
from globmed_edge.paths import force_offline


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas without splitting characters.

    Byte-level and SentencePiece tokenizers can emit half a UTF-8 character or a leading space
    that only appears once the next token is known; decoding the whole suffix and emitting the
    difference (holding back a trailing U+FFFD) gives clean deltas for every script.
    """

    def __init__(self, decode: Any) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        full = self._decode(self.ids)
        if full.endswith("\ufffd"):
            return ""
        delta = full[len(self.text):] if full.startswith(self.text) else full
        self.text = full
        return delta


class TransformersBackend:
    name: ClassVar[str] = "transformers"
    capabilities: ClassVar[Capabilities] = Capabilities(devices=("cpu", "cuda"))

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        threads: int | None = None,
        dtype: str | None = None,
        **_: Any,
    ) -> None:
        self.path = Path(path)
        self.device = device
        self.threads = threads
        self.dtype_name = dtype
        self.model: Any = None
        self.tokenizer: Any = None
        self._eos_ids: set[int] = set()

    @classmethod
    def from_loaded(cls, model: Any, tokenizer: Any, *, path: str | Path = "<in-memory>") -> TransformersBackend:
        """Wrap a model already in memory (e.g. during training) without reloading it."""
        be = cls(path, device=str(next(model.parameters()).device))
        be.model, be.tokenizer = model, tokenizer
        eos = model.generation_config.eos_token_id if model.generation_config else None
        be._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            be._eos_ids.add(tokenizer.eos_token_id)
        return be

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        force_offline()
        torch = require("torch", "torch")
        transformers = require("transformers", "torch")
        if not (self.path / "config.json").is_file():
            raise ModelError(f"{self.path}: not a Hugging Face model folder (no config.json)")
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {self.device!r} requested but CUDA is not available here")
        dtype = getattr(torch, self.dtype_name) if self.dtype_name else (
            torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{self.path}: cannot load model ({str(exc).splitlines()[0]})") from None
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self._eos_ids.add(self.tokenizer.eos_token_id)

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        import gc

        gc.collect()

    def _require_loaded(self) -> None:
        if self.model is None:
            raise BackendError("backend used before load()")

    # ------------------------------------------------------------------ text

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        self._require_loaded()
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        self._require_loaded()
        if not self.tokenizer.chat_template:
            raise ModelError(f"{self.path}: the tokenizer has no chat template")
        return str(self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False, add_generation_prompt=add_generation_prompt,
        ))

    # ------------------------------------------------------------------ generation

    def stream(
        self, request: GenerationRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[TokenEvent]:
        self._require_loaded()
        torch = require("torch", "torch")
        prompt = self.render_chat(request.messages)
        ids = self.tokenize(prompt, add_special=False)
        gen = torch.Generator(device="cpu").manual_seed(request.seed)
        decoder = IncrementalDecoder(lambda t: self.tokenizer.decode(t, skip_special_tokens=True))
        past = None
        inp = torch.tensor([ids], device=self.device)
        emitted = ""
        with torch.inference_mode():
            for i in range(request.max_new_tokens):
                if cancel is not None and cancel.is_set():
                    yield TokenEvent("", i, time.perf_counter(), finish_reason="cancelled")
                    return
                out = self.model(input_ids=inp, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                token = self._pick(logits, request, gen, torch)
                now = time.perf_counter()
                first = len(ids) if i == 0 else None
                if token in self._eos_ids:
                    yield TokenEvent("", i, now, token, "stop", first)
                    return
                delta = decoder.push(token)
                emitted += delta
                hit = next((s for s in request.stop if s in emitted), None)
                if hit is not None:
                    cut = emitted.index(hit)
                    keep = delta[: max(0, len(delta) - (len(emitted) - cut))]
                    yield TokenEvent(keep, i, now, token, "stop", first)
                    return
                last = i == request.max_new_tokens - 1
                yield TokenEvent(delta, i, now, token, "length" if last else None, first)
                inp = torch.tensor([[token]], device=self.device)

    @staticmethod
    def _pick(logits: Any, request: GenerationRequest, gen: Any, torch: Any) -> int:
        if request.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / request.temperature, dim=-1)
        if request.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, 0) - sorted_p < request.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
            probs /= probs.sum()
        return int(torch.multinomial(probs.cpu(), 1, generator=gen))

    # ------------------------------------------------------------------ scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods, running each distinct context once and its continuations as a batch.

        Multiple-choice items share one prompt across 4-5 options: the prompt's KV cache is
        computed once and repeated across the batch of options (shared-prefix reuse).
        """
        self._require_loaded()
        torch = require("torch", "torch")
        results: list[ScoreResult | None] = [None] * len(requests)
        with torch.inference_mode():
            for group in score_groups(requests, lambda s: self.tokenize(s, add_special=True)):
                scored = self._score_group(torch, group.prefix, group.continuations)
                for i, r in zip(group.indices, scored, strict=True):
                    results[i] = r
        return [r for r in results if r is not None]

    def _score_group(self, torch: Any, ctx: list[int], conts: list[list[int]]) -> list[ScoreResult]:
        out = self.model(input_ids=torch.tensor([ctx], device=self.device), use_cache=True)
        last = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        n = len(conts)
        width = max(len(c) for c in conts)
        if width == 0:
            return [ScoreResult(0.0, 0, True) for _ in conts]
        cache = out.past_key_values
        if n > 1:
            cache.batch_repeat_interleave(n)
        pad = self.tokenizer.pad_token_id or 0
        batch = torch.tensor([c + [pad] * (width - len(c)) for c in conts], device=self.device)
        mask = torch.ones((n, len(ctx) + width), dtype=torch.long, device=self.device)
        logits = self.model(input_ids=batch, past_key_values=cache, attention_mask=mask,
                            use_cache=False).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        results = []
        for b, cont in enumerate(conts):
            if not cont:
                results.append(ScoreResult(0.0, 0, True))
                continue
            rows = torch.cat([last[None], logp[b, : len(cont) - 1]], dim=0)
            target = torch.tensor(cont, device=self.device)
            lp = rows.gather(1, target[:, None]).squeeze(1)
            greedy = bool((rows.argmax(dim=-1) == target).all())
            results.append(ScoreResult(float(lp.sum()), len(cont), greedy))
        return results

    def logprobs(self, token_ids: Sequence[int]) -> Any:
        self._require_loaded()
        torch = require("torch", "torch")
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([list(token_ids)], device=self.device)).logits
            return torch.log_softmax(logits[0].float(), dim=-1).cpu().numpy()

    # ------------------------------------------------------------------ memory

    def memory(self) -> MemoryReport:
        rss, peak = process_memory()
        if self.device.startswith("cuda") and self.model is not None:
            torch = require("torch", "torch")
            return MemoryReport(rss, peak, self.device, torch.cuda.memory_allocated(),
                                torch.cuda.memory_reserved(), torch.cuda.max_memory_allocated())
        return MemoryReport(rss, peak, self.device)
