"""The per-build parity check: does a build still behave like the model it was made from?

The source model runs once per `quantize` run through the transformers backend (the reference
runtime) and its side is kept in a `Reference`; every build is then loaded through its own
backend (llama.cpp for GGUF, onnxruntime for ONNX, ...) from its finished temporary directory and
compared on a fixed multilingual probe set:

* tokenization: the build's token ids must equal the source's for every probe text;
* next-token distributions at every probe position (fed the source's token ids to both sides):
  top-1 agreement and mean KL(source || build);
* a greedy continuation of one chat prompt, rendered by each side's own chat template: the
  prompts must match and the length of the common prefix of the two continuations is recorded.

Pass/fail uses the `ParityThresholds` of the build's quantization; `enforce` raises ParityError
on failure unless the user accepted the drift (recorded in the manifest by the runner).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from globmed_edge import langpacks
from globmed_edge.errors import BackendError, ParityError
from globmed_edge.quantize.base import ParityThresholds

if TYPE_CHECKING:
    from globmed_edge.backends.base import Backend

# Short medical sentences written for this probe set, one per language pack with a `parity_probe`
# (edge/langpacks/<code>.json), in probe order: 10 languages, 7 scripts (Latin, Arabic
# right-to-left, Devanagari, Ethiopic, Han, Cyrillic, Japanese kana + kanji). Parity results are
# compared across builds, so these texts never change (tests/test_langpacks.py holds them); give a
# new language's probe no `order` (or a higher one) so that it comes after them.
PROBES: Sequence[tuple[str, str]] = langpacks.LiveTuple(lambda: langpacks.load().parity_probes)
CHAT_PROMPT = ("A mother says her two-year-old has had watery diarrhoea for two days. "
               "Which danger signs should I check for?")
GREEDY_TOKENS = 24


@dataclass
class Reference:
    """The source model's side of the check, computed once per run and reused for every build."""

    source: str
    probe_ids: list[list[int]]
    logprobs: list[Any]  # numpy [positions, vocab] per probe
    chat_prompt: str
    greedy_ids: list[int]
    greedy_text: str
    seconds: float


@dataclass
class ParityResult:
    passed: bool
    tokens_identical: bool
    top1_agreement: float
    mean_kl: float
    max_kl: float
    positions: int
    greedy_match_tokens: int
    greedy_tokens: int
    greedy_match_ratio: float
    chat_prompt_identical: bool
    thresholds: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    languages: dict[str, dict[str, Any]] = field(default_factory=dict)
    greedy_source: str = ""
    greedy_build: str = ""
    backend: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False)


@contextmanager
def _loaded(backend: Backend, bar: Any) -> Iterator[None]:
    """The backend loaded (one progress step) for the block, then closed with the bar."""
    try:
        backend.load()
        bar.update()
        yield
    finally:
        bar.close()
        backend.close()


def _greedy(backend: Backend) -> tuple[str, list[int], str]:
    """The chat prompt as this backend renders it, and its greedy continuation (ids, text)."""
    from globmed_edge.backends.base import GenerationRequest, Message

    prompt = backend.render_chat([Message("user", CHAT_PROMPT)])
    ids: list[int | None] = []
    text = ""
    for ev in backend.stream(GenerationRequest.from_text(CHAT_PROMPT, max_new_tokens=GREEDY_TOKENS)):
        ids.append(ev.token_id)
        text += ev.text
    if any(i is None for i in ids):  # a backend that does not report ids: compare its text's tokens
        return prompt, backend.tokenize(text), text
    return prompt, [int(i) for i in ids if i is not None], text


def compute_reference(source: Path, *, threads: int | None = None, progress: bool = False) -> Reference:
    """Run the source model (transformers backend) over the probes and the chat prompt once."""
    from globmed_edge.backends.transformers_backend import TransformersBackend

    t0 = time.perf_counter()
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    backend = TransformersBackend(source, threads=threads)
    bar = _bar(len(PROBES) + 2, "parity: source model", progress)
    with _loaded(backend, bar):
        ids, logprobs = [], []
        for _, text in PROBES:
            tokens = backend.tokenize(text)
            ids.append(tokens)
            logprobs.append(backend.logprobs(tokens))
            bar.update()
        prompt, greedy_ids, greedy_text = _greedy(backend)
        bar.update()
    return Reference(str(source), ids, logprobs, prompt, greedy_ids, greedy_text,
                     round(time.perf_counter() - t0, 2))


def _compare(ref: Any, got: Any) -> tuple[Any, Any]:
    """Per-position KL(source || build) and top-1 agreement of two [positions, vocab] arrays."""
    import numpy as np

    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if got.shape[0] != ref.shape[0]:
        raise BackendError(f"build returned {got.shape[0]} positions for {ref.shape[0]} tokens")
    vocab = min(ref.shape[1], got.shape[1])  # a build may pad its vocabulary
    ref, got = ref[:, :vocab], np.maximum(got[:, :vocab], -1e4)  # -inf where p > 0 would be inf
    p = np.exp(ref)
    kl = np.maximum((p * (ref - got)).sum(axis=1), 0.0)
    top1 = ref.argmax(axis=1) == got.argmax(axis=1)
    return kl, top1


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _num(x: float) -> float:
    return float(f"{float(x):.6g}")


def check_parity(build: Path, fmt: str, reference: Reference, thresholds: ParityThresholds, *,
                 threads: int | None = None, progress: bool = False, label: str = "",
                 backend_name: str | None = None) -> ParityResult:
    """Load `build` through `backend_name` (default: its format's) and compare it with `reference`."""
    import numpy as np

    from globmed_edge.backends import FORMAT_BACKEND, open_backend

    t0 = time.perf_counter()
    backend_name = backend_name or FORMAT_BACKEND[fmt]
    # The build is quantize's own fresh export, checked before its manifest exists: it is opened
    # explicitly unverified (verify=False), the one place that does so without the user asking.
    backend = open_backend(build, backend_name, threads=threads, isolate="native",  # a crash fails this build only
                           verify=False)
    bar = _bar(len(PROBES) + 2, f"parity: {label or build.name}", progress)
    kls, tops, langs = [], [], {}
    mismatched = []
    with _loaded(backend, bar):
        for (lang, text), src_ids, src_lp in zip(PROBES, reference.probe_ids, reference.logprobs, strict=True):
            same = list(backend.tokenize(text)) == list(src_ids)
            if not same:
                mismatched.append(lang)
            kl, top1 = _compare(src_lp, backend.logprobs(src_ids))
            kls.append(kl)
            tops.append(top1)
            langs[lang] = {"tokens_identical": same, "positions": len(src_ids),
                           "top1_agreement": _num(top1.mean()), "mean_kl": _num(kl.mean())}
            bar.update()
        prompt, greedy_ids, greedy_text = _greedy(backend)
        bar.update()
    all_kl, all_top = np.concatenate(kls), np.concatenate(tops)
    match = _common_prefix(reference.greedy_ids, greedy_ids)
    longest = max(len(reference.greedy_ids), len(greedy_ids), 1)
    result = ParityResult(
        passed=False, tokens_identical=not mismatched, top1_agreement=_num(all_top.mean()),
        mean_kl=_num(all_kl.mean()), max_kl=_num(all_kl.max()), positions=len(all_kl),
        greedy_match_tokens=match, greedy_tokens=longest, greedy_match_ratio=_num(match / longest),
        chat_prompt_identical=prompt == reference.chat_prompt, thresholds=asdict(thresholds),
        languages=langs, greedy_source=reference.greedy_text, greedy_build=greedy_text,
        backend=backend_name,
    )
    result.failures = judge(result, thresholds, mismatched)
    result.passed = not result.failures
    result.seconds = round(time.perf_counter() - t0, 2)
    return result


def judge(result: ParityResult, thresholds: ParityThresholds, mismatched: Sequence[str] = ()) -> list[str]:
    """Human-readable reasons a result falls outside `thresholds` (empty when it passes)."""
    out = []
    if thresholds.require_identical_tokens and not result.tokens_identical:
        out.append(f"token ids differ from the source for: {', '.join(mismatched) or '?'}")
    if thresholds.require_identical_tokens and not result.chat_prompt_identical:
        out.append("the build's chat template renders a different prompt")
    if result.top1_agreement < thresholds.min_top1_agreement:
        out.append(f"top-1 agreement {result.top1_agreement:.4f} < {thresholds.min_top1_agreement}")
    if not result.mean_kl <= thresholds.max_mean_kl:
        out.append(f"mean KL {result.mean_kl:.4g} > {thresholds.max_mean_kl}")
    return out


def enforce(result: ParityResult, *, allow_drift: bool, label: str) -> None:
    """Raise ParityError for a failed check, unless the drift was accepted (--allow-drift)."""
    if result.passed or allow_drift:
        return
    raise ParityError(f"{label}: parity check failed ({'; '.join(result.failures)}); "
                      "the build was not kept (use --allow-drift to keep it anyway)",
                      parity=result.to_dict())
