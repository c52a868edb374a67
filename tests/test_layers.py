"""The architecture contracts ([tool.importlinter] in pyproject.toml) hold on the checkout, and each
one fails when code breaks it (so the contracts are not hollow). scripts/check_layers.py lays the
mapped source folders out as the installed package before import-linter reads them."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"

if shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None:  # pragma: no cover
    pytest.skip("import-linter is not installed (the dev extra brings it)", allow_module_level=True)

_spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
assert _spec and _spec.loader
check_layers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layers)

FLOORS = "Floors: entry point > CLI"
TEXTUAL = "Only the chat app (tui) imports textual"
LLAMA = "Only the llama.cpp backend and runtime"


def _append(tree: Path, module: str, code: str) -> None:
    path = tree.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


def test_every_contract_is_kept_on_the_checkout(tmp_path: Path) -> None:
    tree = check_layers.assemble(ROOT, tmp_path / "tree")
    assert (tree / "globmed_edge" / "bench" / "runner.py").is_file()  # the mapped folders are inside
    assert not (tree / "globmed_edge" / "lab").exists()
    out = check_layers.run(tree, CONFIG, quiet=True)
    assert out.returncode == 0, out.stdout[-4000:]
    assert "3 kept, 0 broken" in out.stdout


@pytest.mark.parametrize(("module", "code", "contract", "says"), [
    # a core package climbing to a stage (the MCQ scorer once lived in bench: train had to climb to it)
    ("globmed_edge.mcq.scorer", "def _f():\n    from globmed_edge.bench import runner", FLOORS,
     "globmed_edge.mcq is not allowed to import globmed_edge.bench"),
    # two stages are independent, even through a lazy import inside a function
    ("globmed_edge.quantize.base", "def _f():\n    from globmed_edge.tui import store", FLOORS,
     "globmed_edge.quantize is not allowed to import globmed_edge.tui"),
    ("globmed_edge.backends.base", "import globmed_edge.cli.main", FLOORS,
     "globmed_edge.backends is not allowed to import globmed_edge.cli"),
    ("globmed_edge.bench.report", "def _f():\n    import textual", TEXTUAL,
     "globmed_edge.bench is not allowed to import textual"),
    ("globmed_edge.tui.store", "import llama_cpp", LLAMA, "globmed_edge.tui is not allowed to import llama_cpp"),
])
def test_a_broken_contract_fails(tmp_path: Path, module: str, code: str, contract: str, says: str) -> None:
    tree = check_layers.assemble(ROOT, tmp_path / "tree")
    _append(tree, module, code)
    out = check_layers.run(tree, CONFIG, quiet=True)
    assert out.returncode != 0
    broken = out.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and says in broken, out.stdout[-4000:]


def test_a_module_outside_every_floor_fails(tmp_path: Path) -> None:
    tree = check_layers.assemble(ROOT, tmp_path / "tree")
    (tree / "globmed_edge" / "helpers.py").write_text("X = 1\n", encoding="utf-8")
    out = check_layers.run(tree, CONFIG, quiet=True)
    assert out.returncode != 0 and "globmed_edge.helpers" in out.stdout and "exhaustive" in out.stdout
