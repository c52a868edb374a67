"""`globmed-edge doctor`: can this machine run the builds on it, and if not, why.

It reports the CPU (model, instruction sets, AMX), cores, memory, free disk under the data home,
each runtime's version and how it was built (llama.cpp: portable or native, the CPU kernel
variant it loaded, `llama_print_system_info`; onnxruntime: its providers), and, for every build
on this machine, whether its files match its manifest and a one-token canary generation. Every
native probe and canary runs in a child process (backends/isolated.py), so a runtime that dies
with SIGILL or SIGSEGV is reported as "crashed" with its signal instead of taking doctor with it.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Free disk under the data home below which doctor warns (a build and its temporary copy).
LOW_DISK_BYTES = 2 * 1024**3
CANARY_TIMEOUT_S = 180.0


@dataclass
class BuildCheck:
    name: str
    path: str
    format: str
    verified: str  # "ok" or the reason the files do not match the manifest
    canary: str  # "pass", "fail", "crashed", "skipped"
    detail: str = ""
    seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.verified == "ok" and self.canary in ("pass", "skipped")


@dataclass
class Report:
    cpu: dict[str, Any]
    memory: dict[str, Any]
    disk: dict[str, Any]
    python: str
    runtimes: dict[str, dict[str, Any]]
    builds: list[BuildCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what a user needs that is broken: exit 1
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = not self.problems
        return d


def cpu_section() -> dict[str, Any]:
    import psutil

    from globmed_edge.cpu import cpu_info

    cpu = cpu_info()
    return {"model": cpu.model, "machine": cpu.machine, "features": list(cpu.features),
            "x86_64_level": cpu.x86_level, "amx": cpu.has_amx,
            "cores_logical": psutil.cpu_count(logical=True), "cores_physical": psutil.cpu_count(logical=False),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}


def llama_probe() -> dict[str, Any]:
    """In a child process: load llama.cpp's kernels and describe them."""
    from globmed_edge.backends.llamacpp_runtime import runtime_info

    return runtime_info().as_dict()


def onnx_probe() -> dict[str, Any]:
    """In a child process: onnxruntime's version and execution providers."""
    import onnxruntime

    return {"version": onnxruntime.__version__, "providers": list(onnxruntime.get_available_providers())}


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def runtime_section(report: Report) -> dict[str, dict[str, Any]]:
    from globmed_edge.backends.isolated import RuntimeCrash, run_isolated
    from globmed_edge.errors import GlobmedError

    out: dict[str, dict[str, Any]] = {}
    for name, module, probe in (("llama.cpp", "llama_cpp", llama_probe), ("onnxruntime", "onnxruntime", onnx_probe)):
        if importlib.util.find_spec(module) is None:
            out[name] = {"status": "not installed"}
            continue
        try:
            out[name] = {"status": "ok", **run_isolated(probe, runtime=name, what="its probe", timeout=120)}
        except GlobmedError as exc:
            out[name] = {"status": "crashed" if isinstance(exc, RuntimeCrash) else "failed", "error": str(exc)}
            report.problems.append(f"{name}: {exc}")
    llama = out["llama.cpp"]
    if llama.get("kind") == "native":
        report.warnings.append(
            "llama.cpp: this llama-cpp-python was compiled for this machine's CPU (native build): do not "
            "copy it to another computer, it may die there with SIGILL; install the portable wheel "
            "(scripts/llama-cpp-wheel.sh) to make bundles")
    torch = _version("torch")
    out["torch"] = {"status": "ok" if torch else "not installed", **({"version": torch} if torch else {})}
    return out


def canary(path: Path, fmt: str) -> tuple[str, str, float]:
    """(status, detail, seconds) of a one-token greedy generation from `path` in a child process."""
    from globmed_edge.backends import FORMAT_BACKEND, open_backend
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.backends.isolated import RuntimeCrash
    from globmed_edge.errors import GlobmedError

    start = time.perf_counter()
    backend = open_backend(path, FORMAT_BACKEND[fmt], isolate=True)
    try:
        backend.load()
        events = list(backend.stream(GenerationRequest.from_text("Fever is", max_new_tokens=1)))
        text = "".join(e.text for e in events)
        status, detail = ("pass", f"answered {text!r}") if events else ("fail", "no token came back")
    except RuntimeCrash as exc:
        status, detail = "crashed", str(exc)
    except GlobmedError as exc:
        status, detail = "fail", str(exc)
    finally:
        backend.close()
    return status, detail, round(time.perf_counter() - start, 2)


def build_section(report: Report, builds: list[Path] | None, run_canary: bool) -> list[BuildCheck]:
    from globmed_edge.backends import FORMAT_BACKEND
    from globmed_edge.errors import ModelError
    from globmed_edge.manifest import find_builds, verify_build
    from globmed_edge.paths import builds_dir
    from globmed_edge.textsafe import clean_line

    checks = []
    for path in builds if builds is not None else find_builds([builds_dir()]):
        try:
            manifest, problems = verify_build(path)
        except ModelError as exc:
            checks.append(BuildCheck(path.name, str(path), "?", clean_line(exc), "skipped"))
            report.problems.append(f"{path.name}: {clean_line(exc)}")
            continue
        verified = "ok" if not problems else clean_line("; ".join(str(p) for p in problems[:2]))
        check = BuildCheck(clean_line(manifest.name), str(path), manifest.format, verified, "skipped")
        if verified == "ok" and run_canary and manifest.format in FORMAT_BACKEND:
            check.canary, check.detail, check.seconds = canary(path, manifest.format)
        if not check.ok:
            report.problems.append(f"{check.name}: {check.detail or verified}")
        checks.append(check)
    return checks


def diagnose(*, builds: list[Path] | None = None, run_canary: bool = True) -> Report:
    """The whole check (takes seconds per build: each canary loads its model in a child)."""
    import psutil

    from globmed_edge.paths import data_home, free_bytes

    home = data_home()
    free = free_bytes(home)
    mem = psutil.virtual_memory()
    report = Report(cpu=cpu_section(), memory={"total_bytes": mem.total, "available_bytes": mem.available},
                    disk={"path": str(home), "free_bytes": free}, python=platform.python_version(),
                    runtimes={})
    if free < LOW_DISK_BYTES:
        report.warnings.append(f"only {free / 1024**3:.1f} GiB free under {home}")
    report.runtimes = runtime_section(report)
    report.builds = build_section(report, builds, run_canary)
    return report
