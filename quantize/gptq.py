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

ALLOW_CPU_ENV = "GLOBMED_GPTQ_ALLOW_CPU"
OPTIONS = ("group_size", "desc_act", "sym", "damp_percent", "batch_size", "allow_cpu",
           "max_calibration_texts")
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


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class GPTQExporter:
    format: ClassVar[str] = "gptq"
    quantizations: ClassVar[dict[str, QuantSpec]] = QUANTIZATIONS

    def check_available(self, options: Mapping[str, Any] | None = None) -> None:
        import importlib.util

        for module, extra in (("torch", "torch"), ("transformers", "torch"), ("gptqmodel", "gptq"),
                              ("optimum", "gptq")):
            if importlib.util.find_spec(module) is None:
                raise DependencyError(module, extra)
        import torch

        allow = _truthy(os.environ.get(ALLOW_CPU_ENV, "")) or _truthy((options or {}).get("allow_cpu", False))
        if not torch.cuda.is_available() and not allow:
            raise NotAvailableError(
                "GPTQ export needs a CUDA GPU (torch sees none here); GPTQ is a CUDA format, so build "
                f"gguf/onnx for CPUs, or opt in to a slow CPU export with {ALLOW_CPU_ENV}=1")

    def quantize_config(self, request: ExportRequest) -> dict[str, Any]:
        """Validated GPTQModel QuantizeConfig arguments for this request (no side effects)."""
        if request.quantization not in QUANTIZATIONS:
            raise ConfigError(f"unknown GPTQ quantization {request.quantization!r} "
                              f"(known: {', '.join(QUANTIZATIONS)})")
        opts = dict(request.options)
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown GPTQ option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
        try:
            group = int(opts.get("group_size", 128))
            damp = float(opts.get("damp_percent", 0.05))
        except (TypeError, ValueError):
            raise ConfigError("GPTQ group_size must be an integer and damp_percent a number") from None
        if group not in GROUP_SIZES:
            raise ConfigError(f"GPTQ group_size {group} is not one of {', '.join(map(str, GROUP_SIZES))}")
        if not 0 < damp < 1:
            raise ConfigError(f"GPTQ damp_percent {damp} must be between 0 and 1")
        return {"bits": int(request.quantization.removesuffix("bit")), "group_size": group,
                "desc_act": _truthy(opts.get("desc_act", False)), "sym": _truthy(opts.get("sym", True)),
                "damp_percent": damp}

    def calibration_texts(self, request: ExportRequest) -> list[str]:
        if request.calibration is None or not request.calibration.texts:
            raise ConfigError("GPTQ needs calibration texts (the multilingual medical calibration set)")
        limit = int(request.options.get("max_calibration_texts", 512))
        texts = [t for t in request.calibration.texts if t.strip()][:limit]
        if not texts:
            raise ConfigError(f"calibration set {request.calibration.source}: every text is empty")
        return texts

    def export(self, request: ExportRequest) -> ExportResult:
        self.check_available(request.options)
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
            model.quantize(texts, batch_size=int(request.options.get("batch_size", 1)))
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
