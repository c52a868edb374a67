"""bench: tasks, statistics, records (resume), drift, answer extraction, report, and the CLI end to end."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner

from globmed_edge.bench.drift import compute_drift, drift_records
from globmed_edge.bench.records import (
    AccuracyRecord,
    BuildInfo,
    Record,
    ResultsFile,
    iter_records,
    merge,
    to_dict,
)
from globmed_edge.bench.stats import kl_divergence, mcnemar_exact, resolves, wilson
from globmed_edge.bench.tasks import TaskSpec, items_hash, load_task, pick_shots, stratified_sample
from globmed_edge.cli.main import cli
from globmed_edge.data.schema import MCQItem
from globmed_edge.errors import ConfigError, DataError
from globmed_edge.mcq.extract import extract_answer


def mcq(i: int, lang: str = "en", split: str = "test", answer: str = "A", dataset: str = "d") -> MCQItem:
    return MCQItem(id=f"{dataset}-{split}-{lang}-{i}", dataset=dataset, lang=lang, split=split,
                   question=f"q{i}", options={"A": "a", "B": "b", "C": "c"}, answer=answer)


def only_accuracy(records: Iterable[Record]) -> list[AccuracyRecord]:
    """`records`, asserted to be accuracy records only (what `bench run` writes), typed as such."""
    recs = list(records)
    accs = [r for r in recs if isinstance(r, AccuracyRecord)]
    assert accs == recs
    return accs


# --- statistics (values computed by hand / from the binomial distribution) ---------------------

def test_wilson_interval_known_values() -> None:
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_mcnemar_exact_and_kl() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 * 0.5**5)  # 0.0625
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    assert kl_divergence([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert not resolves(50, 100, 0.02) and resolves(5000, 10000, 0.02)


# --- tasks ---------------------------------------------------------------------------------------

def test_stratified_sample_is_deterministic_and_order_free() -> None:
    items = [mcq(i, lang) for lang in ("en", "sw") for i in range(30)]
    a = stratified_sample(items, 5, seed=1)
    b = stratified_sample(list(reversed(items)), 5, seed=1)
    assert a == b and set(a) == {"en", "sw"} and all(len(v) == 5 for v in a.values())
    assert stratified_sample(items, 5, seed=2) != a
    assert all(i.lang == lang for lang, its in a.items() for i in its)


def test_shots_never_come_from_scored_or_test_items() -> None:
    pool = [mcq(i, "en", "test") for i in range(5)] + [mcq(i, "en", "train") for i in range(3)]
    shots = pick_shots(pool, "en", 2, exclude={pool[0].id})
    assert len(shots) == 2 and all(s.split == "train" for s in shots)
    with pytest.raises(ConfigError, match="only 3 train/dev items"):
        pick_shots(pool, "en", 4)


def test_load_task_selects_and_explains(tmp_path: Path, sample_mcq: Path) -> None:
    data = load_task(TaskSpec(sources=(str(sample_mcq),), langs=("en", "ar"), limit=4, shots=1))
    assert set(data.items) == {"en", "ar"} and all(len(v) == 4 for v in data.items.values())
    assert all(i.split == "test" for v in data.items.values() for i in v)
    scored = {i.id for v in data.items.values() for i in v}
    assert all(s.split != "test" and s.id not in scored and s.lang == lang
               for lang, ss in data.shots.items() for s in ss)
    with pytest.raises(DataError, match="no test items for language.*xx"):
        load_task(TaskSpec(sources=(str(sample_mcq),), langs=("en", "xx")))
    with pytest.raises(ConfigError, match="--shots needs the scored split to be test"):
        load_task(TaskSpec(sources=(str(sample_mcq),), split="dev", shots=1))
    with pytest.raises(DataError, match="no such file"):
        load_task(TaskSpec(sources=(str(tmp_path / "missing.jsonl"),)))


# --- records ---------------------------------------------------------------------------------------

def acc_record(name: str, pred: str, lang: str = "en", gold: str = "AAAA",
               lps: tuple[tuple[float, ...], ...] = ()) -> AccuracyRecord:
    ids = tuple(f"i{k}" for k in range(len(gold)))
    k = sum(p == g for p, g in zip(pred, gold, strict=True))
    low, high = wilson(k, len(gold))
    return AccuracyRecord(
        build=BuildInfo(name, f"/b/{name}", "gguf", "q8_0", 1000), device="cpu", task="mcq-loglik-0shot",
        lang=lang, datasets=("d",), split="test", items_hash="h" + lang, n=len(gold), correct_letter=k,
        correct_text=k, accuracy=k / len(gold), accuracy_text=k / len(gold), ci_low=low, ci_high=high,
        item_ids=ids, gold=tuple(gold), pred=tuple(pred), letter_logprobs=lps)


def test_results_file_resume_and_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    rf = ResultsFile(path)
    assert rf.append(acc_record("a", "AAAB")) and not rf.append(acc_record("a", "BBBB"))
    rf.append(acc_record("a", "AAAA", lang="sw"))
    with open(path, "ab") as fh:  # a run killed in the middle of a write
        fh.write(b'{"type": "accuracy", "build": {"na')
    again = ResultsFile(path)
    assert len(again.records) == 2 and isinstance(again.records[0], AccuracyRecord)
    assert again.records[0].pred == ("A", "A", "A", "B")
    again.append(acc_record("b", "AAAA"))
    assert [r.build.name for r in only_accuracy(iter_records(path))] == ["a", "a", "b"]  # tail repaired, nothing lost


def test_records_reject_unknown_keys_and_versions(tmp_path: Path) -> None:
    good = json.loads(json.dumps(to_dict(acc_record("a", "AAAA"))))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**good, "accuarcy": 1}) + "\n" + json.dumps(good) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: unknown key\(s\) accuarcy"):
        list(iter_records(bad))
    bad.write_text(json.dumps({**good, "schema_version": 99}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="schema_version 99"):
        list(iter_records(bad))
    bad.write_text("not json\n" + json.dumps(good) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: not a JSON record"):
        list(iter_records(bad))


def test_merge_keeps_first_of_each_key(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ResultsFile(a).append(acc_record("x", "AAAA"))
    ResultsFile(b).append(acc_record("x", "BBBB"))
    ResultsFile(b).append(acc_record("y", "BBBB"))
    recs = merge([a, b])
    assert [(r.build.name, r.accuracy) for r in only_accuracy(recs)] == [("x", 1.0), ("y", 0.0)]


# --- drift ---------------------------------------------------------------------------------------

def test_drift_by_hand() -> None:
    lp = ((-0.1, -3.0), (-0.1, -3.0), (-0.1, -3.0), (-0.1, -3.0))
    ref = acc_record("ref", "AABB", gold="AAAA", lps=lp)
    flipped = ((-3.0, -0.1), (-0.1, -3.0), (-0.1, -3.0), (-0.1, -3.0))
    rec = acc_record("q4", "BAAB", gold="AAAA", lps=flipped)
    d = compute_drift(rec, ref)
    # ref right on 0,1; build right on 1,2: item 0 right->wrong, item 2 wrong->right
    assert (d.right_to_wrong, d.wrong_to_right, d.flips) == (1, 1, 2)
    assert d.delta == 0.0 and d.flip_rate == 0.5 and d.mcnemar_p == 1.0
    assert d.top1_agreement == pytest.approx(2 / 4)  # items 1 and 3 agree
    assert d.mean_kl is not None and d.mean_kl > 0 and not d.resolves_2pt
    assert [x.build for x in drift_records([ref, rec], "ref")] == ["q4"]
    other = acc_record("z", "AAAA", gold="AAAA")
    with pytest.raises(DataError, match="different items"):
        compute_drift(other, acc_record("r", "AAA", gold="AAA"))


@pytest.mark.parametrize(("reply", "want"), [
    ("The answer is B.", "B"), ("B) Colágeno", "B"), ("Answer: (C)", "C"), ("  A.", "A"),
    ("La réponse est C", "C"), ("I think (D) is right", "D"), ("Collagen fibres", "B"),
    ("I do not know", None), ("A or B", None),
])
def test_extract_answer(reply: str, want: str | None) -> None:
    opts = {"A": "Fibronectin", "B": "Collagen fibres", "C": "Integrins", "D": "Proteoglycans"}
    assert extract_answer(reply, opts) == want


# --- report ----------------------------------------------------------------------------------------

def test_report_numbers_come_from_records(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from globmed_edge.bench.report import write_report

    res = tmp_path / "r.jsonl"
    rf = ResultsFile(res)
    for lang, pred in (("en", "AAAB"), ("sw", "ABBB")):
        rf.append(acc_record("ref", "AAAA", lang=lang))
        rf.append(acc_record("q4", pred, lang=lang))
    paths = write_report([res], tmp_path / "rep", reference="ref")
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert "75.0" in md and "25.0" in md  # q4: en 3/4, sw 1/4
    html = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "<html" in html and "http://" not in html.replace("http://www.w3.org", "")
    assert any(p.suffix == ".png" and p.stat().st_size > 1000 for p in paths)
    with pytest.raises(DataError, match="reference build 'nope'"):
        write_report([res], tmp_path / "rep2", reference="nope")


# --- CLI end to end on the default model ---------------------------------------------------------

def test_bench_cli_runs_resumes_and_reports(default_model: Path, sample_mcq: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    args = ["bench", "run", str(default_model), "--data", str(sample_mcq), "--langs", "en,sw",
            "--limit", "3", "--out", str(out)]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    recs = only_accuracy(iter_records(out))
    assert sorted(x.lang for x in recs) == ["en", "sw"]
    for x in recs:
        assert isinstance(x, AccuracyRecord) and x.n == 3 and len(x.pred) == 3
        assert x.accuracy == sum(p == g for p, g in zip(x.pred, x.gold, strict=True)) / 3
        assert x.items_hash == items_hash([i for i in load_task(TaskSpec(
            sources=(str(sample_mcq),), langs=(x.lang,), limit=3)).items[x.lang]])
    from globmed_edge.paths import known_results_files

    assert out.resolve() in known_results_files()  # so the chat picker finds its speed and memory
    before = out.read_bytes()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "skipped" in r.output and out.read_bytes() == before
    assert "no --limit" not in r.output
    # --force measures again; the earlier records move to a side file, none is lost
    forced = CliRunner().invoke(cli, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "--force: 2 earlier record(s)" in forced.output and "skipped" not in forced.output
    (aside,) = tmp_path.glob("results.jsonl.replaced-*.jsonl")
    assert aside.read_bytes() == before
    again = only_accuracy(iter_records(out))
    assert sorted(x.lang for x in again) == ["en", "sw"] and [x.pred for x in again] == [x.pred for x in recs]
    # without --limit every item is scored: said up front with the count, and the time left per language
    full = CliRunner().invoke(cli, [*args[:-4], "--out", str(tmp_path / "all.jsonl")])
    assert full.exit_code == 0, full.output
    n = sum(x.n for x in only_accuracy(iter_records(tmp_path / "all.jsonl")))
    assert f"note: no --limit: every item is scored, {n} per build x 1 build(s)" in full.output
    assert "s left for this build" in full.output
    rep = CliRunner().invoke(cli, ["bench", "report", str(out), "--out", str(tmp_path / "rep"), "--no-charts"])
    assert rep.exit_code == 0, rep.output
    assert "en" in (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")


def test_torch_dtype_runs_the_source_in_it_under_its_own_name(default_model: Path, sample_mcq: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    args = ["bench", "run", str(default_model), "--data", str(sample_mcq), "--langs", "en", "--limit", "3",
            "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    r = CliRunner().invoke(cli, [*args, "--torch-dtype", "bfloat16"])
    assert r.exit_code == 0, r.output
    assert "skipped" not in r.output  # not the float32 run's record: measured again, under another name
    plain, bf16 = only_accuracy(iter_records(out))
    assert bf16.build.name == f"{plain.build.name}-bf16" and bf16.build.quantization == "bfloat16"
    assert bf16.item_ids == plain.item_ids
    assert bf16.letter_logprobs != plain.letter_logprobs  # it really computed in bfloat16
    # float32 is the CPU's default: the same build as a run without the option, so it resumes
    same = CliRunner().invoke(cli, [*args, "--torch-dtype", "float32"])
    assert same.exit_code == 0 and "accuracy records already in" in same.output, same.output
    assert len(list(iter_records(out))) == 2


def test_torch_dtype_applies_to_model_folders_only(default_model: Path, tmp_path: Path) -> None:
    from globmed_edge.backends.transformers_backend import TransformersBackend
    from globmed_edge.bench.runner import build_info
    from globmed_edge.bench.throughput import torch_options

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    assert torch_options(gguf, "bfloat16") == {} and build_info(gguf, "bfloat16").name == "m"
    assert torch_options(default_model, "bfloat16") == {"dtype": "bfloat16"}
    assert torch_options(default_model, None) == {}
    assert build_info(default_model, "bfloat16", device="cuda") == build_info(default_model)  # CUDA's default
    assert build_info(default_model, "float32", device="cuda").name.endswith("-fp32")
    with pytest.raises(ConfigError, match="dtype 'bf16': one of float32, bfloat16, float16"):
        TransformersBackend(default_model, dtype="bf16")


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_records(default_model: Path, sample_mcq: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    langs = ["en", "es", "fr", "ha", "pt", "sw", "yo", "zu"]  # Latin script: short prompts for this tokenizer
    cmd = [sys.executable, "-m", "globmed_edge.cli.main", "bench", "run", str(default_model), "--data",
           str(sample_mcq), "--langs", ",".join(langs), "--limit", "4", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and out.read_bytes().count(b"\n") >= 1:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its per-build child process, right after record 1
    proc.wait()
    done = {(r.lang, r.items_hash): r for r in only_accuracy(iter_records(out))} if out.is_file() else {}
    assert 1 <= len(done) < len(langs), f"the kill did not land mid-run ({len(done)} records)"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    final = only_accuracy(iter_records(out))
    assert sorted(x.lang for x in final) == langs  # every language once: nothing redone or lost
    for x in final:  # the records written before the kill are kept as they were, not redone
        if (x.lang, x.items_hash) in done:
            assert x.created_at == done[(x.lang, x.items_hash)].created_at


def test_chart_labels_drop_the_shared_prefix() -> None:
    from globmed_edge.bench.charts import short_names

    names = ["smollm2-135m-instruct", "smollm2-135m-instruct-gguf-q8_0", "smollm2-135m-instruct-onnx-int4"]
    assert short_names(names) == {"smollm2-135m-instruct": "smollm2-135m-instruct",
                                  "smollm2-135m-instruct-gguf-q8_0": "gguf-q8_0",
                                  "smollm2-135m-instruct-onnx-int4": "onnx-int4"}
    assert short_names(["a-x", "b-x"]) == {"a-x": "a-x", "b-x": "b-x"}
    assert short_names(["only-one"]) == {"only-one": "only-one"}


def test_a_training_output_is_named_after_its_run(tmp_path: Path) -> None:
    from globmed_edge.bench.runner import build_info

    merged = tmp_path / "gemma-lora" / "merged"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"], "dtype": "bfloat16"}))
    (merged / "model.safetensors").write_bytes(b"\0" * 8)
    plain = build_info(merged)
    assert plain.name == "merged" and plain.quantization == "bfloat16" and plain.size_bytes == 8
    (merged / "training_card.json").write_text("{}")
    assert build_info(merged).name == "gemma-lora-merged"
