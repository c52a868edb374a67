"""`make demo` (scripts/demo.py): its languages exist in the data it runs on, and it asks for the main job."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from globmed_edge.languages import lookup

ROOT = Path(__file__).resolve().parents[1]


def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def langs_in(path: Path) -> set[str]:
    """Languages with test items in a JSONL file or a folder of `*.test.jsonl` files."""
    return {json.loads(line)["lang"] for f in ([path] if path.is_file() else sorted(path.glob("*.test.jsonl")))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()
            and json.loads(line).get("split", "test") == "test"}


def test_demo_languages_cover_rtl_and_low_resource_and_exist_in_its_data() -> None:
    d = demo()
    langs = d.LANGS.split(",")
    assert len(langs) >= 6
    assert any(lookup(lang).is_rtl for lang in langs) and any(lookup(lang).is_low_resource for lang in langs)
    assert set(langs) <= langs_in(ROOT / "edge" / "samples" / "mcq_sample.jsonl")
    shared = ROOT.parent / "shared" / "data" / "mcq"
    if shared.is_dir():  # the demo uses it when it is beside the checkout
        missing = set(langs) - langs_in(shared)
        assert not missing, f"no test items in {shared} for {sorted(missing)}"
    tier, clinic = d.CLINIC
    assert float(tier) > 0 and set(clinic.split(",")) <= set(langs)


def test_demo_runs_the_main_job_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The steps it runs, in order, with a fake `run` that answers like the real commands."""
    d = demo()
    calls: list[list[str]] = []
    model = tmp_path / "models" / "m"
    build = tmp_path / "builds" / "m-gguf-q8_0"

    def fake_run(cmd: list[str], *, capture: bool = False, ok: tuple[int, ...] = (0,)) -> str:
        calls.append(cmd)
        if cmd[1:3] == ["models", "prepare"]:
            return f"m: ready at {model}\n"
        if cmd[1] == "quantize":
            return json.dumps({"builds": [{"build": build.name, "status": "built", "path": str(build),
                                           "parity": {"passed": True}},
                                          {"build": "m-onnx-int4", "status": "unavailable", "message": "no runtime"}]})
        if "--json" in cmd:
            return json.dumps({"choice": build.name, "choice_path": str(build), "summary": "fastest",
                               "builds": []})
        return ""

    monkeypatch.setattr(d, "run", fake_run)
    assert d.main(["--bin", "/venv/bin", "--out", str(tmp_path / "out")]) == 0
    steps = [c[1] if c[1] != "bench" else f"bench {c[2]}" for c in calls]
    assert steps == ["models", "quantize", "bench run", "bench report", "bench recommend", "bench recommend",
                     "chat"]
    bench_run = calls[2]
    assert str(model) in bench_run and str(build) in bench_run and "m-onnx-int4" not in " ".join(bench_run)
    assert bench_run[bench_run.index("--threads") + 1] == "auto" and "--throughput" in bench_run
    assert "--force" in bench_run  # a rerun measures anew, never recommends the last data home's builds
    assert calls[-1][:3] == ["/venv/bin/globmed-edge", "chat", str(build)] and "--prompt" in calls[-1]
