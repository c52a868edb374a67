"""The clinic side's wheelhouse: globmed-edge and only what the chat and the bundle's runtimes need,
for the target's Python and platform, with the portable llama-cpp-python wheel.

* globmed-edge itself is built from this checkout (a copy of it, so the tree gets no build/ or
  egg-info) with `pip wheel --no-deps`.
* llama-cpp-python has no wheel on PyPI; the portable one comes from scripts/llama-cpp-wheel.sh
  (built once per machine and Python, cached outside pip's cache) and is refused if it carries only
  one CPU kernel library (a native build dies with SIGILL on an older CPU; docs/backends.md).
* Everything else is `pip download --only-binary=:all:` for the target's tags, through pip's own
  configuration (index, extra indexes, find-links), so a builder behind a mirror uses the mirror.
  Extras say what is needed: [clinic] for GGUF builds (no torch, no transformers), [clinic-onnx]
  for ONNX builds. pip itself is included: install.sh makes the venv with --without-pip (Debian
  and Ubuntu ship python3 without ensurepip unless python3-venv is installed) and runs pip from
  its wheel.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from globmed_edge import __version__
from globmed_edge.errors import BundleError

#: build format -> the install extra that serves it on a clinic laptop (pyproject.toml)
FORMAT_EXTRA = {"gguf": "clinic", "onnx": "clinic-onnx"}
LLAMA_DIST = "llama_cpp_python"
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_GLIBC_SYMBOL = re.compile(rb"GLIBC_2\.(\d+)")


@dataclass(frozen=True)
class Target:
    """The clinic laptops a bundle is for: CPython X.Y on Linux, one CPU architecture."""

    python: str  # "3.11"
    arch: str  # "x86_64"
    glibc: tuple[int, int]  # the oldest glibc the laptops have (wheels needing more are not taken)

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def platform(self) -> str:
        return f"linux_{self.arch}"

    def pip_platforms(self) -> list[str]:
        """Every platform tag such a laptop accepts, newest first (pip download --platform)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 4, -1)]
        tags += [f"{legacy}_{self.arch}" for legacy, v in _LEGACY.items() if v <= self.glibc]
        return [*tags, self.platform]

    def as_dict(self) -> dict[str, str]:
        return {"python": self.python, "abi": self.abi, "platform": self.platform,
                "glibc_max_tag": f"{self.glibc[0]}.{self.glibc[1]}"}


def this_glibc() -> tuple[int, int]:
    name, version = platform.libc_ver()
    m = re.match(r"(\d+)\.(\d+)", version or "")
    if name != "glibc" or m is None:
        raise BundleError("this machine has no glibc; bundles are for glibc Linux laptops (pass --glibc X.Y)")
    return int(m.group(1)), int(m.group(2))


def make_target(python: str | None, platform_tag: str | None, glibc: str | None) -> Target:
    """The target asked for on the command line (default: this machine), or a clear refusal."""
    here = platform.machine()
    py = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    if not re.fullmatch(r"3\.\d{1,2}", py) or int(py.split(".")[1]) < 10:
        raise BundleError(f"--python {py}: globmed-edge runs on CPython 3.10 or newer (give it as 3.X)")
    plat = platform_tag or f"linux_{here}"
    m = re.fullmatch(r"linux_(\w+)", plat)
    if m is None:
        raise BundleError(f"--platform {plat}: bundles serve Linux laptops only (linux_x86_64); "
                          "Windows and macOS clinics are not supported yet")
    if m.group(1) != here:
        raise BundleError(f"--platform {plat}: the portable llama-cpp-python wheel is compiled on the platform it is "
                          f"for, and this machine is linux_{here}; make the bundle on a {m.group(1)} machine")
    if glibc:
        g = re.fullmatch(r"(\d+)\.(\d+)", glibc)
        if g is None:
            raise BundleError(f"--glibc {glibc}: give it as 2.NN (for example 2.31 for Ubuntu 20.04)")
        version = (int(g.group(1)), int(g.group(2)))
    else:
        version = this_glibc()
    return Target(py, m.group(1), version)


def _source_root() -> Path:
    import globmed_edge

    root = Path(globmed_edge.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "globmed-edge"' not in pyproject.read_text(encoding="utf-8"):
        raise BundleError("bundle create needs the globmed-edge source checkout (an editable install, as "
                          "`make install` makes); this globmed-edge was installed from a wheel")
    return root


def build_self_wheel(dest: Path) -> Path:
    """globmed-edge's own wheel, built from a copy of the checkout's packaged files."""
    root = _source_root()
    with tempfile.TemporaryDirectory(prefix="globmed-wheel-") as tmp:
        src = Path(tmp) / "src"
        keep = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist")
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        for folder in ("edge", "quantize", "train", "bench", "tui", "bundle"):
            shutil.copytree(root / folder, src / folder, ignore=keep)
        out = _pip(["wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), str(src)],
                   "building the globmed-edge wheel")
    wheels = sorted(dest.glob(f"globmed_edge-{__version__}-*.whl"))
    if not wheels:
        raise BundleError(f"pip wheel made no globmed_edge-{__version__} wheel: {out[-300:]}")
    return wheels[0]


def portable_llama_wheel(log: Callable[[str], None]) -> Path:
    """The portable llama-cpp-python wheel (built once per machine, ~11 min cold). It is tagged
    py3-none-linux_<arch> (ctypes bindings, no CPython extension), so it serves any target Python."""
    script = _source_root() / "scripts" / "llama-cpp-wheel.sh"
    log("      portable llama-cpp-python wheel (scripts/llama-cpp-wheel.sh; a cold build takes ~11 min on 2 cores)")
    proc = subprocess.run(["sh", str(script), sys.executable], stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BundleError(f"scripts/llama-cpp-wheel.sh failed (exit {proc.returncode}); see the lines above")
    wheel = Path(proc.stdout.strip().splitlines()[-1])
    check_portable(wheel)
    return wheel


def check_portable(wheel: Path) -> None:
    """Refuse a llama-cpp-python wheel compiled for one CPU (one kernel library, or none loadable)."""
    try:
        names = zipfile.ZipFile(wheel).namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{wheel}: not a readable wheel ({exc})") from None
    variants = [n for n in names if re.search(r"/libggml-cpu-[\w-]+\.so$", n)]
    if len(variants) < 2:
        raise BundleError(f"{wheel.name}: a llama-cpp-python compiled for one CPU (no per-CPU kernel libraries); "
                          "it would die with SIGILL on an older laptop. Use scripts/llama-cpp-wheel.sh's portable build")


def _pip(args: list[str], what: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, env={**os.environ, "PIP_PROGRESS_BAR": "off"})
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in (proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise BundleError(f"{what} failed (pip exit {proc.returncode}): {tail}")
    return proc.stdout


def download(target: Target, extras: list[str], local: list[Path], dest: Path, *,
             find_links: list[Path], no_index: bool) -> list[Path]:
    """pip download of globmed-edge[extras] and pip for the target, binary wheels only."""
    args = ["download", "--only-binary=:all:", "--dest", str(dest), "--python-version", target.python,
            "--implementation", "cp", "--abi", target.abi, "--abi", "abi3", "--abi", "none"]
    for tag in target.pip_platforms():
        args += ["--platform", tag]
    for link in {p.parent for p in local} | set(find_links):
        args += ["--find-links", str(link)]
    if no_index:
        args.append("--no-index")
    args += [f"globmed-edge[{','.join(sorted(set(extras)))}]=={__version__}", "pip"]
    _pip(args, f"pip download for Python {target.python} {target.platform}")
    wheels = sorted(dest.glob("*.whl"))
    stray = [p.name for p in dest.iterdir() if not p.name.endswith(".whl")]
    if stray:
        raise BundleError(f"pip download left non-wheel files ({', '.join(stray)}); refusing a wheelhouse that "
                          "would need a compiler")
    return wheels


def glibc_needed(wheel: Path) -> tuple[int, int]:
    """The newest glibc a wheel needs: from its manylinux tag, or for a plain linux_* wheel (the
    portable llama-cpp-python built here) from the GLIBC_2.N symbol versions its libraries use."""
    tags = wheel.name.removesuffix(".whl").split("-")[-1].split(".")
    need = (2, 0)
    for tag in tags:
        m = _MANYLINUX.fullmatch(tag)
        if m:
            need = max(need, (int(m.group(1)), int(m.group(2))))
        for legacy, version in _LEGACY.items():
            if tag.startswith(legacy + "_"):
                need = max(need, version)
        if tag.startswith("linux_"):
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if ".so" in name:
                        for v in _GLIBC_SYMBOL.findall(z.read(name)):
                            need = max(need, (2, int(v)))
    return need
