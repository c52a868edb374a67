"""What this CPU can do: model name and the instruction-set features native runtimes care about.

Read from /proc/cpuinfo on Linux (no import of any runtime), so `doctor`, bench's hardware
profile and the llama.cpp load policy see the same answer. Elsewhere only the machine type is
known and the feature set is empty.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

#: The features reported, in order, as (name shown, /proc/cpuinfo flag). x86-64 first, then arm64.
FEATURES = (
    ("SSE4.2", "sse4_2"), ("AVX", "avx"), ("F16C", "f16c"), ("FMA", "fma"), ("AVX2", "avx2"),
    ("AVX-VNNI", "avx_vnni"), ("AVX-512F", "avx512f"), ("AVX-512-VNNI", "avx512_vnni"),
    ("AVX-512-BF16", "avx512_bf16"), ("AMX-TILE", "amx_tile"), ("AMX-INT8", "amx_int8"),
    ("NEON", "asimd"), ("DOTPROD", "asimddp"), ("SVE", "sve"), ("I8MM", "i8mm"),
)
CPUINFO = "/proc/cpuinfo"


@dataclass(frozen=True)
class CpuInfo:
    model: str
    machine: str  # platform.machine(): x86_64, aarch64, arm64...
    flags: frozenset[str]  # raw /proc/cpuinfo flags (x86 "flags", arm "Features")

    @property
    def features(self) -> tuple[str, ...]:
        """The FEATURES this CPU has, by their shown names."""
        return tuple(name for name, flag in FEATURES if flag in self.flags)

    @property
    def has_amx(self) -> bool:
        """Intel AMX tiles (Sapphire Rapids and later), where llama.cpp's AMX repack crashes."""
        return "amx_int8" in self.flags or "amx_tile" in self.flags

    @property
    def x86_level(self) -> str | None:
        """The x86-64 micro-architecture level (v1..v4) these flags reach; None off x86."""
        if self.machine.lower() not in ("x86_64", "amd64"):
            return None
        levels = (("v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
                  ("v3", {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe"}),
                  ("v2", {"sse4_1", "sse4_2", "ssse3", "popcnt", "cx16"}))
        reached = "v1"
        for name, need in reversed(levels):
            if not need <= self.flags:
                break
            reached = name
        return reached


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """A CpuInfo from the text of /proc/cpuinfo (the first processor's entries)."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if not model and key in ("model name", "hardware", "cpu model"):
            model = value.strip()
        elif not flags and key in ("flags", "features"):
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or machine, machine, flags)


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached: it does not change while the process runs)."""
    machine = platform.machine()
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        text = ""
    return parse_cpuinfo(text, machine)
