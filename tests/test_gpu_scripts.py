"""The GPU scripts under lab/gpu/ run end to end on CPU in their --tiny form (numbers there mean
nothing; what is checked is that the script itself works before it is taken to a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_script_tiny_on_cpu(default_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "tput.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "lab" / "gpu" / "train_throughput.py"), "--tiny", "--tokenizer",
         str(default_model), "--steps", "3", "--warmup", "1", "--seq-len", "256", "--batch-size", "1",
         "--samples", "16", "--methods", "lora", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    runs = {r["run"]: r for r in res["runs"]}
    assert set(runs) == {"globmed-edge lora (packing)", "plain TRL SFTTrainer full (defaults)"}
    for r in runs.values():
        assert r["steps_timed"] == 2 and r["tokens_per_s"] > 0 and r["median_tokens_per_step"] > 0
    assert res["gpu"] is None and all(r["mfu"] is None for r in runs.values())  # no peak known on CPU
    assert res["non_embedding_params"] > 0
