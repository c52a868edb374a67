"""`globmed-edge quantize`: help from the registry, usage errors, exit codes, the table and --json."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from globmed_edge.cli.main import cli
from globmed_edge.quantize.base import EXPORTERS


def invoke(*args: str):
    return CliRunner().invoke(cli, ["quantize", *args])


def test_help_lists_every_format_and_quantization():
    result = invoke("--help")
    assert result.exit_code == 0
    text = "".join(result.output.split())  # undo click's wrapping (it also breaks at hyphens)
    for fmt in EXPORTERS.names():
        try:
            quantizations = EXPORTERS.load(fmt).quantizations
        except ImportError:
            assert f"{fmt}:*" in text and "notinstalledhere" in text
            continue
        for name, spec in quantizations.items():
            assert f"{fmt}:{name}" in text
            assert "".join(spec.help.split()) in text
    assert "Exitcodes" in text


@pytest.mark.parametrize("spec, message", [
    ("onnx:int44", "unknown onnx quantization 'int44'; did you mean 'int4'?"),
    ("onxx:int4", "unknown format 'onxx'; did you mean 'onnx'?"),
    ("onnx", "give the quantizations too"),
])
def test_usage_errors_are_one_line(tmp_path, spec, message):
    result = invoke(str(tmp_path), "--out", str(tmp_path / "out"), "--format", spec)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_bad_source_is_one_line_exit_1(tmp_path):
    result = invoke(str(tmp_path), "--out", str(tmp_path / "out"), "--format", "onnx:int8")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path}: missing config.json (not a Hugging Face model folder)"
    missing = invoke("no-such-model", "--format", "onnx:int8")
    assert missing.exit_code == 1 and "not an embedded model name" in missing.output


def _gptq_reason_ok(stderr: str) -> bool:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("warning: skipping gptq:4bit: "))
    if importlib.util.find_spec("gptqmodel") is None:
        return "gptqmodel" in line  # not installed here: the warning names the package
    return "CUDA" in line


def test_only_unavailable_formats_exit_3(tiny_model, tmp_path):
    result = invoke(str(tiny_model), "--out", str(tmp_path), "--format", "gptq:4bit")
    assert result.exit_code == 3, result.output
    assert _gptq_reason_ok(result.stderr)
    assert "unavailable" in result.stdout


@pytest.mark.onnx
@pytest.mark.slow
def test_gptq_unavailable_onnx_builds_json_resume_and_force(tiny_model, tmp_path):
    out = tmp_path / "builds"
    result = invoke(str(tiny_model), "--out", str(out), "--format", "gptq:4bit", "--format", "onnx:fp32",
                    "--json")
    assert result.exit_code == 0, result.output
    assert _gptq_reason_ok(result.stderr)
    # stderr is not a terminal here: no progress bar, one line per build and stage (issue #15)
    lines = result.stderr.splitlines()
    assert "[1/2] tiny-qwen3-gptq-4bit" in lines and "[2/2] tiny-qwen3-onnx-fp32" in lines
    stages = [ln.split(": ", 1)[1] for ln in lines if ln.startswith("tiny-qwen3-onnx-fp32: ")]
    assert stages[:4] == ["export", "parity: source model", "parity", "hash"]
    assert stages[4].startswith("done in ") and stages[4].endswith("(parity passed)")
    report = json.loads(result.stdout)
    rows = {b["build"]: b for b in report["builds"]}
    assert rows["tiny-qwen3-gptq-4bit"]["status"] == "unavailable"
    built = rows["tiny-qwen3-onnx-fp32"]
    assert built["status"] == "built" and built["passed"] is True and built["parity"]["tokens_identical"]
    assert Path(built["path"], "manifest.json").is_file() and built["size_bytes"] > 0

    again = invoke(str(tiny_model), "--out", str(out), "--format", "onnx:fp32")
    assert again.exit_code == 0
    header = again.stdout.splitlines()[0].split()
    assert header[:3] == ["build", "size", "bits/w"] and "top-1" in header and "greedy" in header
    assert "pass (up to date)" in again.stdout and "skipped, up to date" in again.stderr

    inode = Path(built["path"], "model.onnx").stat().st_ino
    forced = invoke(str(tiny_model), "--out", str(out), "--format", "onnx:fp32", "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["builds"][0]["status"] == "built"
    assert Path(built["path"], "model.onnx").stat().st_ino != inode, "--force rebuilt and replaced it"
    assert sorted(p.name for p in out.iterdir()) == [".quantize.lock", "tiny-qwen3-onnx-fp32"]
    shutil.rmtree(out)
