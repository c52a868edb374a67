"""One way to run an exporter's tool in a child process: stream its lines, time it out, kill it.

The GGUF converter and quantizer and the ONNX model builder all run as children (their prints,
torch weights and native crashes stay out of this process). `run_streaming` reads the child's
merged stdout/stderr on a thread, so the calling thread can enforce a wall-clock timeout even
while the child prints nothing, hands each line to `on_line` (progress) in the calling thread, and
kills the child on any exception on the way out: the timeout, an error raised by `on_line`, or a
KeyboardInterrupt. A killed child leaves no process writing into the build's temporary folder.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import IO

TAIL_LINES = 40
_EOF = None


def clean_line(raw: str) -> str:
    """A line as shown: a progress bar redrawn with \\r keeps only its latest state."""
    return raw.rstrip("\n").split("\r")[-1].strip()


def run_streaming(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
                  on_line: Callable[[str], None] = lambda _line: None,
                  tail: int = TAIL_LINES) -> tuple[int, list[str]]:
    """Run `cmd` to completion; (exit status, its last `tail` non-empty lines).

    Raises subprocess.TimeoutExpired (its `output` the last lines) when the child runs longer
    than `timeout` seconds; the child is killed and reaped before anything propagates.
    """
    last: deque[str] = deque(maxlen=tail)
    lines: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None,
                            text=True, encoding="utf-8", errors="replace")
    assert proc.stdout is not None
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True,
                              name=f"read {cmd[0]}")
    reader.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(list(cmd), timeout or 0.0, output="\n".join(last))
            try:
                raw = lines.get(timeout=remaining)
            except queue.Empty:
                continue  # the deadline check above raises
            if raw is _EOF:
                break
            line = clean_line(raw)
            if line:
                last.append(line)
                on_line(line)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        rc = proc.wait(timeout=remaining)  # stdout closed; a child may still linger
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(timeout=5)
        proc.stdout.close()
    return rc, list(last)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    try:
        for raw in stream:
            lines.put(raw)
    except (OSError, ValueError):  # the pipe was closed under us: the child was killed
        pass
    finally:
        lines.put(_EOF)
