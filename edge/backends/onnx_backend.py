"""The onnxruntime backend: ONNX builds made by `quantize --format onnx:...` (CPU, or CUDA EP).

It drives the decoder graph with a plain `onnxruntime.InferenceSession` rather than
onnxruntime-genai's generator: one session serves generation (its own KV-cache loop), scoring
(a context is run once and its KV cache is repeated across the batch of continuations) and
all-position log-probabilities (one pass with an empty past), and it also runs the fp16 graph
that the genai generator rejects on CPU. Tokenization uses the build's own tokenizer.json through
the `tokenizers` library and its chat template through a sandboxed jinja2 environment set up the
way transformers sets it up, so token ids and prompts match the source model's exactly (tested).
"""

from __future__ import annotations

import json
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
    eos_ids,
    loaded,
    log_softmax,
    verify_build,
)
from globmed_edge.deps import require
from globmed_edge.errors import BackendError, ModelError

if TYPE_CHECKING:
    import numpy as np

OPTIONS = ("device", "threads", "context_length", "batch_size", "verify")


class BuildTokenizer:
    """A build's tokenizer.json and chat template, without transformers or torch (the template
    is rendered as transformers renders it: chat_template.py), with the tokenizer's special
    tokens in the context."""

    def __init__(self, build: Path) -> None:
        tokenizers = require("tokenizers", "onnx")
        path = build / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{build}: the build has no tokenizer.json")
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise ModelError(f"{path}: unreadable tokenizer ({str(exc)[:200]})") from None
        config: dict[str, Any] = {}
        if (build / "tokenizer_config.json").is_file():
            config = json.loads((build / "tokenizer_config.json").read_text(encoding="utf-8"))
        template = config.get("chat_template")
        if (build / "chat_template.jinja").is_file():
            template = (build / "chat_template.jinja").read_text(encoding="utf-8")
        self.chat_template: str | None = template if isinstance(template, str) else None
        self.special = {k: _token_str(config.get(k)) for k in SPECIAL_KEYS}
        self._where = build
        self._compiled: Any = None

    def encode(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special).ids)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=skip_special))

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ModelError(f"{self._where}: the build has no chat template")
        if self._compiled is None:
            self._compiled = compile_template(self.chat_template)
        specials = [t.content for t in self._tok.get_added_tokens_decoder().values() if t.special]
        specials += [s for s in self.special.values() if s]
        safe = [{**m, "content": defuse_specials(m["content"], specials)} for m in messages]
        return str(self._compiled.render(messages=safe, add_generation_prompt=add_generation_prompt,
                                         tools=None, documents=None, **self.special))


def _token_str(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken serialised as {"content": ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


class OnnxBackend:
    name: ClassVar[str] = "onnx"
    capabilities: ClassVar[Capabilities] = Capabilities(devices=("cpu", "cuda"))

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None,
                 context_length: int | None = None, batch_size: int = 8, verify: bool = True,
                 **unknown: Any) -> None:
        check_options(self.name, unknown, OPTIONS)
        self.path = Path(path)
        self.verify = verify  # False: open without the manifest rule (quantize's own fresh export)
        self.verification: Any = None
        self.device = device
        self.threads = threads
        self.batch_size = max(1, int(batch_size))
        self._context_length = context_length
        self.session: Any = None
        self.tokenizer: BuildTokenizer | None = None
        self.manifest: Any = None
        self._eos_ids: set[int] = set()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        ort = require("onnxruntime", "onnx")
        np = require("numpy", "onnx")

        self.verification = verify_build(self.path, "onnx", verify=self.verify)
        self.manifest = self.verification.manifest
        cfg_path = self.path / "genai_config.json"
        if not cfg_path.is_file():
            raise ModelError(f"{self.path}: not an ONNX build (no genai_config.json)")
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))["model"]
            dec = cfg["decoder"]
            self._layers, self._kv_heads = int(dec["num_hidden_layers"]), int(dec["num_key_value_heads"])
            self._head = int(dec["head_size"])
            self._names = ins, outs = dec["inputs"], dec["outputs"]
            self._kv_pairs = [(outs[o] % i, ins[p] % i) for i in range(self._layers) for o, p in (
                ("present_key_names", "past_key_names"), ("present_value_names", "past_value_names"))]
            model_file = self.path / dec.get("filename", "model.onnx")
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{cfg_path}: unreadable genai config ({exc})") from None
        self._context = self._context_length or int(cfg.get("context_length", 2048))
        self._eos_ids = eos_ids(cfg.get("eos_token_id"))
        self._pad = int(cfg.get("pad_token_id") or 0)
        if not model_file.is_file():
            raise ModelError(f"{model_file}: missing from the build")
        self.tokenizer = BuildTokenizer(self.path)
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(f"device {self.device!r} requested but this onnxruntime has no CUDA "
                                   "provider (install onnxruntime-gpu: the [onnx-gpu] extra)")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(model_file), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph classes
            raise ModelError(f"{model_file}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._has_pos = "position_ids" in inputs
        self._ids_dtype = np.int32 if inputs["input_ids"].type == "tensor(int32)" else np.int64
        past0 = self._names[0]["past_key_names"] % 0
        self._kv_dtype = {"tensor(float16)": np.float16, "tensor(bfloat16)": None}.get(
            inputs[past0].type, np.float32)
        if self._kv_dtype is None:
            raise ModelError(f"{model_file}: bf16 KV cache is not supported by numpy-fed sessions")

    def close(self) -> None:
        self.session = None
        self.tokenizer = None

    def _require_loaded(self) -> BuildTokenizer:
        loaded(self.session)
        return loaded(self.tokenizer)

    # ------------------------------------------------------------------ the decoder graph

    def _run(self, ids: Any, past: dict[str, Any] | None, past_len: int) -> tuple[Any, dict[str, Any]]:
        """One decoder step for a [batch, seq] block of ids after `past_len` cached positions."""
        import numpy as np

        batch, seq = ids.shape
        if past_len + seq > self._context:
            raise BackendError(f"{past_len + seq} tokens exceed the context length {self._context}")
        ins, outs = self._names
        if past is None:
            shape = (batch, self._kv_heads, 0, self._head)
            past = {ins[key] % i: np.zeros(shape, dtype=self._kv_dtype)
                    for i in range(self._layers) for key in ("past_key_names", "past_value_names")}
        feed = {ins.get("input_ids", "input_ids"): ids.astype(self._ids_dtype),
                ins.get("attention_mask", "attention_mask"): np.ones((batch, past_len + seq), np.int64),
                **past}
        if self._has_pos:
            feed["position_ids"] = np.broadcast_to(np.arange(past_len, past_len + seq, dtype=np.int64),
                                                   (batch, seq)).copy()
        result = self.session.run([outs.get("logits", "logits")] + [o for o, _ in self._kv_pairs], feed)
        present = {p: v for (_, p), v in zip(self._kv_pairs, result[1:], strict=True)}
        return result[0], present

    # ------------------------------------------------------------------ text

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self._require_loaded().encode(text, add_special=add_special)

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        return self._require_loaded().render_chat(
            [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt)

    # ------------------------------------------------------------------ generation

    def stream(self, request: GenerationRequest, *, cancel: threading.Event | None = None
               ) -> Iterator[TokenEvent]:
        import numpy as np

        tok = self._require_loaded()
        ids = tok.encode(self.render_chat(request.messages), add_special=False)
        rng = np.random.default_rng(request.seed)
        block, past, past_len = np.array([ids]), None, 0
        budget = min(request.max_new_tokens, self._context - len(ids))
        if budget <= 0:
            raise BackendError(f"the prompt ({len(ids)} tokens) fills the context length {self._context}")
        events = StreamEvents(request, lambda t: tok.decode(t, skip_special=True), len(ids), budget,
                              self._eos_ids.__contains__)
        answer: list[int] = []
        for i in range(budget):
            if cancel is not None and cancel.is_set():
                yield events.cancelled(i)
                return
            logits, past = self._run(block, past, past_len)
            past_len += block.shape[1]
            token = pick_token(logits[0, -1].astype(np.float32), request, rng, answer)
            event = events.next(i, token)
            yield event
            if event.finish_reason is not None:
                return
            answer.append(token)
            block = np.array([[event.token_id]])

    # ------------------------------------------------------------------ scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Log-likelihoods; each distinct context runs once, its options as batches over its cache."""
        self._require_loaded()
        results = ScoreCollector(len(requests))
        for group in score_groups(requests, lambda s: self.tokenize(s, add_special=True)):
            results.put(group.indices, self._score_group(group.prefix, group.continuations, group.skip))
        return results.results()

    def _score_group(self, ctx: list[int], conts: list[list[int]], skips: list[int]) -> list[ScoreResult]:
        """Score continuations over one cached context.

        Only a continuation's tokens but the last need a forward pass. GroupQueryAttention
        accepts a batch over a past only one token at a time, so options needing one more token
        (single-token answers after a shared space, the common MCQ case) run as one batch and
        longer ones run one by one over the same cache (the cache is shared, never copied).
        """
        import numpy as np

        logits, cache = self._run(np.array([ctx]), None, 0)
        last = log_softmax(logits[0, -1])
        rows: dict[int, Any] = {}
        ones = [b for b, c in enumerate(conts) if len(c) == 2]
        for start in range(0, len(ones), self.batch_size):
            chunk = ones[start:start + self.batch_size]
            past = {k: np.repeat(v, len(chunk), axis=0) for k, v in cache.items()}
            logp = log_softmax(self._run(np.array([[conts[b][0]] for b in chunk]), past, len(ctx))[0])
            rows.update({b: logp[j] for j, b in enumerate(chunk)})
        for b, cont in enumerate(conts):
            if len(cont) > 2:
                rows[b] = log_softmax(self._run(np.array([cont[:-1]]), cache, len(ctx))[0][0])
        out: list[ScoreResult] = []
        for b, (cont, skip) in enumerate(zip(conts, skips, strict=True)):
            table = np.concatenate([last[None], rows[b].reshape(-1, last.shape[-1])], axis=0) \
                if b in rows else last[None]
            out.append(result_from_rows(table, cont, skip))
        return out

    def logprobs(self, token_ids: Sequence[int]) -> np.ndarray:
        import numpy as np

        self._require_loaded()
        if not token_ids:
            raise BackendError("logprobs() needs at least one token")
        return log_softmax(self._run(np.array([list(token_ids)]), None, 0)[0][0])

    # ------------------------------------------------------------------ memory

    def memory(self) -> MemoryReport:
        rss, peak = process_memory()
        return MemoryReport(rss, peak, self.device)


if TYPE_CHECKING:  # mypy checks the class against the protocol, structurally
    _: type[Backend] = OnnxBackend
