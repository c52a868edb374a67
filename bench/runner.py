"""`bench run`: score builds per language, time them, compare them with a reference.

Each build is opened through the backend protocol and scored here, one accuracy record per
language appended to the results file as soon as that language is done; native runtimes
(llama.cpp, onnxruntime) run in a child process of their own (`open_backend(isolate="native")`),
so a build whose runtime crashes is reported as failed, with the signal and what to try, and the
other builds are still benched. A build or language whose record is already in the file (same
build, device, task, language and item set) is skipped, so an interrupted or partly failed run
resumes where it stopped. Throughput runs in yet another child per build (see throughput.py).
Drift records are computed last, from the accuracy records of each build and the reference.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from globmed_edge.bench.records import (
    AccuracyRecord,
    BuildInfo,
    Record,
    ResultsFile,
    ThroughputRecord,
)
from globmed_edge.bench.stats import wilson
from globmed_edge.bench.tasks import (
    MODES,
    TASKS,
    LangOutcome,
    TaskData,
    TaskSpec,
    items_hash,
    load_task,
)
from globmed_edge.errors import BackendError, ConfigError, ModelError
from globmed_edge.mcq.scorer import DEFAULT_BATCH_ITEMS

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".onnx", ".bin", ".data", ".onnx_data")


@dataclass(frozen=True)
class RunConfig:
    builds: tuple[str, ...]
    task: TaskSpec
    out: str
    device: str = "cpu"
    threads: int | str | None = None  # "auto": the chat app's policy (see throughput.chat_threads)
    reference: str | None = None
    throughput: bool = False
    long_context: bool = False  # throughput: also one run at the chat's full context (peak memory)
    repeats: int = 3
    new_tokens: int = 64
    batch_items: int = DEFAULT_BATCH_ITEMS
    max_new_tokens: int = 24  # generate mode
    isolate: bool = True  # native runtimes in a child process: a crash fails one build, not the run
    progress: bool = False
    force: bool = False  # measure again: this run's earlier records are set aside first (ResultsFile.set_aside)
    torch_dtype: str | None = None  # compute dtype of model folders run by torch (None: the device's default)

    def info(self, build: str | Path) -> BuildInfo:
        return build_info(build, self.torch_dtype, self.device)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build_info(path: str | Path, torch_dtype: str | None = None, device: str = "cpu") -> BuildInfo:
    """Name, format, quantization and size of a build from its manifest (or its files).

    A model folder run by torch in a dtype other than the device's default (`--torch-dtype`) is
    named `NAME-bf16` (`-fp32`, `-fp16`) with that dtype as its quantization: it computes
    differently, so its records must not resume or replace those of the default run.
    """
    info = _stored_build_info(Path(path))
    if not torch_dtype or info.format != "hf":
        return info
    from globmed_edge.backends.transformers_backend import default_dtype, dtype_variant_name

    if torch_dtype == default_dtype(device):
        return info
    return replace(info, name=dtype_variant_name(info.name, torch_dtype), quantization=torch_dtype)


def _stored_build_info(p: Path) -> BuildInfo:
    from globmed_edge.backends import detect_format

    if (p / "manifest.json").is_file():
        from globmed_edge.manifest import load_manifest

        m = load_manifest(p)
        par = m.parity or {}
        return BuildInfo(m.name, str(p), m.format, m.quantization, m.size_bytes, m.bits_per_weight,
                         par.get("passed"), par.get("top1_agreement"), par.get("mean_kl"))
    fmt = detect_format(p)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)]
    quant = "unknown"
    if (p / "config.json").is_file():
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
        quant = str(cfg.get("dtype") or cfg.get("torch_dtype") or "unknown")
    name = p.stem if p.is_file() else p.name
    if (p / "training_card.json").is_file() and p.parent.name:
        name = f"{p.parent.name}-{p.name}"  # runs/gemma-lora/merged -> gemma-lora-merged
    return BuildInfo(name, str(p), fmt, quant, sum(f.stat().st_size for f in files))


def make_record(info: BuildInfo, cfg: RunConfig, data: TaskData, lang: str, out: LangOutcome,
                seconds: float) -> AccuracyRecord:
    items = data.items[lang]
    gold = tuple(i.answer for i in items)
    n = len(items)
    k = sum(p == g for p, g in zip(out.pred, gold, strict=True))
    kt = sum(p == g for p, g in zip(out.pred_text, gold, strict=True)) if out.pred_text else 0
    low, high = wilson(k, n)
    return AccuracyRecord(
        build=info, device=cfg.device, task=cfg.task.task_name, lang=lang, datasets=data.datasets,
        split=cfg.task.split, items_hash=items_hash(items), n=n, correct_letter=k, correct_text=kt,
        accuracy=k / n, accuracy_text=kt / n if out.pred_text else None, ci_low=low, ci_high=high,
        extraction_failures=out.failures, item_ids=tuple(i.id for i in items), gold=gold, pred=out.pred,
        pred_text=out.pred_text, letter_logprobs=out.letter_logprobs, seconds=round(seconds, 3),
        host=platform.node(), created_at=now())


def pending_langs(results: ResultsFile, info: BuildInfo, cfg: RunConfig, data: TaskData) -> list[str]:
    return [lang for lang, its in data.items.items()
            if AccuracyRecord.key_for(info.name, cfg.device, cfg.task.task_name, lang, items_hash(its)) not in results]


def bench_build(cfg: RunConfig, build: str, data: TaskData | None = None,
                log: Callable[[str], None] = print) -> int:
    """Score one build on every pending language in this process; returns records written."""
    from globmed_edge.backends import open_backend

    data = data or load_task(cfg.task)
    info = cfg.info(build)
    results = ResultsFile(cfg.out)
    todo = pending_langs(results, info, cfg, data)
    if not todo:
        return 0
    task = TASKS.load(MODES[cfg.task.mode])
    from globmed_edge.bench.throughput import chat_threads, torch_options

    backend = open_backend(build, device=cfg.device, threads=chat_threads(build, cfg.threads),
                           isolate="native" if cfg.isolate else False, **torch_options(build, cfg.torch_dtype))
    backend.load()
    written = 0
    left = sum(len(data.items[lang]) for lang in todo)
    done_items, done_s = 0, 0.0
    try:
        for lang in todo:
            start = time.perf_counter()
            out = task(backend, data.items[lang], data.shots.get(lang, ()), batch_items=cfg.batch_items,
                       max_new_tokens=cfg.max_new_tokens, progress=cfg.progress)
            rec = make_record(info, cfg, data, lang, out, time.perf_counter() - start)
            written += results.append(rec)
            done_items, done_s, left = done_items + rec.n, done_s + rec.seconds, left - rec.n
            eta = f"; ~{left * done_s / done_items:.0f} s left for this build" if left and done_items else ""
            log(f"{info.name} {lang}: accuracy {rec.accuracy:.3f} (n={rec.n}, "
                f"95% CI {rec.ci_low:.3f}-{rec.ci_high:.3f}) in {rec.seconds:.1f} s{eta}")
    finally:
        backend.close()
    return written


def throughput_record(cfg: RunConfig, build: str) -> ThroughputRecord:
    from globmed_edge.bench.throughput import ThroughputSpec, measure

    info = cfg.info(build)
    res = measure(ThroughputSpec(build, cfg.device, cfg.threads, cfg.repeats, cfg.new_tokens,
                                 long_context=cfg.long_context, dtype=cfg.torch_dtype))
    med, mem, shape, long = res["median"], res["memory"], res.get("kv", {}), res.get("long", {})
    return ThroughputRecord(
        build=info, device=cfg.device, threads=cfg.threads, prompt_tokens=int(med["prompt_tokens"]),
        new_tokens=int(med["new_tokens"]), repeats=cfg.repeats,
        prefill_tokens_per_s=med["prefill_tokens_per_s"], decode_tokens_per_s=med["decode_tokens_per_s"],
        ttft_s=med["ttft_s"], peak_rss_bytes=int(mem["peak_rss_bytes"]),
        cuda_peak_allocated_bytes=mem.get("cuda_peak_allocated_bytes"),
        cuda_reserved_bytes=mem.get("cuda_reserved_bytes"), runs=tuple(res["runs"]),
        hardware=res["hardware"], load=res.get("load", {}), context_tokens=shape.get("context_tokens"),
        kv_bytes_per_token=shape.get("kv_bytes_per_token"), kv_preallocated=shape.get("kv_preallocated"),
        logits_bytes_per_token=shape.get("logits_bytes_per_token"), long_prompt_tokens=long.get("prompt_tokens"),
        long_peak_rss_bytes=long.get("peak_rss_bytes"),
        host=platform.node(), created_at=now())


def run_bench(cfg: RunConfig, log: Callable[[str], None] = print) -> ResultsFile:
    """The whole run: accuracy per build (reference first), throughput, then drift records."""
    from globmed_edge.bench.drift import drift_records

    builds = list(dict.fromkeys(([cfg.reference] if cfg.reference else []) + list(cfg.builds)))
    names = [cfg.info(b).name for b in builds]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"two builds share the name {dup[0]!r}; records are keyed by build name")
    data = load_task(cfg.task)
    from globmed_edge.paths import remember_results_file

    remember_results_file(cfg.out)  # the chat picker reads speed and memory from every results file
    log(f"task {cfg.task.task_name}: {sum(len(v) for v in data.items.values())} items in "
        f"{len(data.items)} language(s): {', '.join(f'{k}={len(v)}' for k, v in data.items.items())}")
    if cfg.task.limit is None:
        per_build = sum(len(v) for v in data.items.values())
        log(f"note: no --limit: every item is scored, {per_build} per build x {len(builds)} build(s) = "
            f"{per_build * len(builds)} items; each language's line gives the time left for its build "
            "(Ctrl+C stops; the same command resumes)")
    if cfg.force:
        _set_aside(cfg, set(names), log)
    failed: list[str] = []
    for build in builds:
        info = cfg.info(build)
        try:
            _bench_one(cfg, build, info, data, log)
        except (BackendError, ModelError) as exc:  # a crashed or unloadable build: the others go on
            failed.append(info.name)
            log(f"{info.name}: FAILED: {exc}")
    results = ResultsFile(cfg.out)
    if cfg.reference:
        ref = cfg.info(cfg.reference).name
        for rec in drift_records(results.records, ref):
            if results.append(rec):
                log(f"drift {rec.build} vs {rec.reference} {rec.lang}: delta {rec.delta:+.3f}, "
                    f"flips {rec.flip_rate:.3f}, McNemar p={rec.mcnemar_p:.3g}")
    if failed:
        raise BenchFailed(f"{len(failed)} of {len(builds)} builds failed ({', '.join(failed)}); the other "
                          f"builds' records are complete in {cfg.out}; rerun the same command to retry "
                          "only what is missing", failed)
    return results


def _set_aside(cfg: RunConfig, names: set[str], log: Callable[[str], None]) -> None:
    """--force: the records this run would skip (these builds on this device: accuracy of this task,
    throughput at these threads, drift involving them) leave the results file for a side file."""
    def match(rec: Record) -> bool:
        if isinstance(rec, AccuracyRecord):
            return rec.build.name in names and rec.device == cfg.device and rec.task == cfg.task.task_name
        if isinstance(rec, ThroughputRecord):
            return cfg.throughput and rec.build.name in names and rec.device == cfg.device \
                and str(rec.threads) == str(cfg.threads)
        return (rec.build in names or rec.reference in names) and rec.device == cfg.device \
            and rec.task == cfg.task.task_name

    moved, aside = ResultsFile(cfg.out).set_aside(match, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    if moved:
        log(f"--force: {moved} earlier record(s) of these builds moved to {aside}; measuring them again")


def _bench_one(cfg: RunConfig, build: str, info: BuildInfo, data: TaskData, log: Callable[[str], None]) -> None:
    """Accuracy (every pending language) and, if asked, throughput of one build."""
    if pending_langs(ResultsFile(cfg.out), info, cfg, data):
        bench_build(cfg, build, data, log)
    else:
        log(f"{info.name}: accuracy records already in {cfg.out}, skipped")
    if not cfg.throughput:
        return
    results = ResultsFile(cfg.out)
    if ThroughputRecord.key_for(info.name, cfg.device, cfg.threads) in results:
        log(f"{info.name}: throughput record already there, skipped")
        return
    rec = throughput_record(cfg, build)
    results.append(rec)
    log(f"{info.name}: decode {rec.decode_tokens_per_s:.1f} tok/s, prefill "
        f"{rec.prefill_tokens_per_s:.1f} tok/s, TTFT {rec.ttft_s * 1000:.0f} ms, "
        f"peak RSS {rec.peak_rss_bytes / 2**20:.0f} MiB")


class BenchFailed(BackendError):
    """Some builds of a run failed (crashed or would not load); the others' records were written."""

    def __init__(self, message: str, builds: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.builds = tuple(builds)
