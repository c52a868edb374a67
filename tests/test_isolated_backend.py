"""The process boundary (edge/backends/isolated.py): a backend served from a child process.

A scripted backend (below) runs in the child; it can crash the child with a real signal at load
or mid-stream, so every test here sees a real native-style death, not a simulated exception.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from globmed_edge.backends.base import (
    Capabilities,
    GenerationRequest,
    MemoryReport,
    Message,
    ScoreRequest,
    ScoreResult,
    TokenEvent,
    process_memory,
)
from globmed_edge.backends.isolated import (
    IsolatedBackend,
    RuntimeCrash,
    crash_message,
    run_isolated,
)
from globmed_edge.errors import BackendError, ConfigError

WORDS = ["Give ", "oral ", "rehydration ", "salts ", "and ", "refer."]
TARGET = f"{__name__}:ScriptedBackend"


class ScriptedBackend:
    """Replays WORDS; the prompt "segv"/"abort" kills the process with that signal after two tokens."""

    name: ClassVar[str] = "scripted"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, path: str | Path, *, crash_on_load: str | None = None, delay: float = 0.0,
                 fail_on_load: str | None = None) -> None:
        self.path = Path(path)
        self.crash_on_load = crash_on_load
        self.fail_on_load = fail_on_load
        self.delay = delay

    def load(self) -> None:
        if self.crash_on_load:
            os.kill(os.getpid(), getattr(signal, self.crash_on_load))
        if self.fail_on_load:
            raise ConfigError(self.fail_on_load)

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m.role}>{m.content}" for m in messages) + ("<a>" if add_generation_prompt else "")

    def stream(self, request: GenerationRequest, *, cancel: threading.Event | None = None) -> Iterator[TokenEvent]:
        prompt = request.messages[-1].content
        words = WORDS[: request.max_new_tokens]
        for i, word in enumerate(words):
            if cancel is not None and cancel.is_set():
                yield TokenEvent("", i, time.perf_counter(), finish_reason="cancelled")
                return
            if i == 2 and prompt in ("segv", "abort"):
                os.kill(os.getpid(), signal.SIGSEGV if prompt == "segv" else signal.SIGABRT)
            time.sleep(self.delay)
            last = i == len(words) - 1
            end: Literal["length", "stop"] | None = ("length" if len(words) < len(WORDS) else "stop") if last else None  # "length": cut at the budget
            yield TokenEvent(word, i, time.perf_counter(), token_id=i,
                             finish_reason=end, prompt_tokens=len(prompt) if i == 0 else None)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return [ScoreResult(-float(len(r.continuation)), len(r.continuation), True) for r in requests]

    def logprobs(self, token_ids: Sequence[int]):
        import numpy as np

        return np.full((len(token_ids), 4), -np.log(4.0))

    def memory(self) -> MemoryReport:
        rss, peak = process_memory()
        return MemoryReport(rss, peak)

    def close(self) -> None:
        pass


def _open(**options: object) -> IsolatedBackend:
    be = IsolatedBackend("scripted-build", "scripted", target=TARGET, **options)
    be.load()
    return be


def test_calls_and_stream_cross_the_process_boundary():
    be = _open()
    try:
        assert be.alive and be.pid != os.getpid()
        events = list(be.stream(GenerationRequest.from_text("fever", max_new_tokens=10)))
        assert "".join(e.text for e in events) == "".join(WORDS)
        assert events[-1].finish_reason == "stop" and events[0].prompt_tokens == 5
        cut = list(be.stream(GenerationRequest.from_text("fever", max_new_tokens=3)))
        assert [e.text for e in cut] == WORDS[:3] and cut[-1].finish_reason == "length"
        assert be.tokenize("ab") == [97, 98]
        assert be.render_chat([Message("user", "hi")]) == "<user>hi<a>"
        assert be.score([ScoreRequest("Q:", " AB")]) == [ScoreResult(-3.0, 3, True)]
        assert be.logprobs([1, 2, 3]).shape == (3, 4)
        mem = be.memory()
        assert mem.rss_bytes > 0  # the child's own memory: that is where the model lives
    finally:
        be.close()
    assert not be.alive


def test_errors_in_the_child_keep_their_class_and_message():
    be = IsolatedBackend("scripted-build", "scripted", target=TARGET, fail_on_load="bad value x=3")
    with pytest.raises(ConfigError, match="^bad value x=3$"):
        be.load()
    be.close()
    with pytest.raises(BackendError, match="before load"):
        IsolatedBackend("b", "scripted", target=TARGET).tokenize("x")


def test_a_crash_mid_stream_raises_runtime_crash_and_this_process_lives():
    be = _open()
    got: list[str] = []
    with pytest.raises(RuntimeCrash) as info:
        for e in be.stream(GenerationRequest.from_text("segv")):
            got.append(e.text)
    assert got == WORDS[:2]  # what was streamed before the crash arrived
    assert info.value.signal_number == signal.SIGSEGV
    msg = str(info.value)
    assert "crashed with SIGSEGV" in msg and "scripted runtime" in msg and "CPU " in msg
    assert "\n" not in msg
    assert not be.alive
    be.close()  # closing a dead backend is quiet
    be.load()  # and it can be reloaded: the user picks the build again
    assert be.tokenize("a") == [97]
    be.close()


def test_an_illegal_instruction_at_load_says_what_to_install():
    be = IsolatedBackend("b", "scripted", target=TARGET, crash_on_load="SIGILL")
    with pytest.raises(RuntimeCrash, match="crashed with SIGILL.*portable wheel"):
        be.load()


def test_abort_is_reported_with_the_fault_handlers_line():
    be = _open()
    with pytest.raises(RuntimeCrash, match="SIGABRT.*last output: Fatal Python error: Aborted"):
        list(be.stream(GenerationRequest.from_text("abort")))


def test_cancel_stops_between_tokens_and_an_early_break_does_not_leak_into_the_next_call():
    be = _open(delay=0.05)
    try:
        cancel = threading.Event()
        events = []
        for e in be.stream(GenerationRequest.from_text("q"), cancel=cancel):
            events.append(e)
            cancel.set()
        assert events[-1].finish_reason == "cancelled" and len(events) < len(WORDS)
        for _ in be.stream(GenerationRequest.from_text("q")):
            break  # the caller stops reading
        again = list(be.stream(GenerationRequest.from_text("q", max_new_tokens=2)))
        assert [e.text for e in again] == WORDS[:2]
    finally:
        be.close()


def test_the_child_is_outside_the_terminals_process_group():
    """Ctrl+C goes to the foreground process group: only the parent may receive it."""
    be = _open()
    try:
        assert be.pid is not None
        assert os.getpgid(be.pid) != os.getpgid(0)
    finally:
        be.close()


def test_the_child_dies_with_its_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from globmed_edge.backends.isolated import IsolatedBackend\n"
        f"be = IsolatedBackend('b', 'scripted', target={TARGET!r})\n"
        "be.load()\n"
        "print(be.pid, flush=True)\n"
        "time.sleep(60)\n", encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"runtime child {child} outlived its killed parent")
    finally:
        parent.kill()


def test_run_isolated_returns_or_reports_the_crash():
    assert run_isolated(os.getpid, runtime="probe", what="test") != os.getpid()
    with pytest.raises(RuntimeCrash, match="probe runtime crashed with SIGSEGV on canary"):
        run_isolated(os.kill, 0, signal.SIGSEGV, runtime="probe", what="canary")  # pid 0: its own group


def test_crash_message_names_signal_and_hint():
    assert "out of memory" in crash_message("llamacpp", "b", -signal.SIGKILL)
    assert "exited unexpectedly (status 3)" in crash_message("onnx", "b", 3)


def test_the_childs_peak_memory_is_its_own_not_the_parents():
    """ru_maxrss survives fork + exec: a child of a process that once held 400 MB reported 400 MB."""
    ballast = bytearray(400 * 2**20)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # touch every page
    be = _open()
    try:
        assert be.memory().peak_rss_bytes < 300 * 2**20
    finally:
        be.close()
        del ballast


def test_a_runtime_child_starts_with_the_builds_its_parent_verified(tmp_path, monkeypatch):
    """The parent's verification is handed to the child (no second hash of the same files), and
    counts there only while the files' stat signature is unchanged."""
    from globmed_edge import trust
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest

    build = tmp_path / "b-q8_0"
    build.mkdir()
    (build / "b-q8_0.gguf").write_bytes(b"GGUF" + bytes(100))
    write_manifest(build, Manifest(name="b-q8_0", format="gguf", quantization="q8_0", bits_per_weight=8.5,
                                   files=hash_build_files(build), source={"path": "t"}))
    assert trust.check_model(build).status == "verified"
    snapshot = trust.memo_snapshot()
    monkeypatch.setattr(trust, "_memo", {})  # a fresh process (the child)
    trust.seed_memo(snapshot)
    hashed: list[Path] = []
    real = trust.require_valid_build

    def counting(f: Path) -> object:
        hashed.append(f)
        return real(f)

    monkeypatch.setattr(trust, "require_valid_build", counting)
    assert trust.check_model(build).status == "verified" and hashed == []
    (build / "b-q8_0.gguf").write_bytes(b"GGUF" + bytes(101))  # changed since the parent checked
    with pytest.raises(trust.ManifestError):
        trust.check_model(build)
    assert hashed == [build]
