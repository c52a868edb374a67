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
* peak RSS = the child's maximum resident set (ru_maxrss; it counts mmapped weight pages that
  were touched), CUDA: peak allocated and reserved bytes from torch.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from globmed_edge.errors import BackendError

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
    threads: int | None = None
    repeats: int = 3
    new_tokens: int = 64
    backend: str | None = None


def _one(backend: Any, new_tokens: int) -> dict[str, float]:
    from globmed_edge.backends.base import GenerationRequest

    req = GenerationRequest.from_text(TYPICAL_QUESTION, system=CLINIC_SYSTEM_PROMPT, max_new_tokens=new_tokens)
    reset = getattr(backend, "reset_cache", None)
    if reset is not None:  # a backend that keeps its KV cache between calls must prefill anew
        reset()
    start = time.perf_counter()
    times: list[float] = []
    prompt_tokens = 0
    for ev in backend.stream(req):
        times.append(ev.time)
        if ev.prompt_tokens:
            prompt_tokens = ev.prompt_tokens
    if not times:
        raise BackendError(f"{backend.path}: generated no tokens")
    ttft = times[0] - start
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")
    return {"ttft_s": ttft, "prompt_tokens": float(prompt_tokens), "new_tokens": float(len(times)),
            "prefill_tokens_per_s": prompt_tokens / ttft if ttft > 0 else float("nan"),
            "decode_tokens_per_s": decode}


def run_in_this_process(spec: ThroughputSpec) -> dict[str, Any]:
    """Load, warm up, time `repeats` runs; medians + every run + memory + hardware."""
    from globmed_edge.backends import open_backend
    from globmed_edge.bench.hardware import profile

    backend = open_backend(spec.path, spec.backend, device=spec.device, threads=spec.threads)
    backend.load()
    try:
        _one(backend, min(8, spec.new_tokens))  # warm-up: caches, kernels, page-in of weights
        runs = [_one(backend, spec.new_tokens) for _ in range(spec.repeats)]
        mem = backend.memory()
    finally:
        backend.close()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"runs": runs, "median": med, "memory": asdict(mem), "hardware": profile(),
            "backend": type(backend).__name__}


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
    raise BackendError(f"{spec.path}: throughput child exited {proc.returncode} ({tail})")


def main(argv: list[str]) -> int:
    from globmed_edge.errors import GlobmedError

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
