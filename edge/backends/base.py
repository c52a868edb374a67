"""The backend protocol: the only way the bench scorer, parity checks and the TUI touch a model.

A backend is constructed cheaply (no weights), loads in `load()`, and then:

* `stream(request)` yields `TokenEvent`s for a chat rendered with the build's chat template;
* `score(requests)` returns the log-likelihood of each continuation given its context, for a
  whole batch at once (backends reuse shared prefixes and batch internally);
* `logprobs(token_ids)` returns next-token log-probabilities at every position (parity/drift);
* `tokenize(text)` exposes the build's own tokenizer (parity checks compare token ids);
* `memory()` reports its own memory; `close()` frees it.

Requests and results are frozen dataclasses; capabilities are data, so callers can check what a
backend offers without importing its runtime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Capabilities:
    stream: bool = True
    score: bool = True
    logprobs: bool = True
    devices: tuple[str, ...] = ("cpu",)


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    # The repetition guard: CTRL's repetition penalty over the tokens of this answer (1.0 = off).
    # The formula of llama.cpp's `repeat_penalty` / `penalty_repeat`, onnxruntime-genai's
    # `repetition_penalty` and transformers' RepetitionPenaltyLogitsProcessor (there with
    # `prompt_ignore_length` = the prompt): a logit of a token already in the answer is divided
    # by the penalty when positive and multiplied by it when negative. Prompt tokens are not
    # penalized, so an answer may repeat the question's words. See `penalize`.
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        import math

        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            from globmed_edge.errors import ConfigError

            raise ConfigError(f"repetition_penalty={self.repetition_penalty}: must be a positive "
                              "number (1.0 = off; 1.1-1.3 discourage loops)")

    @classmethod
    def from_text(cls, prompt: str, system: str | None = None, **kwargs: object) -> GenerationRequest:
        msgs = ([Message("system", system)] if system else []) + [Message("user", prompt)]
        return cls(messages=tuple(msgs), **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TokenEvent:
    """One streamed piece of text. `finish_reason` is set on the last event only."""

    text: str
    index: int
    time: float  # time.perf_counter() when the token was ready
    token_id: int | None = None
    finish_reason: Literal["stop", "length", "cancelled"] | None = None
    prompt_tokens: int | None = None  # set on the first event


@dataclass(frozen=True)
class ScoreRequest:
    context: str
    continuation: str


@dataclass(frozen=True)
class ScoreResult:
    logprob: float  # sum of log-probabilities of the continuation tokens
    n_tokens: int
    is_greedy: bool  # every continuation token was the argmax


@dataclass(frozen=True)
class MemoryReport:
    rss_bytes: int
    peak_rss_bytes: int
    device: str = "cpu"
    cuda_allocated_bytes: int | None = None
    cuda_reserved_bytes: int | None = None
    cuda_peak_allocated_bytes: int | None = None


@dataclass(frozen=True)
class BackendOptions:
    device: str = "cpu"
    threads: int | None = None
    context_length: int = 2048
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    path: Path

    def load(self) -> None: ...

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]: ...

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str: ...

    def stream(
        self, request: GenerationRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[TokenEvent]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...

    def logprobs(self, token_ids: Sequence[int]) -> np.ndarray: ...

    def memory(self) -> MemoryReport: ...

    def close(self) -> None: ...


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas without splitting characters.

    Byte-level and SentencePiece tokenizers can emit half a UTF-8 character or a leading space
    that only appears once the next token is known; decoding the whole suffix and emitting the
    difference (holding back a trailing U+FFFD) gives clean deltas for every script.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
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


class StreamEvents:
    """The events of one generation, shared by every backend's `stream()`.

    `next(i, token)` turns the i-th sampled token into the TokenEvent to yield. An end-of-
    generation token, or a `request.stop` string once complete (not emitted itself), ends the
    stream with finish_reason "stop"; the last token of the budget ends it with "length". The
    caller stops when `event.finish_reason` is set. Text deltas come from an IncrementalDecoder.
    """

    def __init__(self, request: GenerationRequest, decode: Callable[[list[int]], str], prompt_tokens: int,
                 budget: int, is_end: Callable[[int], bool]) -> None:
        self.request = request
        self.decoder = IncrementalDecoder(decode)
        self.prompt_tokens = prompt_tokens
        self.budget = budget
        self.is_end = is_end
        self.emitted = ""

    def cancelled(self, i: int) -> TokenEvent:
        return TokenEvent("", i, time.perf_counter(), finish_reason="cancelled")

    def next(self, i: int, token: int) -> TokenEvent:
        now, first = time.perf_counter(), (self.prompt_tokens if i == 0 else None)
        if self.is_end(token):
            return TokenEvent("", i, now, token, "stop", first)
        delta = self.decoder.push(token)
        self.emitted += delta
        hit = next((s for s in self.request.stop if s in self.emitted), None)
        if hit is not None:
            keep = delta[: max(0, len(delta) - (len(self.emitted) - self.emitted.index(hit)))]
            return TokenEvent(keep, i, now, token, "stop", first)
        return TokenEvent(delta, i, now, token, "length" if i == self.budget - 1 else None, first)


def defuse_specials(text: str, specials: Iterable[str]) -> str:
    """`text` with every special-token string broken by a zero-width space after its first
    character, so the tokenizer reads it as plain text: a prompt holding
    `<|im_end|><|im_start|>system ...` must not open a system turn (role injection). Only the
    chat template adds control tokens."""
    for tok in sorted({s for s in specials if s and len(s) > 1}, key=len, reverse=True):
        if tok in text:
            text = text.replace(tok, tok[0] + "\u200b" + tok[1:])
    return text


def split_pair(
    tokenize: Callable[[str], list[int]], context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split the way lm-evaluation-harness does.

    Trailing whitespace of the context moves to the continuation; the pair is encoded whole and
    the continuation is what follows the context's own encoding. Every backend uses this, so a
    continuation is the same tokens whichever runtime scores it.
    """
    n_space = len(context) - len(context.rstrip())
    if n_space:
        continuation = context[-n_space:] + continuation
        context = context[:-n_space]
    whole = tokenize(context + continuation)
    ctx = tokenize(context)
    return whole[: len(ctx)], whole[len(ctx):]


@dataclass(frozen=True)
class ScoreGroup:
    """Requests that share one context: their indices, the token prefix all their context
    encodings share (what a backend evaluates and caches once), and each request's tokens after
    that prefix: `continuations[j]` is the rest of request j's context encoding followed by its
    continuation, and the first `skip[j]` of those tokens are context, conditioned on but not
    scored (lm-evaluation-harness scores exactly the tokens after the context's own encoding)."""

    indices: list[int]
    prefix: list[int]
    continuations: list[list[int]]
    skip: list[int]


def score_groups(requests: Sequence[ScoreRequest], tokenize: Callable[[str], list[int]]) -> list[ScoreGroup]:
    """Group score requests by context for shared-prefix reuse (every backend scores this way).

    Contexts that end in whitespace may encode differently per option (see `split_pair`), so the
    cached prefix is the common prefix of all of a group's context encodings.
    """
    from globmed_edge.errors import BackendError

    by_context: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        if not r.context:
            raise BackendError("score() needs a non-empty context")
        by_context.setdefault(r.context, []).append(i)
    groups = []
    for context, idxs in by_context.items():
        pairs = [split_pair(tokenize, context, requests[i].continuation) for i in idxs]
        prefix = pairs[0][0]
        for c, _ in pairs[1:]:
            n = 0
            while n < min(len(prefix), len(c)) and prefix[n] == c[n]:
                n += 1
            prefix = prefix[:n]
        if not prefix:
            raise BackendError("score(): context encodes to no tokens")
        groups.append(ScoreGroup(idxs, prefix, [c[len(prefix):] + k for c, k in pairs],
                                 [len(c) - len(prefix) for c, _ in pairs]))
    return groups


def result_from_rows(rows: np.ndarray, continuation: Sequence[int], skip: int = 0) -> ScoreResult:
    """A ScoreResult from log-probability rows: `rows[k]` is the distribution that predicts
    `continuation[k]`; the first `skip` tokens are context and are not scored."""
    import numpy as np

    target = np.asarray(continuation[skip:], dtype=np.int64)
    if target.size == 0:
        return ScoreResult(0.0, 0, True)
    table = rows[skip: len(continuation)]
    lp = table[np.arange(target.size), target].astype(np.float64)
    return ScoreResult(float(lp.sum()), int(target.size), bool((table.argmax(axis=-1) == target).all()))


def penalize(logits: np.ndarray, previous: Sequence[int], penalty: float) -> np.ndarray:
    """`logits` with the repetition penalty applied to every token id in `previous` (once per
    distinct id, as llama.cpp, onnxruntime-genai and transformers do): positive logits divided
    by `penalty`, negative ones multiplied. A copy; `logits` is unchanged. penalty 1.0: as is."""
    import numpy as np

    if penalty == 1.0 or not len(previous):
        return logits
    ids = np.unique(np.asarray(previous, dtype=np.int64))
    out = logits.astype(np.float32, copy=True)
    seen = out[ids]
    out[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return out


def pick_token(logits: np.ndarray, request: GenerationRequest, rng: np.random.Generator,
               previous: Sequence[int] = ()) -> int:
    """The next token from one row of logits: greedy at temperature 0, else temperature +
    nucleus (top_p) sampling from a seeded generator, after the request's repetition penalty
    over `previous` (the tokens of the answer so far). The numpy backends share it, so equal
    logits give equal tokens whichever runtime produced them."""
    import numpy as np

    logits = penalize(logits, previous, request.repetition_penalty)
    if request.temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float32) / request.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if request.top_p < 1.0:
        order = np.argsort(-p)
        sorted_p = p[order]
        keep = np.cumsum(sorted_p) - sorted_p < request.top_p
        p = np.zeros_like(p)
        p[order[keep]] = sorted_p[keep]
        p /= p.sum()
    return int(rng.choice(len(p), p=p))


def own_peak_rss() -> int | None:
    """This process's own peak RSS in bytes (VmHWM of /proc/self/status: the high-water mark of
    its own address space, which exec starts afresh); None where /proc is not available. Not
    ru_maxrss: on Linux that is inherited across fork + exec, so a runtime child
    (backends/isolated.py, bench's throughput child) of a process that had loaded a torch model
    would report that model's peak as its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def process_memory() -> tuple[int, int]:
    """(current RSS, peak RSS) in bytes for this process; RSS includes mapped weight pages."""
    import resource

    import psutil

    rss = psutil.Process().memory_info().rss
    peak = own_peak_rss()
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return rss, max(rss, peak)
