"""ONNX builds through onnxruntime-genai's model builder: fp32, fp16, int8 and int4 with KV cache.

Why this exporter: onnxruntime-genai's builder is maintained by the onnxruntime team, works with
transformers 5 (optimum-onnx 0.1.0 still needs transformers < 4.58), writes the fused decoder
graph the runtime is optimised for (GroupQueryAttention with a KV cache, MatMulNBits for int4/int8
weights, GatherBlockQuantized for a tied int4 embedding), and carries the tokenizer and chat
template into the build. It runs as a subprocess so its prints, its torch weights and its
temporary files never touch the calling process; its cache directory lives inside the build's
temporary directory and is removed before the build is hashed.

Precisions (measured with onnxruntime 1.32 / genai 0.18): fp32, int8 and int4 build the fused
GroupQueryAttention graph for the CPU provider. fp16 is a CUDA build: the builder's fp16 graph for
CPU (MultiHeadAttention + fp16 KV cache) runs a single forward pass but fails as soon as a KV cache
is fed, in plain onnxruntime and in onnxruntime-genai alike, and its CUDA graph uses fused
attention inputs the CPU kernels reject (Qwen3 q/k norm). So fp16 builds with the CUDA provider
and is refused where onnxruntime has no CUDA provider to run its parity check.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from globmed_edge.errors import ConfigError, DependencyError, ModelError, NotAvailableError
from globmed_edge.quantize.base import ExportRequest, ExportResult, ParityThresholds, QuantSpec
from globmed_edge.quantize.descriptor import FormatDescriptor, Option
from globmed_edge.quantize.subproc import run_streaming

PROVIDERS = ("cpu", "cuda")
ALGOS = ("default", "rtn", "k_quant", "rtn_last", "k_quant_last")
#: Files of the source folder that the builder does not copy but a build should carry.
CARRY = ("generation_config.json", "special_tokens_map.json", "NOTICE", "LICENSE", "globmed_model.json")

# Measured drift against transformers fp32 (mean KL of the next-token distribution / top-1
# agreement over 182 multilingual probe positions): fp32 ~1e-11 / 100%; fp16 ~3e-7 / 99.5%
# (tiny random model); int8 8.6e-3 / 92.7% on SmolLM2-135M with int8 activations (accuracy_level
# 4, the default: 96 tokens/s on 2 CPU cores) and 2.5e-3 / 97.9% with fp32 compute (accuracy_level
# 1, which onnxruntime 1.32 runs through a slow path: 4.9 tokens/s; lab/perf/onnx_int8_levels.py);
# int4 3.7e-2 /
# 43% on the tiny random model and 0.56 / 47% on SmolLM2-135M (a 135M model with a 49k
# vocabulary whose tied embedding is also int4). Thresholds sit above those with a margin;
# int4 on very small models is lossy and the threshold says so rather than hiding it.
QUANTIZATIONS: dict[str, QuantSpec] = {
    "fp32": QuantSpec("fp32", 32.0, "reference precision; exact parity, largest build, CPU",
                      ParityThresholds(min_top1_agreement=0.99, max_mean_kl=1e-3)),
    "fp16": QuantSpec("fp16", 16.0, "for GPUs (CUDA provider, needs onnxruntime-gpu); not for CPU",
                      ParityThresholds(min_top1_agreement=0.97, max_mean_kl=5e-3)),
    "int8": QuantSpec("int8", 8.0, "int8 weights and activations (MatMulNBits, block 32): half of "
                      "fp16, small loss, fast on CPU laptops",
                      ParityThresholds(min_top1_agreement=0.90, max_mean_kl=3e-2)),
    "int4": QuantSpec("int4", 4.0, "int4 weight-only (MatMulNBits, block 32) incl. the embedding: "
                      "smallest and fastest, lossy on models under ~1B parameters",
                      ParityThresholds(min_top1_agreement=0.40, max_mean_kl=1.0)),
}


_WEIGHT_QUANTS = ("int4", "int8")
DESCRIPTOR = FormatDescriptor(
    format="onnx", title="ONNX", backend="onnx", quantizations=QUANTIZATIONS,
    options=(
        Option("execution_provider", str, None, "the provider the graph is built for; default: cpu, "
               "cuda for fp16", choices=PROVIDERS),
        Option("block_size", int, 32, "MatMulNBits quantization block size", choices=(16, 32, 64, 128, 256),
               quantizations=_WEIGHT_QUANTS),
        # accuracy_level 4 (int8 activations, the builder's CPU default) for both: for int8 it
        # costs top-1 agreement (97.9% -> 92.7% on SmolLM2-135M), but level 1 decoded at 4.9
        # tokens/s against 96 (lab/perf/onnx_int8_levels.py).
        Option("accuracy_level", int, 4, "MatMulNBits compute precision: 4 int8 activations (fast), "
               "1 fp32 (closer, far slower on CPU)", choices=(0, 1, 2, 3, 4), quantizations=_WEIGHT_QUANTS),
        Option("algo", str, None, "the builder's weight quantization algorithm; default: the builder's",
               choices=ALGOS, quantizations=_WEIGHT_QUANTS),
        Option("timeout_s", float, 6 * 3600.0, "seconds the model builder may run", minimum=0,
               exclusive=True, affects_build=False),
    ),
    runtime_packages=("onnxruntime",),
    example="int8,int4",
)


class ONNXExporter:
    descriptor: ClassVar[FormatDescriptor] = DESCRIPTOR
    format: ClassVar[str] = DESCRIPTOR.format
    quantizations: ClassVar[dict[str, QuantSpec]] = QUANTIZATIONS

    def check_available(self, options: Mapping[str, Any] | None = None) -> None:
        import importlib.util

        for module in ("onnxruntime", "onnxruntime_genai", "onnx", "onnx_ir"):
            if importlib.util.find_spec(module) is None:
                raise DependencyError(module, "onnx")
        if importlib.util.find_spec("torch") is None:
            raise DependencyError("torch", "torch")  # the builder reads the HF weights with torch

    def builder_args(self, request: ExportRequest, cache_dir: Path) -> list[str]:
        """The model builder's command line for this request (validated; no side effects)."""
        q = request.quantization
        opts = DESCRIPTOR.resolve(q, request.options)  # unknown quantization or option, bad value
        ep = opts["execution_provider"] or ("cuda" if q == "fp16" else "cpu")
        if q == "fp16" and ep == "cpu":
            # The builder's fp16 CPU graph (MultiHeadAttention + fp16 KV cache) fails in
            # onnxruntime 1.32 as soon as a KV cache is fed ("Shape mismatch attempting to
            # re-use buffer" in an inserted Cast), in plain onnxruntime and in genai alike.
            raise ConfigError("ONNX fp16 is a CUDA build: the fp16 graph for the CPU provider cannot "
                              "decode with a KV cache in onnxruntime 1.32; use fp32 or int8 for CPU")
        extra = []
        if "block_size" in opts:  # the weight-only quantizations (int4, int8)
            extra += [f"block_size={opts['block_size']}", f"accuracy_level={opts['accuracy_level']}"]
            if opts["algo"] is not None:
                extra.append(f"algo_config={opts['algo']}")
        extra.append("hf_token=false")  # never reach for credentials or the network
        return [sys.executable, "-m", "onnxruntime_genai.models.builder",
                "-i", str(request.source), "-o", str(request.out_dir), "-p", q,
                "-e", ep, "-c", str(cache_dir), "--extra_options", *extra]

    def export(self, request: ExportRequest) -> ExportResult:
        self.check_available()
        opts = DESCRIPTOR.resolve(request.quantization, request.options)
        if request.quantization == "fp16" and opts["execution_provider"] in (None, "cuda"):
            import onnxruntime

            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                # The parity check must run the build, and the fp16 graph needs the CUDA provider.
                raise NotAvailableError("ONNX fp16 is a CUDA build and this onnxruntime has no CUDA "
                                        "provider (install the [onnx-gpu] extra on a GPU machine)")
        src = Path(request.source)
        if not (src / "config.json").is_file():
            raise ModelError(f"{src}: not a Hugging Face model folder (no config.json)")
        cache = request.out_dir / ".builder-cache"
        cmd = self.builder_args(request, cache)
        timeout = opts["timeout_s"]
        say = request.progress or (lambda _s: None)
        say(f"onnx {request.quantization}: building with onnxruntime-genai")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}

        def on_line(line: str) -> None:
            if line.startswith(("Reading", "Saving", "Quantiz")):
                say(f"onnx {request.quantization}: {line[:80]}")

        try:  # the helper kills the builder on a timeout, an error or Ctrl-C
            rc, tail = run_streaming(cmd, env=env, timeout=timeout, on_line=on_line, tail=30)
        except subprocess.TimeoutExpired:
            raise ModelError(f"{src}: the onnxruntime-genai model builder did not finish within "
                             f"{timeout:g} s and was stopped (allow longer with --option "
                             "onnx.timeout_s=SECONDS)") from None
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if rc != 0:
            last = next((ln for ln in reversed(tail) if "Error" in ln or "error" in ln), tail[-1] if tail else "")
            raise ModelError(f"{src}: onnxruntime-genai model builder failed ({last[:300]})")
        model = request.out_dir / "model.onnx"
        if not model.is_file() or not (request.out_dir / "genai_config.json").is_file():
            raise ModelError(f"{src}: the model builder wrote no model.onnx/genai_config.json")
        for name in CARRY:
            if (src / name).is_file() and not (request.out_dir / name).exists():
                shutil.copy2(src / name, request.out_dir / name)
        return ExportResult(
            bits_per_weight=measured_bits_per_weight(model),
            tools=tool_versions(),
            stop_tokens=stop_tokens(request.out_dir),
            extra={"exporter": "onnxruntime-genai model builder", "builder_args": cmd[3:],
                   "execution_provider": cmd[cmd.index("-e") + 1]},
        )


def measured_bits_per_weight(model: Path) -> float | None:
    """Stored bits per weight over the weight matrices (initializers with >= 2 dims).

    MatMulNBits and GatherBlockQuantized count their logical K x N weights against the bytes of
    their packed weights, scales and zero points. An embedding tied to the LM head counts once;
    an untied copy (the int8 build keeps an fp32 embedding beside its int8 LM head) counts twice,
    because it is stored twice.
    """
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    inits = {t.name: t for t in m.graph.initializer}
    bits = params = 0
    seen: set[str] = set()

    def take(name: str) -> int:
        if name in inits and name not in seen:
            seen.add(name)
            return _nbytes(inits[name]) * 8
        return 0

    for node in m.graph.node:
        attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
        if node.op_type == "MatMulNBits" and node.input[1] not in seen:
            params += attrs.get("K", 0) * attrs.get("N", 0)
            bits += sum(take(name) for name in node.input[1:])
        elif node.op_type == "GatherBlockQuantized" and node.input[0] in inits:
            data = inits[node.input[0]]
            if node.input[0] not in seen:
                per_byte = 8 // attrs.get("bits", 4) if data.data_type == onnx.TensorProto.UINT8 else 1
                params += _numel(data) * per_byte
                bits += sum(take(name) for name in node.input if name != node.input[1])
    for t in m.graph.initializer:
        if t.name not in seen and len(t.dims) >= 2 and t.name not in ("cos_cache", "sin_cache"):
            bits += _nbytes(t) * 8
            params += _numel(t)
    return round(bits / params, 3) if params else None


def _numel(t: Any) -> int:
    n = 1
    for d in t.dims:
        n *= int(d)
    return n


def _nbytes(t: Any) -> int:
    """Stored bytes of an initializer (external data length, or its inline raw data)."""
    for entry in t.external_data:
        if entry.key == "length":
            return int(entry.value)
    if t.raw_data:
        return len(t.raw_data)
    import onnx

    return _numel(t) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def tool_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "transformers", "torch"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def stop_tokens(build: Path) -> list[str]:
    """The eos token strings of a build (genai_config's eos ids, decoded with its tokenizer)."""
    import json

    cfg = json.loads((build / "genai_config.json").read_text(encoding="utf-8"))["model"]
    eos = cfg.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(build / "tokenizer.json"))
    except (ImportError, OSError, ValueError):
        return []
    return [s for s in (tok.id_to_token(int(i)) for i in ids) if s]
