"""The GPTQ backend: GPTQ builds through transformers + optimum + GPTQModel's kernels.

GPTQ is served on CUDA in this project (device="cuda"); CPU works through GPTQModel's torch
kernel (tested on the tiny model) but is slow, so it is for tests and checks rather than for
clinics (they get GGUF or ONNX builds). Everything after loading (chat template, streaming,
prefix-reusing batched scoring, logprobs, memory) is the transformers backend's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from globmed_edge.backends.base import Backend, Capabilities
from globmed_edge.backends.common import verify_build
from globmed_edge.backends.transformers_backend import TransformersBackend, model_eos_ids
from globmed_edge.deps import require, require_transformers
from globmed_edge.errors import BackendError, ModelError
from globmed_edge.paths import force_offline


class GPTQBackend(TransformersBackend):
    name: ClassVar[str] = "gptq"
    capabilities: ClassVar[Capabilities] = Capabilities(devices=("cuda", "cpu"))

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None,
                 dtype: str | None = None, **kwargs: Any) -> None:
        super().__init__(path, device=device, threads=threads, dtype=dtype, **kwargs)
        self.manifest: Any = None
        self.quantize_config: dict[str, Any] = {}

    def load(self) -> None:
        force_offline()
        self.verification = verify_build(self.path, "gptq", verify=self.verify)
        self.manifest = self.verification.manifest
        self.quantize_config = read_quantize_config(self.path)
        torch = require("torch", "torch")
        transformers = require_transformers()
        require("gptqmodel", "gptq")
        require("optimum", "gptq")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device {self.device!r} requested but CUDA is not available here")
        if self.threads:
            torch.set_num_threads(self.threads)
        # GPTQ kernels compute in half precision: fp16 on CUDA (the Marlin/exllama kernels'
        # type), bf16 on CPU (GPTQModel's torch kernel); fp32 is not a GPTQ compute type.
        dtype = getattr(torch, self.dtype_name) if self.dtype_name else (
            torch.float16 if self.device.startswith("cuda") else torch.bfloat16)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                self.path, dtype=dtype, device_map=self.device)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: cannot load GPTQ build ({str(exc).splitlines()[0][:200]})") from None
        self.model.eval()
        self._eos_ids = model_eos_ids(self.model, self.tokenizer)


def read_quantize_config(path: Path) -> dict[str, Any]:
    """The build's GPTQ settings (quantize_config.json, or config.json's quantization_config)."""
    for name, key in (("quantize_config.json", None), ("config.json", "quantization_config")):
        f = path / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelError(f"{f}: invalid JSON ({exc})") from None
        cfg = data.get(key) if key else data
        if isinstance(cfg, dict) and str(cfg.get("quant_method", cfg.get("method", ""))).lower() == "gptq":
            return cfg
    raise ModelError(f"{path}: not a GPTQ build (no GPTQ quantize_config.json or quantization_config)")


if TYPE_CHECKING:  # mypy checks the class against the protocol, structurally
    _: type[Backend] = GPTQBackend
