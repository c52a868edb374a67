"""Throughput records that mean what the chat gets: thread policy, machine load, KV-cache shape, schema 2."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from globmed_edge.bench.records import ThroughputRecord, from_dict, iter_records, to_dict
from globmed_edge.bench.throughput import CHAT_CONTEXT, chat_threads, kv_shape, machine_load
from globmed_edge.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "lab" / "results" / "cpu-smollm2-default" / "results.jsonl"
# SmolLM2-135M's shape: 30 layers, 9 query heads, 3 KV heads, hidden 576 -> head 64
SHAPE = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576,
         "max_position_embeddings": 8192, "vocab_size": 49152}


def hf_folder(path: Path, **extra: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({**SHAPE, **extra}), encoding="utf-8")
    return path


def test_auto_threads_follow_the_chat_policy(tmp_path: Path) -> None:
    hf = hf_folder(tmp_path / "hf")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert chat_threads(hf, "auto") is None  # the chat opens non-GGUF builds with the runtime's default
    assert chat_threads(gguf, "auto") == "auto"  # llama.cpp re-picks the free cores before each answer
    assert chat_threads(hf, 3) == 3 and chat_threads(gguf, None) is None


def test_kv_shape_from_hf_and_onnx_files(tmp_path: Path) -> None:
    hf = kv_shape(hf_folder(tmp_path / "hf"))
    # K and V x 30 layers x 3 heads x 64 dims x 4 bytes (the transformers backend runs fp32 on CPU);
    # a prefill keeps fp32 logits over the 49152-token vocabulary for every prompt position
    assert hf == {"kv_bytes_per_token": 2 * 30 * 3 * 64 * 4, "context_tokens": CHAT_CONTEXT, "kv_preallocated": False,
                  "logits_bytes_per_token": 4 * 49152}
    assert kv_shape(hf_folder(tmp_path / "short", max_position_embeddings=1024))["context_tokens"] == 1024
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "model.onnx").write_bytes(b"")
    (onnx / "genai_config.json").write_text(json.dumps({"model": {"context_length": 2048, "vocab_size": 1000,
        "decoder": {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_size": 64}}}), encoding="utf-8")
    assert kv_shape(onnx) == {"kv_bytes_per_token": 46080, "context_tokens": 2048, "kv_preallocated": False,
                              "logits_bytes_per_token": 4000}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}", encoding="utf-8")
    assert kv_shape(tmp_path / "bad") == {}


def test_kv_shape_from_gguf_metadata(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(30)
    w.add_head_count(9)
    w.add_head_count_kv(3)
    w.add_embedding_length(576)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # llama.cpp's default f16 cache, allocated (and cleared) for the whole context at load; last-position logits
    assert kv_shape(path) == {"kv_bytes_per_token": 2 * 30 * 3 * 64 * 2, "context_tokens": CHAT_CONTEXT,
                              "kv_preallocated": True, "logits_bytes_per_token": 0}


def test_machine_load_is_other_programs_share_of_all_cpus() -> None:
    cpus = os.cpu_count() or 1
    # 2 s of wall time; the machine was busy 3 CPU-seconds, 1 of them this process's own
    load = machine_load((0.0, 10.0, 1.0), (2.0, 13.0, 2.0))
    assert load["other_cpu_share"] == pytest.approx(min(1.0, 2.0 / (2.0 * cpus)), abs=1e-4)
    assert machine_load((0.0, 10.0, 1.0), (2.0, 11.0, 2.0))["other_cpu_share"] == 0.0  # only this process


def test_schema_1_records_still_read_and_schema_2_round_trips() -> None:
    old = [r for r in iter_records(COMMITTED) if isinstance(r, ThroughputRecord)]
    assert old and all(r.schema_version == 1 and r.load == {} and r.kv_bytes_per_token is None for r in old)
    new = replace(old[0], threads="auto", load={"other_cpu_share": 0.4}, kv_bytes_per_token=23040,
                  context_tokens=4096, kv_preallocated=True, schema_version=2)
    back = from_dict(json.loads(json.dumps(to_dict(new))))
    assert back == new and back.key()[-1] == "auto"


@pytest.mark.parametrize(("value", "message"), [("0", "must be at least 1"), ("many", "neither a positive integer")])
def test_bench_run_threads_option_rejects_bad_values(value: str, message: str, tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["bench", "run", str(tmp_path), "--threads", value])
    assert out.exit_code == 2 and message in out.output


@pytest.mark.slow
def test_bench_run_threads_auto_records_load_shape_and_spread(default_model: Path, sample_mcq: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(cli, ["bench", "run", str(default_model), "--data", str(sample_mcq), "--langs", "en",
                                   "--limit", "2", "--threads", "auto", "--throughput", "--repeats", "2",
                                   "--new-tokens", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    tps = [r for r in iter_records(out) if isinstance(r, ThroughputRecord)]
    assert len(tps) == 1
    t = tps[0]
    assert t.threads == "auto" and len(t.runs) == 2 and 0.0 <= t.load["other_cpu_share"] <= 1.0
    assert t.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4 and t.context_tokens == CHAT_CONTEXT
    rec = CliRunner().invoke(cli, ["bench", "recommend", "--results", str(out), "--ram", "4"])
    assert rec.exit_code == 0 and "threads auto" in rec.output and "KV cache" in rec.output


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_a_child_peak_rss_is_its_own_not_its_parents() -> None:
    """ru_maxrss survives fork + exec on Linux: a child of a big process reported the parent's peak."""
    import subprocess
    import sys

    ballast = bytearray(400 * 1024**2)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: 400 MiB resident here
    code = ("import resource; from globmed_edge.backends.base import own_peak_rss; "
            "print(own_peak_rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    own, inherited = map(int, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                             check=True).stdout.split())
    del ballast
    assert own < 200 * 1024**2  # a bare interpreter; ru_maxrss said `inherited` (>= 400 MiB on Linux 6.x here)
    assert inherited > 0
