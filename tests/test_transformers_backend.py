import threading

import numpy as np
import pytest

from globmed_edge.backends import open_backend
from globmed_edge.backends.base import GenerationRequest, ScoreRequest
from globmed_edge.errors import ModelError


@pytest.fixture(scope="module")
def default_backend(default_model):
    be = open_backend(default_model)
    be.load()
    yield be
    be.close()


@pytest.mark.slow
def test_default_model_generates_offline(default_backend):
    events = list(default_backend.stream(GenerationRequest.from_text(
        "What is the main symptom of malaria?", max_new_tokens=24)))
    text = "".join(e.text for e in events).strip()
    assert events[0].prompt_tokens and events[-1].finish_reason in ("stop", "length")
    assert len(text.split()) >= 3 and any(ch.isalpha() for ch in text)
    # greedy is deterministic
    again = "".join(e.text for e in default_backend.stream(GenerationRequest.from_text(
        "What is the main symptom of malaria?", max_new_tokens=24))).strip()
    assert again == text


@pytest.mark.slow
def test_score_prefers_sensible_continuation(default_backend):
    ctx = "The capital of France is"
    res = default_backend.score([ScoreRequest(ctx, " Paris"), ScoreRequest(ctx, " banana"),
                                 ScoreRequest("Water boils at 100 degrees", " Celsius")])
    assert len(res) == 3 and res[0].logprob > res[1].logprob
    assert all(np.isfinite(r.logprob) and r.n_tokens >= 1 for r in res)


@pytest.mark.slow
def test_batched_score_matches_full_forward(default_backend):
    """Shared-prefix scoring must equal scoring each (context + continuation) from scratch."""
    ctx = "Question: Which drug treats malaria?\nA. Artemether\nB. Insulin\nAnswer:"
    conts = [" A", " B", " Artemether-lumefantrine"]
    batched = default_backend.score([ScoreRequest(ctx, c) for c in conts])
    for c, r in zip(conts, batched):
        ids = default_backend.tokenize(ctx + c, add_special=True)
        n_ctx = len(default_backend.tokenize(ctx, add_special=True))
        lp = default_backend.logprobs(ids)
        direct = sum(lp[i - 1, ids[i]] for i in range(n_ctx, len(ids)))
        assert r.logprob == pytest.approx(direct, abs=2e-3)


def test_tiny_model_stream_cancel_and_logprobs(tiny_model):
    be = open_backend(tiny_model)
    be.load()
    try:
        cancel = threading.Event()
        events = []
        for ev in be.stream(GenerationRequest.from_text("hello", max_new_tokens=50), cancel=cancel):
            events.append(ev)
            if len(events) == 3:
                cancel.set()
        assert events[-1].finish_reason == "cancelled" and len(events) == 4
        ids = be.tokenize("Homa ni dalili ya malaria. الحمى عرض من أعراض الملاريا")
        lp = be.logprobs(ids)
        assert lp.shape == (len(ids), be.model.config.vocab_size)
        assert np.allclose(np.exp(lp).sum(-1), 1.0, atol=1e-3)
        assert be.memory().rss_bytes > 0
    finally:
        be.close()


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        open_backend(tmp_path)
