"""Throughput of one build on one device, measured in a child process of its own.

The parent (`measure`) starts `python -m globmed_edge.bench.throughput SPEC_JSON`; the child
opens the build through the backend protocol, loads it, runs a warm-up generation, then
`repeats` timed greedy generations of the clinic system prompt + a typical question, and prints
one JSON line. Its own process means llama.cpp never shares threads with a torch runtime (its
decode speed collapses there, see TOOLCHAIN.md) and peak RSS is this build's alone.

Definitions (per repeat; the record holds the medians and every repeat):

* TTFT = time of the first streamed token - time the request was made (includes the
  chat-template rendering, tokenisation and the prefill of the whole prompt);
* prefill tokens/s = prompt tokens / TTFT;
* decode tokens/s = (tokens streamed - 1) / (time of last token - time of first token);
* peak RSS = the child's maximum resident set (VmHWM of /proc/self/status on Linux; it counts
  mmapped weight pages that were touched), CUDA: peak allocated and reserved bytes from torch.
  Not ru_maxrss: on Linux a child started by fork + exec inherits its parent's high-water mark
  there, so a child of a `bench run` that had loaded a torch model reported that model's peak.

Threads: `threads="auto"` measures what the chat app gets: GGUF builds open with llama.cpp's
"auto" policy (the physical cores other programs leave free, re-read before each generation),
the other runtimes with their own default, exactly as `tui/loader.py` opens them. The threads
each run used are recorded with it.

Machine load: the CPU time other processes used during the timed runs, as a share of all the
machine's CPUs (`load["other_cpu_share"]`, from /proc/stat-style totals minus this process's own
CPU time), and the 1-minute load average before and after.

Memory in the chat: the model's KV-cache bytes per token, the logits the runtime keeps per prompt
token during a prefill (every position for the ONNX and transformers backends, the last one for
llama.cpp) and the context length the chat opens the build with are recorded (`kv_shape`), so a
report can add what a full conversation costs to the peak RSS measured here on a short prompt; `long_context=True` also runs one
generation after a conversation that fills that context and records its peak RSS, to check the
estimate.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from globmed_edge.errors import BackendError

if TYPE_CHECKING:
    from globmed_edge.backends.base import Backend, GenerationRequest

CLINIC_SYSTEM_PROMPT = (
    "You are a careful medical assistant supporting health workers in a rural clinic with no "
    "internet. Answer clearly and briefly in the language of the question. Say when a patient "
    "needs urgent referral, give drug doses only when you are sure, and never invent facts."
)
TYPICAL_QUESTION = (
    "A 4-year-old child has had a fever of 39 °C for three days, a cough and fast breathing. "
    "What danger signs should I check for, and when should I refer the child to a hospital?"
)
MARK = "GLOBMED_THROUGHPUT_JSON "


@dataclass(frozen=True)
class ThroughputSpec:
    path: str
    device: str = "cpu"
    threads: int | str | None = None
    repeats: int = 3
    new_tokens: int = 64
    backend: str | None = None
    long_context: bool = False
    dtype: str | None = None  # compute dtype of a model folder run by torch (None: its default)


#: The context length assumed for a runtime that does not fix one (transformers): the one the
#: llama.cpp backend opens the chat with (edge/backends/llamacpp_backend.py, DEFAULT_CONTEXT).
CHAT_CONTEXT = 4096


def chat_threads(path: str | Path, threads: int | str | None) -> int | str | None:
    """The `threads` option a backend gets: "auto" means the chat app's policy, which is
    llama.cpp's "auto" for GGUF builds and the runtime's own default for the others."""
    if threads != "auto":
        return threads
    from globmed_edge.backends import detect_format

    return "auto" if detect_format(Path(path)) == "gguf" else None


def torch_options(path: str | Path, dtype: str | None) -> dict[str, Any]:
    """`{"dtype": dtype}` for a model folder (run by torch) when a dtype is asked for, else `{}`:
    the other runtimes have no such option, so `--torch-dtype` leaves their builds as they are."""
    from globmed_edge.backends import detect_format

    return {"dtype": dtype} if dtype and detect_format(Path(path)) == "hf" else {}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kv_shape(path: str | Path, backend: Backend | None = None) -> dict[str, Any]:
    """KV-cache bytes per token, the chat's context length and whether the runtime allocates the
    whole cache at load, from the build's own files (config.json, genai_config.json, GGUF
    metadata) and, when given, the loaded backend; {} when the shape cannot be read."""
    from globmed_edge.backends import detect_format

    p = Path(path)
    fmt = detect_format(p)
    if fmt == "gguf":
        meta = dict(getattr(backend, "metadata", None) or {}) or _gguf_metadata(p)
        arch = str(meta.get("general.architecture", ""))
        layers = meta.get(f"{arch}.block_count")
        heads = meta.get(f"{arch}.attention.head_count")
        kv_heads = meta.get(f"{arch}.attention.head_count_kv") or heads
        k_len = meta.get(f"{arch}.attention.key_length")
        v_len = meta.get(f"{arch}.attention.value_length")
        if not (k_len and v_len) and heads and meta.get(f"{arch}.embedding_length"):
            k_len = v_len = int(meta[f"{arch}.embedding_length"]) // int(heads)
        if not (layers and kv_heads and k_len and v_len):
            return {}
        per_token = int(layers) * int(kv_heads) * (int(k_len) + int(v_len)) * 2  # llama.cpp's f16 cache
        ctx = int(getattr(backend, "n_ctx", 0) or CHAT_CONTEXT)
        # the backend opens llama.cpp with logits_all=False: a prefill keeps the last position's logits only
        return {"kv_bytes_per_token": per_token, "context_tokens": ctx, "kv_preallocated": True,
                "logits_bytes_per_token": 0}
    if fmt == "onnx":
        model = _json(p / "genai_config.json").get("model", {})
        dec = model.get("decoder", {}) if isinstance(model, dict) else {}
        try:
            layers, kv_heads, head = int(dec["num_hidden_layers"]), int(dec["num_key_value_heads"]), int(dec["head_size"])
        except (KeyError, TypeError, ValueError):
            return {}
        itemsize = 4  # onnxruntime-genai's CPU builds keep a float32 cache
        kv_dtype = getattr(backend, "_kv_dtype", None)
        if kv_dtype is not None:
            import numpy as np

            itemsize = int(np.dtype(kv_dtype).itemsize)
        ctx = int(getattr(backend, "_context", 0) or model.get("context_length") or 2048)
        vocab = int(model.get("vocab_size") or 0)
        # the genai graph returns float32 logits for every position of the block it is fed
        return {"kv_bytes_per_token": 2 * layers * kv_heads * head * itemsize, "context_tokens": ctx,
                "kv_preallocated": False, **({"logits_bytes_per_token": 4 * vocab} if vocab else {})}
    cfg = _json(p / "config.json")
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    try:
        layers, heads = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return {}
    model_dtype = getattr(getattr(backend, "model", None), "dtype", None)
    itemsize = int(getattr(model_dtype, "itemsize", 0) or 4)  # the transformers backend runs fp32 on CPU
    ctx = min(int(cfg.get("max_position_embeddings") or CHAT_CONTEXT), CHAT_CONTEXT)
    vocab = int(cfg.get("vocab_size") or 0)
    # a transformers forward pass over the prompt computes logits for every position
    return {"kv_bytes_per_token": 2 * layers * kv_heads * head * itemsize, "context_tokens": ctx,
            "kv_preallocated": False, **({"logits_bytes_per_token": itemsize * vocab} if vocab else {})}


def _gguf_metadata(path: Path) -> dict[str, Any]:
    """Integer metadata of a GGUF file (or of the one .gguf in a folder) through gguf-py."""
    files = [path] if path.is_file() else [f for f in sorted(path.glob("*.gguf")) if "imatrix" not in f.name]
    if len(files) != 1:
        return {}
    try:
        from gguf import GGUFReader
    except ImportError:
        return {}
    out: dict[str, Any] = {}
    reader = GGUFReader(str(files[0]))
    for name, fld in reader.fields.items():
        if name == "general.architecture":
            out[name] = bytes(fld.parts[fld.data[0]]).decode("utf-8")
        elif len(fld.data) == 1 and len(fld.parts[fld.data[0]]) == 1:
            value = fld.parts[fld.data[0]][0]
            if hasattr(value, "item") and isinstance(value.item(), int):
                out[name] = int(value.item())
    return out


def _peak(backend: Backend) -> int:
    from globmed_edge.backends.base import own_peak_rss

    own = own_peak_rss()
    return own if own is not None else int(backend.memory().peak_rss_bytes)


def _cpu_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process) so far."""
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    own = psutil.Process().cpu_times()
    return sum(t) - idle, own.user + own.system


def machine_load(start: tuple[float, float, float], end: tuple[float, float, float]) -> dict[str, float]:
    """Other processes' CPU use between two (wall, busy, own) samples, as a share of all CPUs."""
    cpus = os.cpu_count() or 1
    wall = max(end[0] - start[0], 1e-9)
    other = max(0.0, (end[1] - start[1]) - (end[2] - start[2]))
    return {"other_cpu_share": round(min(1.0, other / (wall * cpus)), 4), "cpus": float(cpus),
            "wall_s": round(wall, 3)}


def _sample() -> tuple[float, float, float]:
    busy, own = _cpu_busy()
    return time.perf_counter(), busy, own


def long_conversation(backend: Backend, context: int, new_tokens: int) -> GenerationRequest:
    """A chat request whose rendered prompt nearly fills `context` tokens: earlier turns of
    questions and answers, then the typical question, leaving room for `new_tokens`."""
    from globmed_edge.backends.base import GenerationRequest, Message

    answer = ("Check for danger signs: inability to drink, vomiting everything, convulsions, lethargy, "
              "chest indrawing and stridor. Count the breathing rate for a full minute. ")
    target = context - new_tokens - 8
    turns: list[Message] = [Message("system", CLINIC_SYSTEM_PROMPT)]
    question = Message("user", TYPICAL_QUESTION)

    def size(msgs: list[Message]) -> int:
        return len(backend.tokenize(backend.render_chat(msgs)))

    step = max(1, size([*turns, question, Message("assistant", answer)]) - size(turns))
    while size([*turns, question]) + step < target:
        turns += [question, Message("assistant", answer)]
    return GenerationRequest(messages=(*turns, question), max_new_tokens=new_tokens)


def _one(backend: Backend, new_tokens: int) -> dict[str, float]:
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.backends.timing import StreamTiming

    req = GenerationRequest.from_text(TYPICAL_QUESTION, system=CLINIC_SYSTEM_PROMPT, max_new_tokens=new_tokens)
    reset = getattr(backend, "reset_cache", None)
    if reset is not None:  # a backend that keeps its KV cache between calls must prefill anew
        reset()
    timing = StreamTiming.of(time.perf_counter(), backend.stream(req))
    if timing.ttft_s is None:
        raise BackendError(f"{backend.path}: generated no tokens")
    ttft, prompt_tokens, decode = timing.ttft_s, timing.prompt_tokens or 0, timing.decode_tokens_per_s
    return {"ttft_s": ttft, "prompt_tokens": float(prompt_tokens), "new_tokens": float(timing.tokens),
            "prefill_tokens_per_s": prompt_tokens / ttft if ttft > 0 else float("nan"),
            "decode_tokens_per_s": float("nan") if decode is None else decode}


def run_in_this_process(spec: ThroughputSpec) -> dict[str, Any]:
    """Load, warm up, time `repeats` runs; medians + every run + memory + load + KV shape +
    hardware, and with `long_context` the peak RSS after a conversation that fills the context."""
    from globmed_edge.backends import open_backend
    from globmed_edge.bench.hardware import profile

    backend = open_backend(spec.path, spec.backend, device=spec.device,
                           threads=chat_threads(spec.path, spec.threads), **torch_options(spec.path, spec.dtype))
    backend.load()
    long: dict[str, Any] = {}
    try:
        _one(backend, min(8, spec.new_tokens))  # warm-up: caches, kernels, page-in of weights
        runs = []
        start = _sample()
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        for _ in range(spec.repeats):
            run = _one(backend, spec.new_tokens)
            used = getattr(backend, "current_threads", None)
            if used:
                run["threads_used"] = float(used)
            runs.append(run)
        load = machine_load(start, _sample())
        load["loadavg_1m_before"] = load_before
        load["loadavg_1m_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        mem = asdict(backend.memory())
        mem["peak_rss_bytes"] = _peak(backend)
        shape = kv_shape(spec.path, backend)
        if spec.long_context and shape:
            reset = getattr(backend, "reset_cache", None)
            if reset is not None:
                reset()
            req = long_conversation(backend, int(shape["context_tokens"]), min(16, spec.new_tokens))
            prompt = len(backend.tokenize(backend.render_chat(req.messages)))
            for _ev in backend.stream(req):
                pass
            long = {"prompt_tokens": prompt, "peak_rss_bytes": _peak(backend)}
    finally:
        backend.close()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"runs": runs, "median": med, "memory": mem, "hardware": profile(),
            "backend": type(backend).__name__, "load": load, "kv": shape, "long": long}


def measure(spec: ThroughputSpec, *, timeout: float = 1800) -> dict[str, Any]:
    """Run `run_in_this_process` in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, "-m", "globmed_edge.bench.throughput", json.dumps(asdict(spec))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{spec.path}: throughput child timed out after {timeout:.0f} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK):])
            if "error" in result:
                raise BackendError(f"{spec.path}: throughput child failed: {result['error']}")
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode < 0:  # the runtime died (SIGSEGV, SIGILL, OOM kill): say so, and what to try
        from globmed_edge.backends import FORMAT_BACKEND, detect_format
        from globmed_edge.backends.isolated import RuntimeCrash, crash_message

        runtime = spec.backend or FORMAT_BACKEND.get(detect_format(Path(spec.path)), "the")
        raise RuntimeCrash(crash_message(runtime, f"{Path(spec.path).name} (throughput)", proc.returncode, tail),
                           -proc.returncode)
    raise BackendError(f"{spec.path}: throughput child exited {proc.returncode} ({tail})")


def main(argv: list[str]) -> int:
    from globmed_edge.backends.isolated import die_with_parent
    from globmed_edge.errors import GlobmedError

    die_with_parent()  # a killed `bench run` leaves no measurement running behind it
    spec = ThroughputSpec(**json.loads(argv[0]))
    try:
        result = run_in_this_process(spec)
    except GlobmedError as exc:
        print(MARK + json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
