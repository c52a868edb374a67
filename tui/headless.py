"""One-shot mode (`globmed-edge chat BUILD --prompt "..."`): stream one answer to stdout, no UI.

stdout carries only the answer, so scripts can capture it; the safety notice, any emergency
reminder and the speed line go to stderr. No history is written.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from globmed_edge.errors import Interrupted
from globmed_edge.tui.i18n import Translator
from globmed_edge.tui.loader import BackendFactory, build_label, load_backend
from globmed_edge.tui.safety import emergency_reminder
from globmed_edge.tui.session import DEFAULT_REPETITION_PENALTY, ChatSession, StreamStats

#: How long Ctrl+C waits for the answer to stop between tokens before the process exits anyway.
STOP_WAIT_S = 30.0


def _wait_quietly(event: threading.Event, timeout: float) -> None:
    """Wait for `event`, ignoring further Ctrl+C presses meanwhile (the stop is under way)."""
    import time

    deadline = time.monotonic() + timeout
    while not event.is_set() and time.monotonic() < deadline:
        try:
            event.wait(0.1)
        except KeyboardInterrupt:
            continue


def run_prompt(build: Path, prompt: str, *, lang: str = "en", max_new_tokens: int = 256,
               temperature: float = 0.0, out: TextIO | None = None, err: TextIO | None = None,
               backend_factory: BackendFactory | None = None,
               repetition_penalty: float | None = None) -> StreamStats:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    tr = Translator(lang)
    err.write(f"⚕ {tr('safety_notice')}\n")
    reminder = emergency_reminder(prompt, lang)
    if reminder:
        err.write(f"⚠ {reminder}\n")
    session = ChatSession(load_backend(build, backend_factory), lang=lang, build=build_label(build),
                          max_new_tokens=max_new_tokens, temperature=temperature,
                          repetition_penalty=DEFAULT_REPETITION_PENALTY if repetition_penalty is None
                          else repetition_penalty)
    session.add_question(prompt)
    result: list[StreamStats] = []
    failure: list[BaseException] = []
    cancel = threading.Event()
    finished = threading.Event()

    def generate() -> None:
        stats = StreamStats(0.0)
        try:
            for delta, current in session.stream_answer(cancel):
                stats = current
                out.write(delta)
                out.flush()
        except BaseException as exc:
            failure.append(exc)
        finally:
            result.append(stats)
            finished.set()

    # Generate in a short-lived worker thread, as the app does: the main thread never decodes
    # (llama.cpp decodes ~40% slower from any thread while another that used it is alive; see
    # docs/backends.md, "Threads"), and Ctrl+C cancels cleanly between tokens. The backend is closed only once the
    # worker has really finished: after a KeyboardInterrupt in join(), CPython 3.11's next join()
    # can return while the thread still runs (so `finished`, not join, is waited on), and freeing a
    # model under a running decode was a use-after-free (SIGSEGV). Native runtimes also run in a
    # child process (tui/loader.py), which never sees the terminal's SIGINT.
    worker = threading.Thread(target=generate, name="globmed-generate", daemon=True)
    interrupted = False
    try:
        worker.start()
        while not finished.wait(0.1):
            pass
    except KeyboardInterrupt:
        interrupted = True
        cancel.set()
        _wait_quietly(finished, STOP_WAIT_S)
    finally:
        if finished.is_set():
            session.close()
        # else: a runtime that did not stop in time keeps its memory until exit (daemon thread)
    if interrupted:
        out.write("\n")
        out.flush()
        raise Interrupted("interrupted: the answer was stopped")
    if failure:
        raise failure[0]
    out.write("\n")
    out.flush()
    stats = result[0]
    if session.turns and session.turns[-1].status == "cut":  # an answer cut at --max-tokens says so
        err.write(f"✂ {tr('cut')}\n")
    tps, ttft = stats.tokens_per_second, stats.ttft
    err.write(tr("stats", tps="–" if tps is None else f"{tps:.1f}",
                 ttft="–" if ttft is None else f"{ttft:.2f}") + "\n")
    return stats
