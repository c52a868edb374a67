"""Check the import-linter contracts of pyproject.toml ([tool.importlinter]) against the source.

The checkout keeps the package's parts side by side (`edge/` is `globmed_edge`, `bench/` is
`globmed_edge.bench`, ... through [tool.setuptools.package-dir]), and import-linter finds a
package's modules by walking one folder. So the `.py` files are first copied into one tree laid
out as the installed package (`<tree>/globmed_edge/bench/...`), and import-linter runs on that
tree with the checkout's own contracts.

    python scripts/check_layers.py            # exit 0 when every contract is kept
    python scripts/check_layers.py --tree DIR # keep the assembled tree in DIR (tests use this)

`assemble(root, dest)` is importable, so a test can break a contract in a copy and watch it fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def package_dirs(root: Path) -> dict[str, Path]:
    """Import name -> source folder, from pyproject's packages and package-dir mapping."""
    cfg = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    mapping = cfg.get("package-dir", {})
    out = {}
    for pkg in cfg["packages"]:
        if pkg in mapping:
            out[pkg] = root / mapping[pkg]
        else:  # a sub-package inside its parent's mapped folder
            parent, _, leaf = pkg.rpartition(".")
            out[pkg] = (root / mapping[parent] / leaf) if parent in mapping else root / pkg.replace(".", "/")
    return out


def layout(root: Path) -> Iterator[tuple[Path, Path]]:
    """(path in the installed layout, relative; source file) for every .py file of the package."""
    for pkg, src in package_dirs(root).items():
        for py in src.glob("*.py"):
            yield Path(*pkg.split("."), py.name), py


def assemble(root: Path, dest: Path) -> Path:
    """Copy every package's .py files into `dest` as the installed layout; returns `dest`.
    Copies, not links: tests break contracts by editing the copies."""
    for rel, py in layout(root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(py, dest / rel)
    return dest


def run(tree: Path, config: Path, *, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """lint-imports over `tree` with `config`; the tree comes first on the import path."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [str(Path(sys.executable).with_name("lint-imports")), "--config", str(config), "--no-cache"]
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=quiet, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, help="assemble into this folder (kept) instead of a temporary one")
    args = ap.parse_args(argv)
    if args.tree:
        shutil.rmtree(args.tree, ignore_errors=True)
        return run(assemble(ROOT, args.tree), ROOT / "pyproject.toml").returncode
    with tempfile.TemporaryDirectory(prefix="globmed-layers-") as tmp:
        return run(assemble(ROOT, Path(tmp)), ROOT / "pyproject.toml").returncode


if __name__ == "__main__":
    sys.exit(main())
