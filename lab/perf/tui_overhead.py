"""What the chat UI costs: the same build driven by the TUI (headless) and directly by its backend.

Measures, in one process and with the runs interleaved (direct, TUI, direct, TUI, ...):

* time to first paint and time to model ready of the app (`make_app(...).run_test`, headless);
* time to first token and decode tokens/s of the same greedy request, through the app (its
  worker thread, and for llama.cpp/onnx builds the runtime's child process) and directly through
  an in-process `backend.stream` (same system prompt, question and token budget), the direct
  runs in a fresh thread like the app's worker. Nothing decodes on the main thread: while
  a thread that has run llama.cpp's OpenMP compute is alive, decoding from any other thread is
  ~40% slower (docs/backends.md, "Threads"), and the main thread lives as long as the process;
* key presses handled while tokens stream (latency of `pilot.press` and that the text arrived).

Prints medians and the TUI/direct ratio. Target: the UI costs < 5% of decode throughput.
One backend per process (see TOOLCHAIN.md: never time llama.cpp in a process that used torch).

    python lab/perf/tui_overhead.py [BUILD] [--runs 5] [--tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

QUESTION = "What are the danger signs of dehydration in a young child?"


def load_direct(build: Path):
    """The build's backend in this process, with the app's options but no worker process: the
    app serves native runtimes from a child process (tui/loader.py), so TUI/direct includes the
    cost of that process boundary as well as the UI's."""
    from globmed_edge.backends import detect_format, open_backend

    backend = open_backend(build, isolate=False, **({"threads": "auto"} if detect_format(build) == "gguf" else {}))
    backend.load()
    return backend


def direct_in_thread(backend, tokens: int) -> tuple[float, float, int]:
    """`direct_run` in a fresh thread, as the app's worker runs generation (same context)."""
    out: list[tuple[float, float, int]] = []
    t = threading.Thread(target=lambda: out.append(direct_run(backend, tokens)))
    t.start()
    t.join()
    return out[0]


def direct_run(backend, tokens: int) -> tuple[float, float, int]:
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.tui.i18n import system_prompt

    req = GenerationRequest.from_text(QUESTION, system=system_prompt("en"), max_new_tokens=tokens)
    start = time.perf_counter()
    times = [ev.time for ev in backend.stream(req) if ev.text or ev.token_id is not None]
    ttft = times[0] - start
    tps = (len(times) - 1) / (times[-1] - times[0])
    return ttft, tps, len(times)


async def tui_run(build: Path, tokens: int, db: Path, keys: bool) -> dict[str, float]:
    from textual import events

    from globmed_edge.tui.app import make_app
    from globmed_edge.tui.store import ChatStore
    from globmed_edge.tui.widgets import ChatInput, MessageBox

    store = ChatStore(db)
    app = make_app(build, store=store, max_new_tokens=tokens)
    out: dict[str, float] = {}
    async with app.run_test(size=(80, 24)) as pilot:
        while app.first_paint is None:
            await pilot.pause(0.001)
        out["first_paint_s"] = app.first_paint
        while app.chat is None or app.chat.backend is None:
            await pilot.pause(0.01)
        out["model_ready_s"] = app.model_ready or float("nan")
        chat = app.chat
        chat.query_one(ChatInput).insert(QUESTION)
        # Enter posted as the terminal driver would: pilot.press would wait for the app to go
        # idle, i.e. (nearly) for the whole answer, and the key loop below would see none of it.
        app.post_message(events.Key("enter", "\r"))
        latencies: list[float] = []
        field = chat.query_one(ChatInput)
        while True:
            box = [b for b in chat.query(MessageBox) if b.role == "assistant"]
            if box and box[-1].status not in ("streaming",):
                break
            if keys and box and box[-1].body and len(latencies) < 20:
                # Inject a key as the terminal driver would and time until the input shows it.
                # (pilot.press waits for the whole process to go idle, which it never does while
                # decoding, so it would measure its own 2 s timeout.)
                want = field.text + "k"
                t = time.perf_counter()
                app.post_message(events.Key("k", "k"))
                while field.text != want and time.perf_counter() - t < 5:
                    await asyncio.sleep(0.0005)
                latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.25 if not keys else 0.05)  # light polling: this loop shares the UI thread
        if keys:
            out["keys_pressed"] = len(latencies)
            out["keys_arrived"] = chat.query_one(ChatInput).text.count("k")
            out["key_latency_ms"] = 1000 * statistics.median(latencies) if latencies else float("nan")
        meta = store.messages(store.list_conversations()[0].id)[-1].meta
        out["ttft_s"], out["decode_tps"], out["tokens"] = meta["ttft_s"], meta["tokens_per_s"], meta["tokens"]
    store.close()  # the backend was closed with the chat screen, when the app ended
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", nargs="?", default="smollm2-135m-instruct")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()

    from globmed_edge.paths import force_offline

    force_offline()
    t0 = time.perf_counter()
    import globmed_edge.tui.app  # noqa: F401  (textual + the app, cold)

    import_s = time.perf_counter() - t0
    from globmed_edge.tui.loader import resolve_build

    build = resolve_build(args.build)
    t0 = time.perf_counter()
    backend = load_direct(build)
    direct_load_s = time.perf_counter() - t0
    direct_in_thread(backend, 4)  # warm-up (first call pays one-off allocations)

    direct, tui = [], []
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(tui_run(build, 4, Path(tmp) / "warm.sqlite3", keys=False))  # warm-up
        for i in range(args.runs):
            # A freshly loaded backend per run, as each TUI run loads its own: llama.cpp keeps its
            # KV cache between calls, so a reused backend would skip the prefill of the same prompt.
            fresh = load_direct(build)
            direct.append(direct_in_thread(fresh, args.tokens))
            fresh.close()
            tui.append(asyncio.run(tui_run(build, args.tokens, Path(tmp) / f"{i}.sqlite3", keys=False)))
        keyrun = asyncio.run(tui_run(build, args.tokens, Path(tmp) / "keys.sqlite3", keys=True))
    backend.close()

    med = statistics.median
    d_ttft, d_tps = med(r[0] for r in direct), med(r[1] for r in direct)
    t_ttft, t_tps = med(r["ttft_s"] for r in tui), med(r["decode_tps"] for r in tui)
    print(f"build: {build}  ({backend.name} backend)  runs: {args.runs}  tokens: {args.tokens}")
    print(f"import globmed_edge.tui.app (cold):   {import_s:7.3f} s")
    print(f"TUI first paint (median):             {med(r['first_paint_s'] for r in tui):7.3f} s")
    print(f"TUI model ready (median):             {med(r['model_ready_s'] for r in tui):7.3f} s"
          f"   direct load: {direct_load_s:.3f} s (first, cold)")
    print(f"time to first token   direct {d_ttft:7.3f} s   TUI {t_ttft:7.3f} s   ratio {t_ttft / d_ttft:5.3f}")
    print(f"decode tokens/s       direct {d_tps:7.2f}     TUI {t_tps:7.2f}     ratio {t_tps / d_tps:5.3f}"
          f"   (UI cost {100 * (1 - t_tps / d_tps):+.1f}%)")
    print(f"per-run decode tok/s  direct {[round(r[1], 1) for r in direct]}  TUI {[round(r['decode_tps'], 1) for r in tui]}")
    print(f"keys while streaming: pressed {keyrun['keys_pressed']:.0f}, arrived {keyrun['keys_arrived']:.0f}, "
          f"median handling {keyrun['key_latency_ms']:.1f} ms; decode in that run {keyrun['decode_tps']:.2f} tok/s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
