"""ONNX exporter: argument handling, real exports of the tiny and default models, drift order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from globmed_edge.errors import ConfigError, ModelError, NotAvailableError
from globmed_edge.quantize.base import EXPORTERS, ExportRequest
from globmed_edge.quantize.onnx import QUANTIZATIONS, ONNXExporter

PROBES = [
    "The patient has had a fever and a dry cough for three days.",
    "يعاني المريض من الحمى والسعال منذ ثلاثة أيام.",
    "रोगी को तीन दिन से बुखार और खांसी है।",
    "ታካሚው ለሶስት ቀናት ትኩሳት እና ሳል አለበት።",
    "病人发烧咳嗽已经三天了。",
]


def _request(tmp_path: Path, quantization: str, **options: object) -> ExportRequest:
    return ExportRequest(source=tmp_path, out_dir=tmp_path / "out", quantization=quantization,
                         options=dict(options))


def test_registry_and_specs():
    assert EXPORTERS.load("onnx") is ONNXExporter
    assert set(QUANTIZATIONS) == {"fp32", "fp16", "int8", "int4"}
    kl = [QUANTIZATIONS[q].thresholds.max_mean_kl for q in ("fp32", "fp16", "int8", "int4")]
    assert kl == sorted(kl), "looser precisions must not get tighter thresholds"
    assert all(spec.help for spec in QUANTIZATIONS.values())


def test_builder_args(tmp_path):
    ex = ONNXExporter()
    args = ex.builder_args(_request(tmp_path, "int8"), tmp_path / "c")
    assert args[args.index("-p") + 1] == "int8" and args[args.index("-e") + 1] == "cpu"
    assert "accuracy_level=4" in args and "block_size=32" in args and "hf_token=false" in args
    args = ex.builder_args(_request(tmp_path, "int8", accuracy_level=1), tmp_path / "c")
    assert "accuracy_level=1" in args
    args = ex.builder_args(_request(tmp_path, "int4", block_size=64, algo="k_quant"), tmp_path / "c")
    assert "block_size=64" in args and "algo_config=k_quant" in args and "accuracy_level=4" in args
    assert ex.builder_args(_request(tmp_path, "fp16"), tmp_path / "c")[-4:-2] == ["-c", str(tmp_path / "c")]


@pytest.mark.parametrize("quantization, options, match", [
    ("int3", {}, "unknown ONNX quantization"),
    ("int4", {"blocksize": 32}, "unknown ONNX option"),
    ("int4", {"block_size": 48}, "block_size 48"),
    ("int8", {"accuracy_level": 7}, "accuracy_level 7"),
    ("fp32", {"block_size": 32}, "apply to int4/int8"),
    ("int4", {"execution_provider": "dml"}, "execution_provider 'dml'"),
    ("fp16", {"execution_provider": "cpu"}, "fp16 is a CUDA build"),
])
def test_bad_arguments(tmp_path, quantization, options, match):
    with pytest.raises(ConfigError, match=match):
        ONNXExporter().builder_args(_request(tmp_path, quantization, **options), tmp_path / "c")


@pytest.mark.onnx
def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        ONNXExporter().export(_request(tmp_path, "int4"))


@pytest.mark.onnx
def test_fp16_needs_the_cuda_provider(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(NotAvailableError, match="fp16 is a CUDA build"):
        ONNXExporter().export(_request(tmp_path, "fp16"))


def export(source: Path, out: Path, quantization: str):
    out.mkdir(parents=True)
    steps: list[str] = []
    result = ONNXExporter().export(ExportRequest(source, out, quantization, progress=steps.append))
    assert steps, "the exporter reports progress"
    return result


@pytest.fixture(scope="module")
def tiny_builds(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    results = {q: export(tiny_model, root / q, q) for q in ("fp32", "int8", "int4")}
    return root, results


def _onnx_logprobs(build: Path, ids: list[int]) -> np.ndarray:
    from globmed_edge.backends.onnx_backend import OnnxBackend

    be = OnnxBackend(build, threads=1, verify=False)  # the exporter's raw output: no manifest yet
    be.load()
    try:
        return be.logprobs(ids)
    finally:
        be.close()


@pytest.mark.slow
@pytest.mark.onnx
def test_tiny_exports_are_complete(tiny_builds):
    root, results = tiny_builds
    for q, result in results.items():
        names = {p.name for p in (root / q).iterdir()}
        assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json",
                "tokenizer_config.json", "chat_template.jinja", "generation_config.json"} <= names
        assert not any(n.startswith(".") for n in names), "builder cache left in the build"
        assert result.stop_tokens == ["<|im_end|>"]
        assert result.tools["onnxruntime-genai"] and result.extra["execution_provider"] == "cpu"
    bpw = {q: r.bits_per_weight for q, r in results.items()}
    assert bpw["fp32"] == pytest.approx(32.0)
    # int4 quantizes the tied embedding too; int8 keeps an fp32 embedding beside its int8 head.
    assert 4.0 < bpw["int4"] < 6.0 < bpw["int8"] < bpw["fp32"]
    sizes = {q: sum(p.stat().st_size for p in (root / q).iterdir()) for q in results}
    assert sizes["int4"] < sizes["fp32"]


@pytest.mark.slow
@pytest.mark.onnx
def test_fp32_matches_transformers_and_drift_orders(tiny_builds, tiny_model):
    import torch
    import transformers

    root, _ = tiny_builds
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    kl: dict[str, list[float]] = {q: [] for q in ("fp32", "int8", "int4")}
    max_diff = 0.0
    for text in PROBES:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1).numpy()
        for q in kl:
            lp = _onnx_logprobs(root / q, ids).astype(np.float64)
            kl[q].append(float((np.exp(ref) * (ref - lp)).sum(-1).mean()))
            if q == "fp32":
                max_diff = max(max_diff, float(np.abs(lp - ref).max()))
    mean = {q: float(np.mean(v)) for q, v in kl.items()}
    print(f"fp32 max |logprob diff| vs transformers: {max_diff:.2e}; mean KL: {mean}")
    assert max_diff < 1e-3
    assert mean["int4"] > mean["int8"] >= mean["fp32"]
    assert mean["int8"] < QUANTIZATIONS["int8"].thresholds.max_mean_kl
    assert mean["int4"] < QUANTIZATIONS["int4"].thresholds.max_mean_kl


@pytest.mark.slow
@pytest.mark.onnx
@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_default_model_builds_load_and_generate(default_model, tmp_path, quantization):
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.backends.onnx_backend import OnnxBackend

    export(default_model, tmp_path / quantization, quantization)
    be = OnnxBackend(tmp_path / quantization, verify=False)  # the exporter's raw output: no manifest yet
    be.load()
    try:
        events = list(be.stream(GenerationRequest.from_text("What is the main symptom of malaria?",
                                                             max_new_tokens=16)))
    finally:
        be.close()
    text = "".join(e.text for e in events)
    assert events[0].prompt_tokens and events[-1].finish_reason in ("stop", "length")
    assert any(ch.isalpha() for ch in text), text
