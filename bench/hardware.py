"""The hardware profile stored with throughput records (no torch import: llama.cpp children use it)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from typing import Any

LIBRARIES = ("globmed-edge", "torch", "transformers", "llama-cpp-python", "onnxruntime",
             "onnxruntime-genai", "gptqmodel", "numpy")


def gpus() -> list[dict[str, str]]:
    """GPUs from nvidia-smi when it is there (name, memory, driver); empty otherwise."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return rows


def versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def llama_runtime() -> dict[str, Any] | None:
    """The llama.cpp runtime this process loaded (portable/native, CPU kernel variant), if any."""
    import sys

    if "llama_cpp" not in sys.modules:
        return None
    from globmed_edge.backends.llamacpp_runtime import runtime_info

    return runtime_info().as_dict()


def profile() -> dict[str, Any]:
    import psutil

    from globmed_edge.cpu import cpu_info

    cpu = cpu_info()
    return {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu": cpu.model,
        "cpu_features": list(cpu.features),
        "x86_64_level": cpu.x86_level,
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": psutil.virtual_memory().total,
        "gpus": gpus(),
        "libraries": versions(),
        "llama_cpp_runtime": llama_runtime(),
    }
