"""mypy over the package and the tests, with the package laid out as it is installed.

The checkout maps `edge/` to `globmed_edge`, `bench/` to `globmed_edge.bench`, ... and pip's
editable install resolves that with an import hook mypy cannot see: run on the folders as they
are, mypy finds no `globmed_edge` module, takes every imported name for `Any`
(`ignore_missing_imports`) and checks no call across files, so a backend that no longer matches
the `Backend` protocol went unnoticed. Here the package is assembled first (as
scripts/check_layers.py does for import-linter, with links to the real files) and mypy checks
`globmed_edge` and `tests/` against it; errors are printed with the checkout's paths.

    python scripts/typecheck.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_layers import layout  # noqa: E402  (a script beside this one)


def link_tree(dest: Path) -> dict[str, str]:
    """Symlink every package's .py files into `dest` as the installed layout; returns a map from
    tree paths (relative, with '/') to checkout paths for the messages."""
    back = {}
    for rel, py in layout(ROOT):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).symlink_to(py)
        back[rel.as_posix()] = py.relative_to(ROOT).as_posix()
    return back


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="globmed-mypy-") as tmp:
        tree = Path(tmp)
        back = link_tree(tree)
        env = dict(os.environ, MYPYPATH=str(tree))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
               "--cache-dir", str(ROOT / ".mypy_cache" / "tree"), "globmed_edge",
               *sorted(str(p) for p in (ROOT / "tests").glob("*.py"))]
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
        for line in (proc.stdout + proc.stderr).splitlines():
            path, sep, rest = line.partition(":")
            if sep and path in back:
                line = back[path] + sep + rest
            elif sep and path.startswith(str(ROOT) + "/"):
                line = path[len(str(ROOT)) + 1:] + sep + rest
            print(line)
        return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
