"""OnnxBackend against the transformers reference on the tiny random model (fp32 ONNX build)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import as_build

from globmed_edge.backends import detect_format, open_backend
from globmed_edge.backends.base import Backend, GenerationRequest, Message, ScoreRequest
from globmed_edge.errors import BackendError, ManifestError, ModelError

pytestmark = pytest.mark.onnx

TEXTS = [
    "The patient has had a fever and a dry cough for three days.",
    "يعاني المريض من الحمى والسعال منذ ثلاثة أيام.",
    "रोगी को तीन दिन से बुखार और खांसी है।",
    "ታካሚው ለሶስት ቀናት ትኩሳት እና ሳል አለበት።",
    "病人发烧咳嗽已经三天了。",
    "Le patient a de la fièvre 🤒 depuis 3 jours.\n\tDose: 500 mg <|im_end|> fin",
    "  leading and trailing spaces  ",
]


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, cache_dir) -> Path:
    """The tiny model's fp32 ONNX build, exported once per cache (the exporter test re-exports)."""
    from globmed_edge.atomic import atomic_dir
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.onnx import ONNXExporter

    path = cache_dir / "onnx" / "tiny-qwen3-fp32"
    if not (path / "genai_config.json").is_file():
        with atomic_dir(path) as tmp:
            ONNXExporter().export(ExportRequest(tiny_model, tmp, "fp32"))
    return as_build(path, "onnx", "fp32")


@pytest.fixture(scope="module")
def pair(tiny_onnx, tiny_model):
    onnx_be = open_backend(tiny_onnx, threads=1)
    ref = open_backend(tiny_model)
    onnx_be.load()
    ref.load()
    yield onnx_be, ref
    onnx_be.close()
    ref.close()


def test_protocol_and_detection(tiny_onnx, pair):
    assert detect_format(tiny_onnx) == "onnx"
    from globmed_edge.backends.onnx_backend import OnnxBackend

    assert isinstance(pair[0], Backend) and pair[0].name == "onnx"
    assert isinstance(pair[0], OnnxBackend)
    assert pair[0].session.get_session_options().intra_op_num_threads == 1


def test_used_before_load(tiny_onnx):
    be = open_backend(tiny_onnx)
    with pytest.raises(BackendError, match="before load"):
        be.tokenize("x")


def test_tokenization_matches_hf(pair):
    be, ref = pair
    for text in TEXTS:
        for special in (False, True):
            assert be.tokenize(text, add_special=special) == ref.tokenize(text, add_special=special), text


def test_chat_template_matches_hf(pair):
    be, ref = pair
    for msgs in [(Message("user", "مرحبا، عندي صداع"),),
                 (Message("system", "Answer briefly."), Message("user", "Fever?"),
                  Message("assistant", "Yes."), Message("user", "बुखार?"))]:
        for gen in (True, False):
            assert be.render_chat(msgs, add_generation_prompt=gen) == ref.render_chat(msgs, add_generation_prompt=gen)


def test_logprobs_match_transformers(pair):
    be, ref = pair
    for text in TEXTS[:5]:
        ids = ref.tokenize(text, add_special=True)
        a, b = be.logprobs(ids), ref.logprobs(ids)
        assert a.shape == b.shape == (len(ids), b.shape[1])
        assert np.abs(a - b).max() < 1e-3


def test_score_matches_transformers(pair):
    be, ref = pair
    mcq = "Question: Which drug treats malaria?\nA. Artemether\nB. Insulin\nAnswer:"
    reqs = [ScoreRequest(mcq, c) for c in (" A", " B", " Artemether-lumefantrine", " غير معروف")]
    reqs += [ScoreRequest("La fièvre est ", "un symptôme"), ScoreRequest("病人", "发烧"),
             ScoreRequest(mcq, " A")]
    ours, theirs = be.score(reqs), ref.score(reqs)
    assert len(ours) == len(reqs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.n_tokens == b.n_tokens >= 1
        assert a.logprob == pytest.approx(b.logprob, abs=2e-3)
        assert a.is_greedy == b.is_greedy
    assert ours[0].logprob == ours[-1].logprob  # the same request scores the same in one batch
    with pytest.raises(BackendError):
        be.score([ScoreRequest("", "x")])


def test_greedy_stream_matches_transformers(pair):
    be, ref = pair
    req = GenerationRequest.from_text("What are the signs of dehydration? ما هي علامات الجفاف؟",
                                      max_new_tokens=12)
    ours, theirs = list(be.stream(req)), list(ref.stream(req))
    assert [e.token_id for e in ours] == [e.token_id for e in theirs]
    assert "".join(e.text for e in ours) == "".join(e.text for e in theirs)
    assert ours[0].prompt_tokens == theirs[0].prompt_tokens
    assert ours[-1].finish_reason == "length" and all(e.finish_reason is None for e in ours[:-1])


def test_stop_string_cancel_and_sampling(pair):
    be, _ = pair
    req = GenerationRequest.from_text("Say something.", max_new_tokens=10)
    full = "".join(e.text for e in be.stream(req))
    stop = full.strip()[:3]
    assert stop
    events = list(be.stream(GenerationRequest.from_text("Say something.", max_new_tokens=10, stop=(stop,))))
    assert events[-1].finish_reason == "stop" and stop not in "".join(e.text for e in events)
    cancel = threading.Event()
    got = []
    for e in be.stream(GenerationRequest.from_text("Say something.", max_new_tokens=50), cancel=cancel):
        got.append(e)
        cancel.set()
    assert got[-1].finish_reason == "cancelled" and len(got) == 2
    sample = GenerationRequest.from_text("Say something.", max_new_tokens=8, temperature=0.9, top_p=0.9, seed=7)
    assert [e.token_id for e in be.stream(sample)] == [e.token_id for e in be.stream(sample)]


def test_memory(pair):
    mem = pair[0].memory()
    assert mem.rss_bytes > 0 and mem.peak_rss_bytes >= mem.rss_bytes and mem.device == "cpu"


def _with_manifest(src: Path, dest: Path, fmt: str = "onnx") -> Path:
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest

    shutil.copytree(src, dest)
    write_manifest(dest, Manifest(name=dest.name, format=fmt, quantization="fp32", bits_per_weight=32.0,
                                  files=hash_build_files(dest), source={"path": "tiny"}))
    return dest


def test_build_with_manifest_loads_and_tampering_is_refused(tiny_onnx, tmp_path):
    build = _with_manifest(tiny_onnx, tmp_path / "build")
    be = open_backend(build)
    be.load()
    from globmed_edge.backends.onnx_backend import OnnxBackend

    assert isinstance(be, OnnxBackend)
    assert be.manifest.format == "onnx" and be.tokenize("hi")
    be.close()
    cfg = build / "genai_config.json"
    data = json.loads(cfg.read_text(encoding="utf-8"))
    data["search"]["max_length"] = 16
    cfg.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"genai_config\.json"):
        open_backend(build).load()
    (build / "genai_config.json").unlink()
    with pytest.raises(ManifestError, match="missing"):
        open_backend(build).load()


def test_wrong_format_and_broken_builds(tiny_onnx, tmp_path):
    build = _with_manifest(tiny_onnx, tmp_path / "gguf-labelled", fmt="gguf")
    from globmed_edge.backends.onnx_backend import OnnxBackend

    with pytest.raises(ModelError, match="not 'onnx'"):
        OnnxBackend(build).load()
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(ModelError, match="no genai_config.json"):
        OnnxBackend(bare).load()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_onnx, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="onnxruntime cannot load it"):
        OnnxBackend(broken, verify=False).load()  # past the manifest rule, to onnxruntime itself
