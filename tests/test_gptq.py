"""GPTQ exporter and backend: argument handling and availability on CPU, a real CPU export of
the tiny model (opt-in path), and CUDA tests that skip where there is no GPU."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from globmed_edge.errors import ConfigError, ManifestError, ModelError, NotAvailableError
from globmed_edge.quantize.base import EXPORTERS, Calibration, ExportRequest
from globmed_edge.quantize.gptq import ALLOW_CPU_ENV, QUANTIZATIONS, GPTQExporter

needs_gptqmodel = pytest.mark.skipif(
    importlib.util.find_spec("gptqmodel") is None or importlib.util.find_spec("optimum") is None,
    reason="needs gptqmodel and optimum (install the [gptq] extra)")

CALIBRATION = Calibration(
    texts=tuple(t * 4 for t in (
        "The patient has had a fever and a dry cough for three days. ",
        "يعاني المريض من الحمى والسعال منذ ثلاثة أيام. ",
        "रोगी को तीन दिन से बुखार और खांसी है। ",
        "ታካሚው ለሶስት ቀናት ትኩሳት እና ሳል አለበት። ",
        "病人发烧咳嗽已经三天了，需要补液。",
        "Le patient a de la fièvre depuis trois jours. ",
    ) * 3),
    sha256="0" * 64, languages=("en", "ar", "hi", "am", "zh", "fr"), source="test probes")


def _request(source: Path, out: Path, q: str = "4bit", calibration: Calibration | None = CALIBRATION,
             **options: object) -> ExportRequest:
    return ExportRequest(source, out, q, calibration, dict(options))


def test_registry_and_specs():
    assert EXPORTERS.load("gptq") is GPTQExporter
    assert set(QUANTIZATIONS) == {"4bit", "8bit"}
    assert all(spec.needs_calibration for spec in QUANTIZATIONS.values())
    assert QUANTIZATIONS["8bit"].thresholds.max_mean_kl < QUANTIZATIONS["4bit"].thresholds.max_mean_kl


def test_quantize_config_arguments(tmp_path):
    ex = GPTQExporter()
    assert ex.quantize_config(_request(tmp_path, tmp_path)) == {
        "bits": 4, "group_size": 128, "desc_act": False, "sym": True, "damp_percent": 0.05}
    got = ex.quantize_config(_request(tmp_path, tmp_path, "8bit", group_size=32, desc_act="true",
                                      damp_percent=0.1))
    assert got["bits"] == 8 and got["group_size"] == 32 and got["desc_act"] is True
    assert ex.quantize_config(_request(tmp_path, tmp_path, group_size=-1))["group_size"] == -1


@pytest.mark.parametrize("q, options, match", [
    ("3bit", {}, "unknown GPTQ quantization"),
    ("4bit", {"groupsize": 64}, "unknown GPTQ option"),
    ("4bit", {"group_size": 100}, "group_size 100"),
    ("4bit", {"group_size": "big"}, "must be an integer"),
    ("4bit", {"damp_percent": 2}, "damp_percent 2"),
])
def test_bad_arguments(tmp_path, q, options, match):
    with pytest.raises(ConfigError, match=match):
        GPTQExporter().quantize_config(_request(tmp_path, tmp_path, q, **options))


def test_calibration_wiring(tmp_path):
    ex = GPTQExporter()
    with pytest.raises(ConfigError, match="needs calibration texts"):
        ex.calibration_texts(_request(tmp_path, tmp_path, calibration=None))
    texts = ex.calibration_texts(_request(tmp_path, tmp_path, max_calibration_texts=4))
    assert texts == list(CALIBRATION.texts[:4])
    empty = Calibration(("  ", ""), "0" * 64, ("en",), "blank.jsonl")
    with pytest.raises(ConfigError, match="blank.jsonl"):
        ex.calibration_texts(_request(tmp_path, tmp_path, calibration=empty))


@needs_gptqmodel
def test_unavailable_without_cuda_says_so(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    ex = GPTQExporter()
    with pytest.raises(NotAvailableError, match="GPTQ export needs a CUDA GPU") as info:
        ex.check_available()
    assert ALLOW_CPU_ENV in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(NotAvailableError):  # export checks before touching anything
        ex.export(_request(tmp_path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    ex.check_available({"allow_cpu": True})
    monkeypatch.setenv(ALLOW_CPU_ENV, "1")
    ex.check_available()


def test_backend_refuses_non_gptq_folder(tiny_model):
    from globmed_edge.backends.gptq_backend import GPTQBackend

    with pytest.raises(ModelError, match="not a GPTQ build"):
        GPTQBackend(tiny_model).load()


@pytest.fixture(scope="module")
def cpu_gptq_build(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("gptq") / "4bit"
    out.mkdir()
    result = GPTQExporter().export(_request(tiny_model, out, "4bit", group_size=64, allow_cpu=True))
    return out, result


@pytest.mark.slow
@needs_gptqmodel
def test_cpu_export_and_backend(cpu_gptq_build, tiny_model, tmp_path):
    """The opt-in CPU path for real: quantize the tiny model, load it, compare with the source."""
    from globmed_edge.backends import open_backend
    from globmed_edge.backends.base import GenerationRequest, ScoreRequest
    from globmed_edge.backends.gptq_backend import GPTQBackend
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest

    out, result = cpu_gptq_build
    assert result.extra["device"] == "cpu" and result.extra["bits"] == 4
    assert result.extra["calibration_texts"] == len(CALIBRATION.texts)
    assert result.stop_tokens == ["<|im_end|>"] and result.tools["gptqmodel"]
    # The tiny model's bf16 embedding dominates its weights; the layers are ~4.5 bits.
    assert result.bits_per_weight is not None and 4.0 < result.bits_per_weight < 16.0
    assert not (out / ".gptq-offload").exists()
    build = tmp_path / "build"
    shutil.copytree(out, build)
    write_manifest(build, Manifest(name="b", format="gptq", quantization="4bit", bits_per_weight=4.0,
                                   files=hash_build_files(build), source={"path": str(tiny_model)}))
    be = GPTQBackend(build)
    ref = open_backend(tiny_model)
    be.load()
    ref.load()
    try:
        assert be.quantize_config["bits"] == 4 and be.quantize_config["group_size"] == 64
        ids = ref.tokenize("The patient has a fever. يعاني المريض من الحمى", add_special=True)
        a, b = ref.logprobs(ids).astype(np.float64), be.logprobs(ids).astype(np.float64)
        kl = float((np.exp(a) * (a - b)).sum(-1).mean())
        assert 0 < kl < QUANTIZATIONS["4bit"].thresholds.max_mean_kl
        events = list(be.stream(GenerationRequest.from_text("Fever?", max_new_tokens=4)))
        assert events[-1].finish_reason in ("stop", "length")
        scores = be.score([ScoreRequest("Question: fever?", " yes"), ScoreRequest("Question: fever?", " no")])
        assert all(np.isfinite(s.logprob) for s in scores)
    finally:
        be.close()
        ref.close()
    (build / "quantize_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ManifestError, match="quantize_config.json"):
        GPTQBackend(build).load()


@pytest.mark.gpu
@needs_gptqmodel
@pytest.mark.parametrize("q", ["4bit", "8bit"])
def test_cuda_export_and_backend(tiny_model, tmp_path, q):
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.backends.gptq_backend import GPTQBackend

    out = tmp_path / q
    out.mkdir()
    result = GPTQExporter().export(_request(tiny_model, out, q, group_size=64))
    assert result.extra["device"] == "cuda"
    be = GPTQBackend(out, device="cuda", verify=False)  # the exporter's raw output: no manifest yet
    be.load()
    try:
        events = list(be.stream(GenerationRequest.from_text("Fever?", max_new_tokens=4)))
        assert events and be.memory().cuda_allocated_bytes
    finally:
        be.close()
