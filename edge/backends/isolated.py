"""A backend in a child process: a native crash costs one build's work, never the caller.

llama.cpp and onnxruntime are C++: a segfault, an illegal instruction (a runtime compiled for
another CPU) or an abort in them ends the process they run in. `IsolatedBackend` implements the
`Backend` protocol by driving the real backend in a child process (requests and results are
pickled over a socket pair; streamed tokens come back one message each), so quantize's parity
check, bench and the chat get the same isolation by how they open a backend (`open_backend(...,
isolate="native")`). When the child dies, the call in progress raises `RuntimeCrash`: a one-line
reason with the signal, the runtime, this CPU and what to try.

The child:
* is a fresh interpreter started with subprocess (no fork of a process that has threads or a
  loaded model, no re-import of the caller's __main__), in a process group of its own;
* never sees the terminal's Ctrl+C (and ignores SIGINT): the parent cancels the generation
  between tokens and then closes the child, so native code never runs while its context is freed;
* exits when its parent dies (it watches its parent pid), so no runtime outlives the command;
* writes its stdout/stderr (llama.cpp's and Python's fault handler's) to a log file whose last
  line goes into the crash message; the file is removed on close.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import socket
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from globmed_edge.backends.base import (
    Backend,
    Capabilities,
    GenerationRequest,
    MemoryReport,
    Message,
    ScoreRequest,
    ScoreResult,
    TokenEvent,
)
from globmed_edge.backends.common import loaded
from globmed_edge.errors import BackendError, GlobmedError

if TYPE_CHECKING:
    import numpy as np

#: Methods of the real backend the parent may call in the child (besides stream and close).
CALLS = frozenset({"load", "tokenize", "detokenize", "render_chat", "score", "logprobs", "memory",
                   "reset_cache"})
_POLL_S = 0.05
_WATCH_S = 0.25


class RuntimeCrash(BackendError):
    """The runtime's process died (a signal or an unexpected exit) while serving a build."""

    def __init__(self, message: str, signal_number: int | None = None) -> None:
        super().__init__(message)
        self.signal_number = signal_number


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_HINTS = {
    signal.SIGILL: "this runtime uses instructions this CPU lacks (a llama-cpp-python compiled for "
                   "another machine): install the portable wheel (scripts/llama-cpp-wheel.sh)",
    signal.SIGKILL: "it was killed (out of memory?): close other programs or try a smaller build",
}


def crash_message(runtime: str, what: str, exitcode: int | None, log_tail: str = "") -> str:
    """The one line a user reads when the runtime process died: signal, runtime, CPU, what to try."""
    from globmed_edge.cpu import cpu_info

    cpu = cpu_info()
    if exitcode is not None and exitcode < 0:
        how = f"crashed with {signal_name(-exitcode)}"
        hint = next((h for sig, h in _HINTS.items() if sig == -exitcode), "")
    else:
        how, hint = f"exited unexpectedly (status {exitcode})", ""
    hint = hint or "try another build of this model; `globmed-edge doctor` checks every build here"
    features = ", ".join(cpu.features) or "no SIMD features found"
    tail = f"; last output: {log_tail[:160]}" if log_tail else ""
    return f"{runtime} runtime {how} on {what} (CPU {cpu.model}: {features}){tail}; {hint}"


def _log_tail(path: Path) -> str:
    """The last informative line of a child's log ("Fatal Python error: ..." or llama.cpp's)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        text = " ".join(line.split())
        if text and not text.startswith(("File ", "Current thread", "Thread ", "Extension modules", "<no Python")):
            return text
    return ""


def _portable_error(exc: BaseException) -> tuple[str, str]:
    """(class name, message) of an error raised in the child, to re-raise it in the parent."""
    if isinstance(exc, GlobmedError):
        return type(exc).__name__, str(exc)
    return "BackendError", f"{type(exc).__name__}: {exc}"


def _rebuild_error(name: str, message: str) -> GlobmedError:
    """The child's error as the same class of globmed_edge.errors (message kept, no __init__ rerun)."""
    from globmed_edge import errors

    found = getattr(errors, name, None)
    cls: type[GlobmedError] = (found if isinstance(found, type) and issubclass(found, GlobmedError)
                               else BackendError)
    exc = Exception.__new__(cls)
    Exception.__init__(exc, message)
    return exc


class _CancelFlag:
    """The child's view of the parent's cancel: set when the parent cancelled stream `seq`."""

    def __init__(self, sock: socket.socket) -> None:
        self.current = 0
        self.cancelled = -1
        self._sock = sock
        threading.Thread(target=self._read, name="globmed-cancel", daemon=True).start()

    def _read(self) -> None:
        while True:
            data = self._sock.recv(8)
            if len(data) < 8:
                return
            self.cancelled = struct.unpack("<q", data)[0]

    def is_set(self) -> bool:
        return self.cancelled == self.current


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_S)
    os._exit(3)  # the parent is gone: nothing may keep running (or writing) after it


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this (child) process exit as soon as its parent (`parent_pid`, default: the current
    parent) is gone, whatever it is doing."""
    threading.Thread(target=_watch_parent, args=(parent_pid or os.getppid(),), name="globmed-parent-watch",
                     daemon=True).start()


def child_entry() -> None:
    """The child process (argv: data fd, cancel fd, parent pid): serve one backend or one call."""
    import sys
    from multiprocessing.connection import Connection

    faulthandler.enable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    data_fd, cancel_fd, parent_pid = (int(x) for x in sys.argv[1:4])
    die_with_parent(parent_pid)  # the pid from argv: the parent may already be gone by now
    conn = Connection(data_fd)
    try:
        kind, spec = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = spec["sys_path"]
    if kind == "function":
        try:
            conn.send(("ok", spec["fn"](*spec["args"])))
        except Exception as exc:
            conn.send(("error", _portable_error(exc)))
    else:
        _serve(conn, _CancelFlag(socket.socket(fileno=cancel_fd)), spec)
    conn.close()


def _serve(conn: Any, cancel: _CancelFlag, spec: dict[str, Any]) -> None:
    """Construct the real backend (`spec["target"]` is its "module:Class") and serve calls until close."""
    import importlib

    from globmed_edge.trust import seed_memo

    seed_memo(spec.get("trust_memo", {}))  # builds the parent verified: not hashed a second time
    real: Any = None
    while True:
        try:
            op, args, kwargs = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if real is None:
                module, _, attr = spec["target"].partition(":")
                real = getattr(importlib.import_module(module), attr)(spec["path"], **spec["options"])
            if op == "close":
                real.close()
                conn.send(("ok", None))
                return
            if op == "stream":
                cancel.current = kwargs["seq"]
                for event in real.stream(args[0], cancel=cancel):
                    conn.send(("event", event))
                conn.send(("done", None))
            elif op in CALLS:
                conn.send(("ok", getattr(real, op)(*args, **kwargs)))
            else:
                conn.send(("error", ("BackendError", f"isolated backend: no call {op!r}")))
        except Exception as exc:
            conn.send(("error", _portable_error(exc)))


class _Child:
    """One child process with its pipes and log file; turns its death into RuntimeCrash.

    Started with subprocess (a fresh interpreter: nothing forked from a process with threads or
    a model, and no re-import of the caller's __main__), in a process group of its own so that
    the terminal's Ctrl+C reaches only the parent.
    """

    def __init__(self, kind: str, spec: dict[str, Any], *, runtime: str, what: str) -> None:
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        fd, log = tempfile.mkstemp(prefix="globmed-runtime-", suffix=".log")
        self.log = Path(log)
        self.runtime, self.what = runtime, what
        mine, theirs = socket.socketpair()
        self._cancel, cancel_theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from globmed_edge.backends.isolated import child_entry; child_entry()",
                 str(theirs.fileno()), str(cancel_theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(), cancel_theirs.fileno()), stdin=subprocess.DEVNULL,
                stdout=fd, stderr=fd, process_group=0)
        finally:
            os.close(fd)
            theirs.close()
            cancel_theirs.close()
        self.conn = Connection(mine.detach())
        self._finalizer = weakref.finalize(self, _stop, self.proc, self.conn, self._cancel, self.log)
        self.send((kind, {**spec, "sys_path": list(sys.path)}))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, message: Any) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):
            raise self.crash() from None

    def cancel(self, seq: int) -> None:
        with contextlib.suppress(OSError):
            self._cancel.sendall(struct.pack("<q", seq))

    def recv(self, cancel: Any = None, on_cancel: Callable[[], None] | None = None,
             timeout: float | None = None) -> tuple[str, Any]:
        """The child's next message; RuntimeCrash when it died, BackendError on `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if cancel is not None and on_cancel is not None and cancel.is_set():
                on_cancel()
                on_cancel = None  # once
            try:
                if self.conn.poll(_POLL_S):
                    return tuple(self.conn.recv())
            except (EOFError, OSError):
                raise self.crash() from None
            if not self.alive and not self.conn.poll(0):
                raise self.crash()
            if deadline is not None and time.monotonic() > deadline:
                self.stop()
                raise BackendError(f"{self.runtime} runtime on {self.what}: no answer in {timeout:.0f} s "
                                   "(stopped)")

    def crash(self) -> RuntimeCrash:
        import subprocess

        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        code = self.proc.returncode
        err = RuntimeCrash(crash_message(self.runtime, self.what, code, _log_tail(self.log)),
                           -code if code is not None and code < 0 else None)
        self.stop()
        return err

    def stop(self) -> None:
        self._finalizer()

    def kill(self) -> None:
        """Stop the child now (it may be deep in native code that would finish first)."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.stop()


def _stop(proc: Any, conn: Any, cancel: socket.socket, log: Path) -> None:
    import subprocess

    for closable in (conn, cancel):
        with contextlib.suppress(Exception):
            closable.close()
    try:
        proc.wait(timeout=5)  # the child exits when its pipe closes
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    with contextlib.suppress(OSError):
        log.unlink()


def run_isolated(fn: Callable[..., Any], *args: Any, runtime: str, what: str,
                 timeout: float | None = 120) -> Any:
    """`fn(*args)` in a child process (fn importable, args picklable); RuntimeCrash if it dies."""
    child = _Child("function", {"fn": fn, "args": args}, runtime=runtime, what=what)
    try:
        kind, value = child.recv(timeout=timeout)
    finally:
        child.stop()
    if kind == "error":
        raise _rebuild_error(*value)
    return value


class IsolatedBackend:
    """The `Backend` protocol, served by the real backend `runtime` in a child process."""

    name: ClassVar[str] = "isolated"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, path: str | Path, runtime: str, *, target: str | None = None, **options: Any) -> None:
        """`runtime` is a registered backend name; `target` ("module:Class") overrides where the
        child finds its class (tests use it for scripted backends)."""
        from globmed_edge.backends import BACKENDS

        self.path = Path(path)
        self.runtime = runtime
        self.target = target or BACKENDS.target(runtime)
        self.options = options
        self._child: _Child | None = None
        self._seq = 0
        self._abandoned = False  # a call was interrupted: the child's state is unknown
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        self.close()
        from globmed_edge.trust import memo_snapshot

        spec = {"target": self.target, "path": str(self.path), "options": self.options,
                "trust_memo": memo_snapshot()}
        self._child = _Child("backend", spec, runtime=self.runtime, what=self.path.name)
        self._call("load")

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if self._abandoned:
            self._abandoned = False
            child.kill()
            return
        with contextlib.suppress(GlobmedError):
            if child.alive:
                child.send(("close", (), {}))
                child.recv(timeout=30)
        child.stop()

    @property
    def alive(self) -> bool:
        return self._child is not None and self._child.alive

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    def _require(self) -> _Child:
        return loaded(self._child)

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        child = self._require()
        with self._lock:
            child.send((op, args, kwargs))
            try:
                kind, value = child.recv()
            except BaseException:  # Ctrl+C (or a crash) mid-call: the child's answer is not awaited,
                self._abandoned = True  # so close() stops it at once instead of waiting for it
                raise
        if kind == "error":
            raise _rebuild_error(*value)
        return value

    # ------------------------------------------------------------------ protocol

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(self._call("tokenize", text, add_special=add_special))

    def detokenize(self, token_ids: Sequence[int], *, special: bool = False) -> str:
        return str(self._call("detokenize", list(token_ids), special=special))

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        return str(self._call("render_chat", list(messages), add_generation_prompt=add_generation_prompt))

    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        return list(self._call("score", list(requests)))

    def logprobs(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._call("logprobs", list(token_ids))

    def memory(self) -> MemoryReport:
        report: MemoryReport = self._call("memory")
        return report

    def reset_cache(self) -> None:
        self._call("reset_cache")

    def stream(self, request: GenerationRequest, *, cancel: threading.Event | None = None) -> Iterator[TokenEvent]:
        """Tokens as the child produces them; `cancel` stops the child between tokens."""
        child = self._require()
        with self._lock:
            self._seq += 1
            seq = self._seq
            child.send(("stream", (request,), {"seq": seq}))
            done = False
            try:
                while True:
                    kind, value = child.recv(cancel, lambda: child.cancel(seq))
                    if kind == "event" and cancel is not None and cancel.is_set():
                        # The child runs ahead of the caller: a token that arrives after the caller
                        # cancelled was made after it asked to stop. As in-process backends, the
                        # stream ends here with "cancelled"; the child's rest is drained below.
                        child.cancel(seq)
                        yield TokenEvent("", value.index, time.perf_counter(), finish_reason="cancelled")
                        return
                    if kind == "event":
                        yield value
                    elif kind == "done":
                        done = True
                        return
                    else:
                        done = True
                        raise _rebuild_error(*value)
            finally:
                if not done and child.alive:  # the caller stopped early: end the child's stream
                    child.cancel(seq)         # so that the next call reads its own answer
                    with contextlib.suppress(GlobmedError):
                        while child.recv(timeout=30)[0] == "event":
                            pass


if TYPE_CHECKING:  # mypy checks the class against the protocol, structurally
    _: type[Backend] = IsolatedBackend
