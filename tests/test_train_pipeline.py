"""The CPU smoke path end to end: the default model trains and merges, the merged folder goes
through `bench` (and `quantize` once it exists), and the same command runs under
`accelerate launch` with two CPU processes (the distributed code path, gloo backend)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from globmed_edge.cli.main import cli

LANGS = ("en", "sw")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pipeline-data")
    rows = []
    for lang in LANGS:
        for split, n in (("train", 6), ("dev", 1), ("test", 3)):
            for i in range(n):
                rows.append({"id": f"p-{split}-{lang}-{i}", "dataset": "p", "lang": lang, "split": split,
                             "question": f"[{lang}] Which vitamin deficiency causes scurvy? ({i})",
                             "options": {"A": "Vitamin A", "B": "Vitamin C", "C": "Vitamin D"},
                             "answer": "B"})
    path = d / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def merged_default(default_model: Path, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two LoRA steps of the default model (SmolLM2-135M-Instruct) on CPU, merged."""
    out = tmp_path_factory.mktemp("default-run")
    result = CliRunner().invoke(cli, [
        "train", "tiny-smoke", f"model={default_model}", f"data={small_data}", f"output_dir={out}",
        "max_steps=2", "max_seq_len=128", "batch_size=1", "eval_steps=-1", "--merge", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["steps"] == 2
    return out / "merged"


@pytest.mark.slow
def test_default_model_merged_output_loads_and_generates(default_model: Path, merged_default: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from globmed_edge.train.recipe import STATE_FILE

    tok: Any = AutoTokenizer.from_pretrained(merged_default)
    assert tok.chat_template == AutoTokenizer.from_pretrained(default_model).chat_template
    model: Any = AutoModelForCausalLM.from_pretrained(merged_default, dtype=torch.float32)
    inputs: Any = tok.apply_chat_template([{"role": "user", "content": "What is malaria?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert (merged_default.parent / STATE_FILE).is_file()
    card = json.loads((merged_default / "training_card.json").read_text())
    assert card["base_model"] == str(default_model) and card["steps"] == 2


@pytest.mark.slow
def test_merged_output_goes_through_bench(merged_default: Path, small_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    r = CliRunner().invoke(cli, ["bench", "run", str(merged_default), "--data", str(small_data),
                                 "--split", "test", "--limit", "1", "--out", str(results)])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert records and {rec.get("lang") for rec in records} >= set(LANGS)


@pytest.mark.slow
def test_merged_output_goes_through_quantize(merged_default: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["quantize", str(merged_default), "--format", "onnx:int8",
                                 "--out", str(tmp_path / "builds"), "--json"])
    assert r.exit_code == 0, r.output
    assert any((tmp_path / "builds").glob("*-onnx-int8/manifest.json"))


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tiny_model: Path, small_data: Path, tmp_path: Path) -> None:
    """`accelerate launch` (never a home-made launcher) with 2 CPU processes: data-parallel
    training, every rank saves, only the main one writes the merged folder."""
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("the accelerate launcher is not installed")
    exe = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [exe, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "globmed_edge", "train", "tiny-smoke", f"model={tiny_model}",
         f"data={small_data}", f"output_dir={out}", "max_steps=2", "max_seq_len=128", "--merge", "-q"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["steps"] == 2 and (out / "merged" / "model.safetensors").is_file()
    assert "world_size': 2" in proc.stderr or (out / "checkpoint-2").is_dir()
