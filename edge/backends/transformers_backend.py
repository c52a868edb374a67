"""The transformers/torch backend: the reference runtime for HF model folders (CPU or CUDA)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from globmed_edge.backends.base import (
    Backend,
    Capabilities,
    GenerationRequest,
    MemoryReport,
    Message,
    ScoreGroup,
    ScoreRequest,
    ScoreResult,
    StreamEvents,
    TokenEvent,
    defuse_specials,
    process_memory,
    result_from_rows,
    score_groups,
)
from globmed_edge.backends.common import (
    ScoreCollector,
    check_options,
    eos_ids,
    loaded,
    verify_build,
)
from globmed_edge.deps import require, require_transformers
from globmed_edge.errors import BackendError, ConfigError, ModelError
from globmed_edge.paths import force_offline

if TYPE_CHECKING:
    import numpy as np

OPTIONS = ("device", "threads", "dtype", "verify")

#: The compute dtypes a model folder can be run in (`dtype=`), each with the short tag that
#: `bench run --torch-dtype` adds to a record's build name.
DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def dtype_variant_name(name: str, dtype: str) -> str:
    """The name bench records a model folder under when it ran in `dtype`, not its device's
    default (`bench run --torch-dtype`): NAME-bf16. It computes differently, so it is another build."""
    return f"{name}-{DTYPES[dtype]}"


def is_dtype_variant(record_name: str, folder_name: str) -> bool:
    """Whether a record named `record_name` measured the folder `folder_name` in a non-default dtype:
    a name that is not the folder's own and ends in a dtype suffix (SRC-bf16; a merged training
    output runs/gemma-lora/merged is recorded as gemma-lora-merged-bf16)."""
    return record_name != folder_name and any(record_name.endswith(f"-{s}") for s in DTYPES.values())


def default_dtype(device: str) -> str:
    """What a model folder computes in when no dtype is asked for: bfloat16 on CUDA, float32 on CPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


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
        verify: bool = True,
        **unknown: Any,
    ) -> None:
        check_options(self.name, unknown, OPTIONS)
        if dtype is not None and dtype not in DTYPES:
            raise ConfigError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
        self.path = Path(path)
        self.verify = verify  # False: open without the manifest rule (quantize's own fresh export)
        self.verification: Any = None
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
        be._eos_ids = model_eos_ids(model, tokenizer)
        return be

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        force_offline()
        self.verification = verify_build(self.path, None, verify=self.verify)  # hf: no format check
        torch = require("torch", "torch")
        transformers = require_transformers()
        if not (self.path / "config.json").is_file():
            raise ModelError(f"{self.path}: not a Hugging Face model folder (no config.json)")
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {self.device!r} requested but CUDA is not available here")
        dtype = getattr(torch, self.dtype_name or default_dtype(self.device))
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{self.path}: cannot load model ({str(exc).splitlines()[0]})") from None
        self.model.to(self.device).eval()
        self._eos_ids = model_eos_ids(self.model, self.tokenizer)

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        import gc

        gc.collect()

    def _require_loaded(self) -> None:
        loaded(self.model)

    # ------------------------------------------------------------------ text

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        self._require_loaded()
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        self._require_loaded()
        if not self.tokenizer.chat_template:
            raise ModelError(f"{self.path}: the tokenizer has no chat template")
        tok = self.tokenizer
        specials = [*tok.all_special_tokens,
                    *(t.content for t in getattr(tok, "added_tokens_decoder", {}).values() if t.special)]
        return str(self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": defuse_specials(m.content, specials)} for m in messages],
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
        events = StreamEvents(request, lambda t: self.tokenizer.decode(t, skip_special_tokens=True),
                              len(ids), request.max_new_tokens, self._eos_ids.__contains__)
        past = None
        inp = torch.tensor([ids], device=self.device)
        answer: list[int] = []
        with torch.inference_mode():
            for i in range(request.max_new_tokens):
                if cancel is not None and cancel.is_set():
                    yield events.cancelled(i)
                    return
                out = self.model(input_ids=inp, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = self._pick(out.logits[0, -1].float(), request, gen, torch, answer)
                event = events.next(i, token)
                yield event
                if event.finish_reason is not None:
                    return
                answer.append(token)
                inp = torch.tensor([[token]], device=self.device)

    @staticmethod
    def _pick(logits: Any, request: GenerationRequest, gen: Any, torch: Any, previous: list[int]) -> int:
        if request.repetition_penalty != 1.0 and previous:
            # base.penalize in torch (transformers' RepetitionPenaltyLogitsProcessor, prompt ignored)
            ids = torch.tensor(sorted(set(previous)), device=logits.device)
            seen = logits[ids]
            logits = logits.clone()
            logits[ids] = torch.where(seen > 0, seen / request.repetition_penalty,
                                      seen * request.repetition_penalty)
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

    # A score batch holds at most this many packed tokens and this many logit rows (x vocab):
    # enough rows for efficient matrix products on a CPU, bounded memory for 262k-token vocabularies.
    SCORE_BATCH_TOKENS: ClassVar[int] = 4096
    SCORE_BATCH_LOGITS: ClassVar[int] = 48 * 1024 * 1024

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods, one forward pass per batch of contexts, every option packed in.

        Each context is packed with all of its continuations into one row: the shared prefix
        once, then each continuation (its last token never needs to be an input) with positions
        restarting after the prefix and a 4D attention mask that lets it see only the prefix and
        itself. Single-token options (the letters " A", " B", ...) cost nothing beyond the
        prefix. Rows of several contexts go through the model together, sorted by length.
        """
        self._require_loaded()
        torch = require("torch", "torch")
        groups = score_groups(requests, lambda s: self.tokenize(s, add_special=True))
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        results = ScoreCollector(len(requests))
        with torch.inference_mode():
            for batch in self._batches(groups, vocab):
                for g, scored in zip(batch, self._score_packed(torch, batch), strict=True):
                    results.put(g.indices, scored)
        return results.results()

    def _batches(self, groups: list[ScoreGroup], vocab: int) -> list[list[ScoreGroup]]:
        """Longest rows first, as many per batch as the token and logit budgets allow."""
        batches: list[list[ScoreGroup]] = []
        batch: list[ScoreGroup] = []
        for group in sorted(groups, key=_packed_length, reverse=True):
            candidate = [*batch, group]
            width = _packed_length(candidate[0])
            keep = width - min(len(g.prefix) for g in candidate) + 1
            if batch and (len(candidate) * width > self.SCORE_BATCH_TOKENS
                          or len(candidate) * keep * vocab > self.SCORE_BATCH_LOGITS):
                batches.append(batch)
                candidate = [group]
            batch = candidate
        return [*batches, batch] if batch else batches

    def _score_packed(self, torch: Any, groups: list[ScoreGroup]) -> list[list[ScoreResult]]:
        width = max(_packed_length(g) for g in groups)
        ids = torch.zeros((len(groups), width), dtype=torch.long)
        pos = torch.zeros((len(groups), width), dtype=torch.long)
        seg = torch.full((len(groups), width), -1, dtype=torch.long)  # -1 padding, 0 prefix, j+1 option j
        # per continuation: (row, packed index predicting each of its tokens, its tokens, tokens skipped)
        wanted: list[tuple[int, list[int], list[int], int]] = []
        for b, g in enumerate(groups):
            p = len(g.prefix)
            ids[b, :p] = torch.tensor(g.prefix)
            pos[b, :p] = torch.arange(p)
            seg[b, :p] = 0
            at = p
            for j, (cont, skip) in enumerate(zip(g.continuations, g.skip, strict=True)):
                body = cont[:-1]
                ids[b, at: at + len(body)] = torch.tensor(body, dtype=torch.long)
                pos[b, at: at + len(body)] = torch.arange(p, p + len(body))
                seg[b, at: at + len(body)] = j + 1
                wanted.append((b, [p - 1, *range(at, at + len(body))], cont, skip))
                at += len(body)
        dtype = self.model.dtype
        allowed = torch.tril(torch.ones((width, width), dtype=torch.bool))[None] & (
            (seg[:, :, None] == seg[:, None, :]) | ((seg[:, None, :] == 0) & (seg[:, :, None] >= 0)))
        masks = {"full_attention": allowed}
        window = getattr(self.model.config, "sliding_window", None)
        layer_types = getattr(self.model.config, "layer_types", None) or ()
        if window and "sliding_attention" in layer_types:
            masks["sliding_attention"] = allowed & (pos[:, :, None] - pos[:, None, :] < window)
        floats = {k: torch.where(m, 0.0, torch.finfo(dtype).min).to(dtype)[:, None].to(self.device)
                  for k, m in masks.items()}
        first = min(len(g.prefix) for g in groups) - 1
        out = self.model(
            input_ids=ids.to(self.device), position_ids=pos.to(self.device),
            attention_mask=floats if len(floats) > 1 else floats["full_attention"],
            use_cache=False, logits_to_keep=width - first,
        )
        logits = out.logits
        rows = torch.tensor([b for b, idx, _, _ in wanted for _ in idx], device=self.device)
        cols = torch.tensor([i - first for _, idx, _, _ in wanted for i in idx], device=self.device)
        logp = torch.log_softmax(logits[rows, cols].float(), dim=-1).cpu().numpy()
        scored: list[list[ScoreResult]] = [[] for _ in groups]
        at = 0
        for b, idx, cont, skip in wanted:
            scored[b].append(result_from_rows(logp[at: at + len(idx)], cont, skip))
            at += len(idx)
        return scored

    def logprobs(self, token_ids: Sequence[int]) -> np.ndarray:
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


def model_eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """A transformers model's end-of-generation ids: its generation config's and its tokenizer's."""
    config = model.generation_config
    return eos_ids(config.eos_token_id if config else None, tokenizer.eos_token_id)


def _packed_length(group: ScoreGroup) -> int:
    """Tokens in a context's packed row: the prefix plus every continuation but its last token."""
    return len(group.prefix) + sum(max(0, len(c) - 1) for c in group.continuations)


if TYPE_CHECKING:  # mypy checks the class against the protocol, structurally
    _: type[Backend] = TransformersBackend
