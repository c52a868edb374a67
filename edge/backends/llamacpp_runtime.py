"""The one place that imports llama-cpp-python, loads its CPU kernels and decides how models load.

Two facts about llama.cpp on the machines this project meets are handled here and nowhere else:

* **Portable builds load their CPU kernels at run time.** The wheel `scripts/llama-cpp-wheel.sh`
  builds (the README's install) is compiled with `GGML_NATIVE=OFF GGML_BACKEND_DL=ON
  GGML_CPU_ALL_VARIANTS=ON`: one `libggml-cpu-<variant>.so` per instruction-set level (x64, sse42,
  sandybridge, haswell, skylakex, icelake, zen4, sapphirerapids, ...). llama.cpp picks the best one
  for this CPU in `ggml_backend_load_all_from_path`, which llama-cpp-python never calls (its models
  then fail with "no backends are loaded"), so `load()` calls it through ctypes once per process.
  A wheel compiled with native flags (one `libggml-cpu.so`) needs no loading, but runs only on CPUs
  like the one that built it; `runtime_info()` says which kind is installed.
* **AMX crashes.** On CPUs with Intel AMX, llama.cpp repacks weights into AMX buffers at load and
  then segfaults on the first decode (ggml-org/llama.cpp issue 20824). Only one portable variant is
  compiled with AMX (`sapphirerapids`, `AMX_VARIANTS`), so on such CPUs `load()` loads the best
  variant without it (zen4's AVX-512 kernels on a Sapphire Rapids Xeon) and models keep their extra
  buffer types, whose CPU_REPACK layouts of Q4_0 / Q4_K / IQ4_NL / Q8_0 weights decode faster. Where
  the loaded kernels do include AMX (a native build compiled on such a CPU, or the AMX variant asked
  for by name) the extra buffer types are switched off instead (`use_extra_bufts = False`);
  `Llama()` has no keyword for that field of `llama_model_params`, so `new_llama()` sets it while
  constructing. lab/perf/llamacpp_extra_bufts.py measures the settings; docs/backends.md has the
  numbers.
* **Asking for one variant.** `$GLOBMED_EDGE_LLAMA_KERNELS=<variant>` (for example `haswell`) loads
  that variant instead of the best one: to reproduce what an older laptop runs, or to step around a
  variant that misbehaves. A name the wheel does not ship, or one this CPU cannot run, is an error.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from globmed_edge.cpu import CpuInfo, cpu_info
from globmed_edge.deps import require
from globmed_edge.errors import BackendError

_lock = threading.Lock()
_ready: ModuleType | None = None
recent_errors: deque[str] = deque(maxlen=8)  # llama.cpp's error lines, for messages (cleared by loads)
_log_callback: Any = None  # kept referenced: llama.cpp holds a raw pointer to it
log = logging.getLogger("globmed_edge.backends.llamacpp_backend")
_SUFFIX = ".dll" if sys.platform == "win32" else (".dylib" if sys.platform == "darwin" else ".so")
#: Portable CPU variants compiled with AMX_TILE/AMX_INT8 (llama.cpp's ggml/src/CMakeLists.txt,
#: GGML_CPU_ALL_VARIANTS): the ones whose AMX repack crashes (issue 20824).
AMX_VARIANTS = frozenset({"sapphirerapids"})
KERNELS_ENV = "GLOBMED_EDGE_LLAMA_KERNELS"


@dataclass(frozen=True)
class RuntimeInfo:
    """What llama.cpp runtime this process has, for `doctor` and bench hardware profiles."""

    version: str
    kind: str  # "portable" (CPU kernels picked at run time), "native" (compiled for one CPU kind)
    variants: tuple[str, ...]  # the CPU kernel variants shipped (portable builds)
    loaded_variant: str | None  # the variant this process loaded ("haswell", "zen4", ...)
    system_info: str  # llama_print_system_info(): the instruction sets the loaded kernels use
    extra_bufts: bool  # whether models load with extra (repacking) buffer types here
    gpu_offload: bool

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "kind": self.kind, "variants": list(self.variants),
                "loaded_variant": self.loaded_variant, "system_info": self.system_info,
                "extra_bufts": self.extra_bufts, "gpu_offload": self.gpu_offload}


def lib_dir(module: ModuleType) -> Path:
    return Path(module.__file__ or ".").parent / "lib"


def cpu_variants(lib: Path) -> tuple[str, ...]:
    """The CPU kernel variants of a portable build in `lib` (empty for a native build)."""
    prefix = "libggml-cpu-"
    return tuple(sorted(p.name[len(prefix):-len(_SUFFIX)] for p in lib.glob(f"{prefix}*{_SUFFIX}")))


def _mapped(prefix: str) -> Path | None:
    """The file this process mapped whose name starts with `prefix` (Linux /proc/self/maps)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                path = line.split(None, 5)[-1].strip() if line.count(" ") >= 5 else ""
                if path.startswith("/") and Path(path).name.startswith(prefix):
                    return Path(path)
    except OSError:
        pass
    return None


def _libggml(lib: Path) -> Any:
    # The copy of libggml that libllama loaded: wheels hold no symlinks, so libggml.so,
    # libggml.so.0 and libggml.so.0.x are separate files, and opening another one than libllama's
    # would register the CPU kernels in a second, unused backend registry.
    path = _mapped(f"libggml{_SUFFIX}") or next(iter(sorted(lib.glob(f"libggml{_SUFFIX}.*"))), lib / f"libggml{_SUFFIX}")
    ggml = ctypes.CDLL(str(path))
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load_all_from_path.restype = None
    ggml.ggml_backend_reg_count.argtypes = []
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    return ggml


def variant_file(lib: Path, variant: str) -> Path:
    return lib / f"libggml-cpu-{variant}{_SUFFIX}"


def variant_score(path: Path) -> int:
    """llama.cpp's own score of one CPU variant library for this CPU (0: it cannot run here).

    The same question `ggml_backend_load_all_from_path` asks each variant: opened, asked, closed;
    0 for a file that does not open or has no score.
    """
    import _ctypes

    try:
        handle = ctypes.CDLL(str(path))
    except OSError:  # unreadable, or a dependency missing: llama.cpp would skip it too
        return 0
    try:
        score = handle.ggml_backend_score
        score.argtypes, score.restype = [], ctypes.c_int
        return int(score())
    except AttributeError:
        return 0
    finally:
        _ctypes.dlclose(handle._handle)


def choose_variant(variants: Sequence[str], cpu: CpuInfo, requested: str | None,
                   score: Callable[[str], int]) -> str | None:
    """The CPU variant to load by name, or None to let llama.cpp load its best.

    `requested` ($GLOBMED_EDGE_LLAMA_KERNELS) wins; on an AMX CPU the best-scoring variant without
    AMX is chosen (the AMX repack crashes); otherwise llama.cpp's choice stands.
    """
    if requested:
        if requested not in variants:
            raise BackendError(f"{KERNELS_ENV}={requested}: this llama.cpp build has no such CPU variant "
                               f"(it has: {', '.join(variants) or 'none, it is a native build'})")
        return requested
    if not variants or not cpu.has_amx or not AMX_VARIANTS & set(variants):
        return None
    scored = [(score(v), v) for v in variants if v not in AMX_VARIANTS]
    runnable = [(s, v) for s, v in scored if s > 0]
    return max(runnable)[1] if runnable else None


def _route_logs(module: ModuleType) -> None:
    """Send llama.cpp's (and ggml's) log output to the backend's logger at DEBUG, not stderr."""
    global _log_callback

    @module.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        line = (text or b"").decode("utf-8", "replace").strip()
        if line:
            if level == 4:  # GGML_LOG_LEVEL_ERROR (0 none, 1 debug, 2 info, 3 warn, 5 continued)
                recent_errors.append(line)
            log.debug("llama.cpp: %s", line)

    _log_callback = callback
    module.llama_log_set(callback, ctypes.c_void_p(0))


def load() -> ModuleType:
    """llama_cpp, with its CPU kernels loaded (portable builds); once per process."""
    global _ready
    if _ready is not None:
        return _ready
    with _lock:
        if _ready is not None:
            return _ready
        module = require("llama_cpp", "gguf")
        _route_logs(module)  # before the kernels load, so their messages go there too
        lib = lib_dir(module)
        ggml = _libggml(lib)
        if ggml.ggml_backend_reg_count() == 0:  # a build with run-time loaded kernels (GGML_BACKEND_DL)
            variants, cpu = cpu_variants(lib), cpu_info()
            requested = os.environ.get(KERNELS_ENV, "").strip() or None
            chosen = choose_variant(variants, cpu, requested, lambda v: variant_score(variant_file(lib, v)))
            if chosen is None:
                ggml.ggml_backend_load_all_from_path(str(lib).encode())
            elif not ggml.ggml_backend_load(str(variant_file(lib, chosen)).encode()):
                raise BackendError(f"llama.cpp's {chosen} CPU kernels do not run on this CPU ({cpu.model}; "
                                   f"{', '.join(cpu.features) or 'no SIMD features found'})"
                                   + (f"; unset {KERNELS_ENV} or name another of: {', '.join(variants)}"
                                      if requested else ""))
            if ggml.ggml_backend_reg_count() == 0:
                raise BackendError(
                    f"llama.cpp loaded none of its CPU kernels from {lib} on this CPU "
                    f"({cpu_info().model}; {', '.join(cpu_info().features) or 'no SIMD features found'}); "
                    "run `globmed-edge doctor` and reinstall the portable wheel (scripts/llama-cpp-wheel.sh)")
        _ready = module
        return module


def loaded_variant() -> str | None:
    """The `libggml-cpu-<variant>` this process mapped (Linux /proc/self/maps), if any."""
    path = _mapped("libggml-cpu-")
    return path.name[len("libggml-cpu-"):-len(_SUFFIX)] if path and path.name.endswith(_SUFFIX) else None


def use_extra_bufts(cpu: CpuInfo, kernels: str | None) -> bool:
    """Whether models load with llama.cpp's extra buffer types: not where AMX kernels are loaded.

    `kernels`: the portable variant this process loaded, or None for a native build (compiled for
    the CPU that built it, so with AMX on an AMX CPU).
    """
    return not (cpu.has_amx and (kernels is None or kernels in AMX_VARIANTS))


def loaded_kernels() -> str | None:
    """The portable variant this process loaded (None for a native build); loads llama.cpp first."""
    module = load()
    return loaded_variant() if cpu_variants(lib_dir(module)) else None


def model_overrides() -> dict[str, Any]:
    """Fields of `llama_model_params` this project sets for every model it loads, for this CPU and
    the kernels this process loaded."""
    return {"use_extra_bufts": use_extra_bufts(cpu_info(), loaded_kernels())}


def new_llama(*, overrides: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """`llama_cpp.Llama(**kwargs)` with `model_overrides()` applied (or `overrides` when given).

    Every place that creates a llama.cpp model goes through here (the backend, the GGUF tests
    and the perf scripts), so the AMX rule cannot be forgotten at one of them.
    """
    module = load()
    fields = model_overrides() if overrides is None else overrides
    import llama_cpp.llama as llama_module  # Llama.__init__ reads the params from this namespace

    low = llama_module.llama_cpp
    with _lock:
        original = low.llama_model_default_params

        def default_params() -> Any:
            params = original()
            for key, value in fields.items():
                setattr(params, key, value)
            return params

        low.llama_model_default_params = default_params
        try:
            llm = module.Llama(**kwargs)
        finally:
            low.llama_model_default_params = original
    for key, value in fields.items():
        if getattr(llm.model_params, key) != value:  # a llama-cpp-python that builds params elsewhere
            raise BackendError(f"llama-cpp-python {version()} ignored model parameter {key}={value}")
    return llm


def version() -> str:
    import importlib.metadata as md

    try:
        return md.version("llama-cpp-python")
    except md.PackageNotFoundError:
        return "not installed"


#: The llama-cpp-python whose private state `llamacpp_context.LlamaContext` drives (pyproject.toml
#: pins the same; tests/test_backend_seam.py holds the two together).
PINNED_VERSION = "0.3.36"


def check_version() -> None:
    """Refuse a llama-cpp-python other than the pinned one: the backend decodes through its
    internals (`_ctx`, `_batch`, `input_ids`, `n_tokens`), which change between versions."""
    found = version()
    if found != PINNED_VERSION:
        raise BackendError(f"llama-cpp-python {found} is installed; the llamacpp backend needs "
                           f"{PINNED_VERSION} (it drives that version's KV cache directly): install "
                           f"llama-cpp-python=={PINNED_VERSION} (scripts/llama-cpp-wheel.sh builds it)")


def runtime_info() -> RuntimeInfo:
    """The installed runtime, with its kernels loaded (so the loaded variant is known)."""
    module = load()
    variants = cpu_variants(lib_dir(module))
    kernels = loaded_variant() if variants else None
    info = module.llama_print_system_info()
    return RuntimeInfo(
        version=version(), kind="portable" if variants else "native", variants=variants, loaded_variant=kernels,
        system_info=(info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)).strip(),
        extra_bufts=use_extra_bufts(cpu_info(), kernels), gpu_offload=bool(module.llama_supports_gpu_offload()))
