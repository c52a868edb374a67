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
