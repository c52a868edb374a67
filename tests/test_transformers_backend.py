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
        from globmed_edge.backends.transformers_backend import TransformersBackend

        assert isinstance(be, TransformersBackend)
        assert lp.shape == (len(ids), be.model.config.vocab_size)
        assert np.allclose(np.exp(lp).sum(-1), 1.0, atol=1e-3)
        assert be.memory().rss_bytes > 0
    finally:
        be.close()


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        open_backend(tmp_path)


def _tiny_gemma3_sliding(tok_path):
    """A random Gemma 3 with a 4-token sliding window on its first layer (shorter than the prompts)."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tok_path)
    config = transformers.Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32,
        sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=512, initializer_range=0.05, pad_token_id=tok.pad_token_id)
    torch.manual_seed(5)
    return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval(), tok


@pytest.mark.parametrize("arch", ["qwen3", "gemma3-sliding-window"])
def test_packed_scoring_equals_a_full_forward_per_request(arch, tiny_model):
    """Packing every option of several contexts into one batch (4D masks, restarted positions,
    sliding windows) must give what a plain forward over context + continuation gives, scoring
    exactly lm-eval's continuation tokens even where the context's encoding differs per option."""
    from globmed_edge.backends.base import score_groups, split_pair
    from globmed_edge.backends.transformers_backend import TransformersBackend

    if arch == "qwen3":
        be = open_backend(tiny_model)
        be.load()
    else:
        be = TransformersBackend.from_loaded(*_tiny_gemma3_sliding(tiny_model))
    mcq = "Question: Which drug treats malaria?\nA. Artemether\nB. Insulin\nC. Aspirin\nAnswer:"
    reqs = [ScoreRequest(mcq, c) for c in (" A", " B", " C", " Artemether-lumefantrine", " Insulin")]
    reqs += [ScoreRequest("The dos", "e is high"), ScoreRequest("The dos", "age forms differ"),
             ScoreRequest("Homa ni ", "dalili ya malaria"), ScoreRequest("الحمى", " عرض من أعراض الملاريا"),
             ScoreRequest("病人", "发烧")]
    tok = lambda s: be.tokenize(s, add_special=True)  # noqa: E731
    assert any(any(g.skip) for g in score_groups(reqs, tok)), "no request exercises the skipped-context path"
    got = be.score(reqs)
    for r, res in zip(reqs, got, strict=True):
        ctx, cont = split_pair(tok, r.context, r.continuation)
        lp = be.logprobs(ctx + cont)
        rows = lp[len(ctx) - 1: len(ctx) + len(cont) - 1]
        direct = float(sum(rows[i, t] for i, t in enumerate(cont)))
        assert res.n_tokens == len(cont), r
        assert res.logprob == pytest.approx(direct, abs=1e-3), r
        assert res.is_greedy == bool(all(rows[i].argmax() == t for i, t in enumerate(cont))), r
    # batching across calls changes nothing (different packing, same numbers)
    singles = [be.score([r])[0] for r in reqs]
    assert [s.logprob for s in singles] == pytest.approx([g.logprob for g in got], abs=1e-4)
