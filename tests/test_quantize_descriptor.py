"""Format descriptors: every exporter declares its backend, typed options, calibration policy,
runtime packages and example; `quantize --option FMT.KEY=VALUE` sets any declared option; and a
format added here, in one class and one registry line, is driven by the runner and the CLI
without either knowing its name."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from globmed_edge.backends import BACKENDS
from globmed_edge.cli.main import cli
from globmed_edge.errors import ConfigError, UnknownNameError
from globmed_edge.quantize import base
from globmed_edge.quantize.base import (
    EXPORTERS,
    ExportRequest,
    ExportResult,
    ParityThresholds,
    QuantSpec,
)
from globmed_edge.quantize.descriptor import CalibrationPolicy, FormatDescriptor, Option
from globmed_edge.quantize.runner import QuantizeOptions, parse_options, parse_targets, quantize
from globmed_edge.registry import LazyRegistry


def invoke(*args: str):
    return CliRunner().invoke(cli, ["quantize", *args])


# ---------------------------------------------------------------------------- the real formats


@pytest.mark.parametrize("fmt", EXPORTERS.names())
def test_every_exporter_declares_a_descriptor(fmt):
    cls = EXPORTERS.load(fmt)
    desc = cls.descriptor
    assert isinstance(desc, FormatDescriptor) and desc.format == fmt and desc.title
    assert desc.backend in BACKENDS, "its builds are parity-checked through a registered backend"
    assert desc.quantizations is cls.quantizations and desc.quantizations
    assert all(q in desc.quantizations for q in desc.example.split(","))
    assert desc.runtime_packages and isinstance(desc.calibration, CalibrationPolicy)
    assert len({o.name for o in desc.options}) == len(desc.options)
    for opt in desc.options:
        assert opt.help and opt.type in (bool, int, float, str)
        assert opt.default is None or opt.parse(opt.default, title=desc.title) == opt.default
        assert set(opt.quantizations) <= set(desc.quantizations)
    if desc.calibration.option:
        assert desc.option(desc.calibration.option).type is bool


def test_onnx_and_gptq_options_are_declared():
    onnx = EXPORTERS.load("onnx").descriptor
    assert {"execution_provider", "block_size", "accuracy_level", "algo", "timeout_s"} <= {o.name for o in onnx.options}
    assert not onnx.option("timeout_s").affects_build and onnx.option("block_size").affects_build
    gptq = EXPORTERS.load("gptq").descriptor
    assert {"group_size", "desc_act", "sym", "damp_percent", "batch_size", "allow_cpu",
            "max_calibration_texts"} <= {o.name for o in gptq.options}
    assert gptq.calibration.used_for == "gptq"
    gguf = EXPORTERS.load("gguf").descriptor
    assert gguf.calibration.option == "imatrix" and gguf.calibration.applied_key == "imatrix"


def test_gguf_imatrix_budget_default_is_the_imatrix_modules():
    from globmed_edge.quantize.imatrix import DEFAULT_BUDGET

    assert EXPORTERS.load("gguf").descriptor.option("imatrix_budget").default == DEFAULT_BUDGET


def test_option_parsing_from_flag_strings():
    flag = Option("f", bool, False, "a flag")
    assert [flag.parse(v, title="X") for v in ("true", "ON", "1", "no", "False", True)] == \
        [True, True, True, False, False, True]
    with pytest.raises(ConfigError, match="X f 'maybe' must be true or false"):
        flag.parse("maybe", title="X")
    size = Option("size", int, 32, "a size", choices=(16, 32, 64))
    assert size.parse(" 64 ", title="X") == 64 and size.parse(16.0, title="X") == 16
    with pytest.raises(ConfigError, match="X size 48 is not one of 16, 32, 64"):
        size.parse("48", title="X")
    for bad in ("big", "3.5", True, 3.5):
        with pytest.raises(ConfigError, match="must be an integer"):
            size.parse(bad, title="X")
    frac = Option("frac", float, 0.5, "a fraction", minimum=0, maximum=1, exclusive=True)
    assert frac.parse("0.25", title="X") == 0.25
    for bad in ("0", "1", "2"):
        with pytest.raises(ConfigError, match=r"must be between 0 and 1 \(exclusive\)"):
            frac.parse(bad, title="X")
    assert Option("name", str, None, "optional").parse(None, title="X") is None
    assert "one of 16, 32, 64" in size.describe() and "default 32" in size.describe()


def test_resolve_fills_defaults_and_rejects_unknown_or_inapplicable_options():
    onnx = EXPORTERS.load("onnx").descriptor
    got = onnx.resolve("int4", {"block_size": "64"})
    assert got["block_size"] == 64 and got["accuracy_level"] == 4 and got["algo"] is None
    assert "block_size" not in onnx.resolve("fp32", {})
    with pytest.raises(UnknownNameError, match="unknown ONNX option 'blok_size'; did you mean 'block_size'"):
        onnx.resolve("int4", {"blok_size": 64})
    with pytest.raises(ConfigError, match="apply to int4/int8, not fp32"):
        onnx.resolve("fp32", {"algo": "rtn"})
    assert onnx.build_options("int4", {"timeout_s": 5}) == {
        "execution_provider": None, "block_size": 32, "accuracy_level": 4, "algo": None}


def test_parse_options_checks_format_key_value_and_requested_builds():
    targets = parse_targets(["onnx:fp32,int4", "gguf:q8_0"])
    assert parse_options(["onnx.block_size=64", "ONNX.timeout_s = 60", "gguf.imatrix=false"], targets) == {
        "onnx": {"block_size": 64, "timeout_s": 60.0}, "gguf": {"imatrix": False}}
    cases = {
        "onnz.block_size=64": "unknown format 'onnz'; did you mean 'onnx'?",
        "onnx.blok_size=64": "unknown ONNX option 'blok_size'; did you mean 'block_size'?",
        "onnx.block_size=48": "ONNX block_size 48 is not one of 16, 32, 64, 128, 256",
        "onnx.block_size": "write it as FMT.KEY=VALUE",
        "block_size=64": "write it as FMT.KEY=VALUE",
        "gptq.group_size=64": "no gptq build is requested (add --format gptq:4bit)",
    }
    for flag, message in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_options([flag], targets)
        assert message in str(info.value) and str(info.value).startswith(f"--option {flag}")
    with pytest.raises(ConfigError, match="applies to int4/int8, and no such onnx build is requested"):
        parse_options(["onnx.accuracy_level=1"], parse_targets(["onnx:fp32"]))


@pytest.mark.parametrize("flag, message", [
    ("onnx.blok_size=64", "did you mean 'block_size'?"),
    ("gptq.damp_percent=2", "GPTQ damp_percent 2 must be between 0 and 1"),
    ("onnx.algo=best", "ONNX algo 'best' is not one of default, rtn, k_quant, rtn_last, k_quant_last"),
])
def test_cli_option_errors_are_one_line_exit_2(tmp_path, flag, message):
    result = invoke(str(tmp_path), "--out", str(tmp_path / "out"), "--format", "onnx:int4",
                    "--format", "gptq:4bit", "--option", flag)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --option {flag}: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_help_lists_every_declared_option():
    text = "".join(invoke("--help").output.split())
    assert "--optionFMT.KEY=VALUE" in text
    for fmt in EXPORTERS.names():
        for opt in EXPORTERS.load(fmt).descriptor.options:
            assert f"{fmt}.{opt.name}" in text


# ---------------------------------------------------------------------------- a format added in a test


class CopyExporter:
    """A format the code has never seen: the source folder copied as is, plus a stamp file.

    Its builds are HF folders, so the transformers backend runs their parity check (exact).
    """

    descriptor: ClassVar[FormatDescriptor] = FormatDescriptor(
        format="copy", title="COPY", backend="transformers",
        quantizations={"same": QuantSpec("same", None, "the source weights, copied",
                                         ParityThresholds(min_top1_agreement=0.99, max_mean_kl=1e-4))},
        options=(Option("stamp", int, 0, "a number written into the build as stamp.txt", minimum=0),),
        runtime_packages=("safetensors",), example="same",
    )
    calls: ClassVar[list[dict[str, Any]]] = []

    def check_available(self, options: Mapping[str, Any] | None = None) -> None:
        pass

    def export(self, request: ExportRequest) -> ExportResult:
        opts = self.descriptor.resolve(request.quantization, request.options)
        type(self).calls.append(dict(request.options))
        for f in request.source.iterdir():
            if f.is_file() and not f.name.startswith("."):
                shutil.copy2(f, request.out_dir / f.name)
        (request.out_dir / "stamp.txt").write_text(str(opts["stamp"]), encoding="utf-8")
        return ExportResult(bits_per_weight=32.0, tools={"copy": "1"}, stop_tokens=["<|im_end|>"])


@pytest.fixture
def copy_format(monkeypatch):
    """The one registry line (and the manifest's format list, which belongs to the backends)."""
    from globmed_edge import manifest

    entries = {name: EXPORTERS.target(name) for name in EXPORTERS.names()}
    monkeypatch.setattr(base, "EXPORTERS", LazyRegistry("format", {**entries, "copy": f"{__name__}:CopyExporter"}))
    monkeypatch.setattr(manifest, "FORMATS", (*manifest.FORMATS, "copy"))
    CopyExporter.calls.clear()
    return CopyExporter


def test_a_new_format_is_listed_and_its_option_validated_by_the_cli(copy_format, tmp_path):
    text = "".join(invoke("--help").output.split())
    assert "copy:same" in text and "copy.stamp" in text
    result = invoke(str(tmp_path), "--format", "copy:same", "--option", "copy.stmp=3")
    assert result.exit_code == 2 and "unknown COPY option 'stmp'; did you mean 'stamp'?" in result.output
    result = invoke(str(tmp_path), "--format", "copy:same", "--option", "copy.stamp=-1")
    assert result.exit_code == 2 and "COPY stamp -1 must be >= 0" in result.output
    result = invoke(str(tmp_path), "--format", "copy")
    assert result.exit_code == 2 and "e.g. copy:same" in result.output


@pytest.mark.slow
def test_the_runner_drives_a_new_format_through_quantize_option(copy_format, tiny_model, tmp_path):
    from globmed_edge.manifest import load_manifest, verify_build

    out = tmp_path / "builds"
    result = invoke(str(tiny_model), "--out", str(out), "--format", "copy:same", "--option", "copy.stamp=7",
                    "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["builds"]
    assert row["status"] == "built" and row["passed"] is True and row["parity"]["backend"] == "transformers"
    build = Path(row["path"])
    assert build.name == "tiny-qwen3-copy-same" and (build / "stamp.txt").read_text() == "7"
    m, problems = verify_build(build)
    assert problems == [] and m.format == "copy" and m.calibration is None
    assert m.extra["options"] == {"stamp": 7} and m.extra["build_options"] == {"stamp": 7}
    assert "safetensors" in m.tools and m.parity is not None and m.parity["top1_agreement"] == 1.0
    assert copy_format.calls == [{"stamp": 7}], "the run-wide --threads is not a copy option"

    opts = QuantizeOptions(out=out, formats=("copy:same",), options=("copy.stamp=7",), threads=1)
    warnings: list[str] = []
    (same,) = quantize(tiny_model, opts, warn=warnings.append)
    assert same.status == "skipped" and len(copy_format.calls) == 1
    (changed,) = quantize(tiny_model, QuantizeOptions(out=out, formats=("copy:same",), threads=1,
                                                      options=("copy.stamp=8",)), warn=warnings.append)
    assert changed.status == "built" and (build / "stamp.txt").read_text() == "8"
    assert any("different options (stamp 7 -> 8)" in w for w in warnings)
    assert load_manifest(build).extra["build_options"] == {"stamp": 8}
