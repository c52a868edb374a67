"""GPTQ builds (4-bit and 8-bit, group size configurable) through GPTQModel.

GPTQ is a CUDA format in this project: its kernels are fast on GPUs and slow on CPUs, so the
exporter refuses to run where torch sees no CUDA device. GPTQModel 7.6.0 can quantize on CPU
(measured: a tiny 2-layer model in ~30 s, the first run compiling a packing kernel); that path
is opt-in (`allow_cpu=true`, or GLOBMED_GPTQ_ALLOW_CPU=1) for tests and for people who accept
the wait. Calibration uses the request's multilingual medical texts, never a hub dataset.
auto-gptq, the older name, is archived and fails on transformers 5.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from globmed_edge.errors import ConfigError, DependencyError, ModelError, NotAvailableError
from globmed_edge.quantize.base import ExportRequest, ExportResult, ParityThresholds, QuantSpec
from globmed_edge.quantize.descriptor import CalibrationPolicy, FormatDescriptor, Option

ALLOW_CPU_ENV = "GLOBMED_GPTQ_ALLOW_CPU"
GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)

# Thresholds: GPTQ 4-bit (group 64) measured mean KL 6.9e-3 / 70% top-1 agreement on the tiny
# random model run in bf16 on CPU; 8-bit is expected near-lossless. Not yet measured on a
# real model on CUDA (see lab/gpu/README.md), so these are deliberately loose.
QUANTIZATIONS: dict[str, QuantSpec] = {
    "4bit": QuantSpec("4bit", 4.0, "GPTQ 4-bit for CUDA servers: a quarter of fp16, calibrated",
                      ParityThresholds(min_top1_agreement=0.60, max_mean_kl=0.5),
                      needs_calibration=True),
    "8bit": QuantSpec("8bit", 8.0, "GPTQ 8-bit for CUDA servers: half of fp16, near-lossless",
                      ParityThresholds(min_top1_agreement=0.90, max_mean_kl=0.05),
                      needs_calibration=True),
}


DESCRIPTOR = FormatDescriptor(
    format="gptq", title="GPTQ", backend="gptq", quantizations=QUANTIZATIONS,
    options=(
        Option("group_size", int, 128, "weights per quantization group; -1: one group per row",
               choices=GROUP_SIZES),
        Option("desc_act", bool, False, "quantize columns in order of decreasing activation"),
        Option("sym", bool, True, "symmetric quantization"),
        Option("damp_percent", float, 0.05, "Hessian dampening", minimum=0, maximum=1, exclusive=True),
        Option("batch_size", int, 1, "calibration batch size", minimum=1),
        Option("allow_cpu", bool, False, f"export on CPU without CUDA (slow; or {ALLOW_CPU_ENV}=1)",
               affects_build=False),
        Option("max_calibration_texts", int, 512, "calibration texts used at most", minimum=1),
    ),
    calibration=CalibrationPolicy(used_for="gptq"),
    runtime_packages=("gptqmodel", "optimum"),
    example="4bit",
)


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class GPTQExporter:
    descriptor: ClassVar[FormatDescriptor] = DESCRIPTOR
    format: ClassVar[str] = DESCRIPTOR.format
    quantizations: ClassVar[dict[str, QuantSpec]] = QUANTIZATIONS

    def check_available(self, options: Mapping[str, Any] | None = None) -> None:
        import importlib.util

        for module, extra in (("torch", "torch"), ("transformers", "torch"), ("gptqmodel", "gptq"),
                              ("optimum", "gptq")):
            if importlib.util.find_spec(module) is None:
                raise DependencyError(module, extra)
        import torch

        allow = _truthy(os.environ.get(ALLOW_CPU_ENV, "")) or bool(
            DESCRIPTOR.option("allow_cpu").parse((options or {}).get("allow_cpu", False), title="GPTQ"))
        if not torch.cuda.is_available() and not allow:
            raise NotAvailableError(
                "GPTQ export needs a CUDA GPU (torch sees none here); GPTQ is a CUDA format, so build "
                f"gguf/onnx for CPUs, or opt in to a slow CPU export with {ALLOW_CPU_ENV}=1")

    def quantize_config(self, request: ExportRequest) -> dict[str, Any]:
        """Validated GPTQModel QuantizeConfig arguments for this request (no side effects)."""
        opts = DESCRIPTOR.resolve(request.quantization, request.options)  # unknown or bad: ConfigError
        return {"bits": int(request.quantization.removesuffix("bit")), "group_size": opts["group_size"],
                "desc_act": opts["desc_act"], "sym": opts["sym"], "damp_percent": opts["damp_percent"]}

    def calibration_texts(self, request: ExportRequest) -> list[str]:
        if request.calibration is None or not request.calibration.texts:
            raise ConfigError("GPTQ needs calibration texts (the multilingual medical calibration set)")
        limit = DESCRIPTOR.resolve(request.quantization, request.options)["max_calibration_texts"]
        texts = [t for t in request.calibration.texts if t.strip()][:limit]
        if not texts:
            raise ConfigError(f"calibration set {request.calibration.source}: every text is empty")
        return texts

    def export(self, request: ExportRequest) -> ExportResult:
        self.check_available(request.options)
        opts = DESCRIPTOR.resolve(request.quantization, request.options)
        args = self.quantize_config(request)
        texts = self.calibration_texts(request)
        src = Path(request.source)
        if not (src / "config.json").is_file():
            raise ModelError(f"{src}: not a Hugging Face model folder (no config.json)")
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))
        import torch
        from gptqmodel import GPTQModel, QuantizeConfig

        say = request.progress or (lambda _s: None)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        offload = request.out_dir / ".gptq-offload"
        qc = QuantizeConfig(**args, offload_to_disk_path=str(offload))
        t0 = time.perf_counter()
        try:
            say(f"gptq {request.quantization}: loading {src.name} on {device}")
            model = GPTQModel.load(str(src), qc, device=device)
            say(f"gptq {request.quantization}: calibrating on {len(texts)} texts")
            model.quantize(texts, batch_size=opts["batch_size"])
            say(f"gptq {request.quantization}: saving")
            model.save(str(request.out_dir))
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise ModelError(f"{src}: GPTQ quantization failed ({str(exc).splitlines()[0][:300]})") from None
        finally:
            shutil.rmtree(offload, ignore_errors=True)
        return ExportResult(
            bits_per_weight=measured_bits_per_weight(request.out_dir, args["bits"]),
            tools=tool_versions(),
            stop_tokens=stop_tokens(request.out_dir),
            extra={"exporter": "gptqmodel", "device": device, "calibration_texts": len(texts),
                   "quantize_seconds": round(time.perf_counter() - t0, 2), **args},
        )


def measured_bits_per_weight(build: Path, nbits: int) -> float | None:
    """Stored bits per weight over the matrices: a GPTQ layer's qweight/qzeros/scales/g_idx
    against its logical in x out weights, other matrices (embedding, LM head) at their dtype."""
    from safetensors import safe_open

    sizes = {"I32": 4, "F16": 2, "BF16": 2, "F32": 4, "I8": 1, "U8": 1, "I64": 8, "I16": 2}
    shapes: dict[str, tuple[list[int], str]] = {}
    for f in sorted(build.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                sl = fh.get_slice(name)
                shapes[name] = (list(sl.get_shape()), sl.get_dtype())

    def nbytes(name: str) -> int:
        shape, dtype = shapes[name]
        n = 1
        for d in shape:
            n *= d
        return n * sizes.get(dtype, 4)

    bits = params = 0
    used: set[str] = set()
    for name, (shape, _) in shapes.items():
        if name.endswith(".qweight"):
            prefix = name[: -len("qweight")]
            parts = [prefix + p for p in ("qweight", "qzeros", "scales", "g_idx") if prefix + p in shapes]
            used.update(parts)
            scales = shapes.get(prefix + "scales")
            out_features = scales[0][1] if scales else shape[1]
            in_features = shapes[prefix + "g_idx"][0][0] if prefix + "g_idx" in shapes else shape[0] * 32 // nbits
            params += in_features * out_features
            bits += 8 * sum(nbytes(p) for p in parts)
    for name, (shape, _) in shapes.items():
        if name not in used and len(shape) >= 2:
            params += nbytes(name) // sizes.get(shapes[name][1], 4)
            bits += 8 * nbytes(name)
    return round(bits / params, 3) if params else None


def tool_versions() -> dict[str, str]:
    import contextlib
    import importlib.metadata as md

    out = {}
    for dist in ("gptqmodel", "optimum", "transformers", "torch", "safetensors"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def stop_tokens(build: Path) -> list[str]:
    import json

    ids: list[int] = []
    gen = build / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text(encoding="utf-8")).get("eos_token_id")
        ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(build / "tokenizer.json"))
    except (ImportError, OSError, ValueError, Exception):
        return []
    return [s for s in (tok.id_to_token(int(i)) for i in ids) if s]
