import json

import pytest

from globmed_edge.atomic import atomic_dir
from globmed_edge.errors import ManifestError
from globmed_edge.manifest import (
    Manifest,
    find_builds,
    hash_build_files,
    load_manifest,
    require_valid_build,
    verify_build,
    write_manifest,
)


def make_build(root, name="b"):
    with atomic_dir(root / name) as tmp:
        (tmp / "model.bin").write_bytes(b"weights" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "tok.json").write_text("{}", encoding="utf-8")
        write_manifest(tmp, Manifest(name=name, format="gguf", quantization="q8_0", bits_per_weight=8.5,
                                     files=hash_build_files(tmp), source={"path": "x", "sha256": "0" * 64}))
    return root / name


def test_round_trip_and_verify(tmp_path):
    b = make_build(tmp_path)
    m = load_manifest(b)
    assert m.format == "gguf" and [f.path for f in m.files] == ["model.bin", "sub/tok.json"]
    assert m.size_bytes == 702
    assert verify_build(b)[1] == []
    assert find_builds([tmp_path]) == [b]


def test_tampered_missing_and_extra_files(tmp_path):
    b = make_build(tmp_path)
    data = bytearray((b / "model.bin").read_bytes())
    data[0] ^= 1
    (b / "model.bin").write_bytes(bytes(data))
    (b / "sub" / "tok.json").unlink()
    (b / "stray.txt").write_text("x")
    problems = [str(p) for p in verify_build(b)[1]]
    assert problems == ["model.bin: sha256 differs from the manifest (file modified or corrupted)",
                        "sub/tok.json: missing", "stray.txt: not listed in the manifest"]
    with pytest.raises(ManifestError, match="do not match manifest.json"):
        require_valid_build(b)


def test_invalid_manifests(tmp_path):
    b = make_build(tmp_path)
    data = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**data, "colour": "red"}))
    with pytest.raises(ManifestError, match="unknown key"):
        load_manifest(b)
    (b / "manifest.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(ManifestError, match="schema_version 99"):
        load_manifest(b)
    (b / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="invalid JSON"):
        load_manifest(b)
    (b / "manifest.json").unlink()
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(b)


def test_interrupted_build_is_invisible(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "half") as tmp:
        (tmp / "model.bin").write_bytes(b"partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    assert find_builds([tmp_path]) == []


def test_replacing_keeps_old_until_success(tmp_path):
    b = make_build(tmp_path)
    with pytest.raises(RuntimeError), atomic_dir(b) as tmp:
        (tmp / "x").write_text("new")
        raise RuntimeError("boom")
    assert verify_build(b)[1] == []  # old build untouched
    make_build(tmp_path)  # a successful rebuild replaces it
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
