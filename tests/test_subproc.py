"""quantize/subproc.py: the one streaming child-process helper of the GGUF and ONNX exporters.

Real tiny children (`python -c ...`): normal output, a timeout that fires while the child prints
nothing, and an exception (an error, Ctrl-C) that kills the child. No timed assertions beyond
generous bounds: each child would sleep for minutes if it were not killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from globmed_edge.quantize.subproc import clean_line, run_streaming

SLEEPER = ("import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
           "print('ready', flush=True); time.sleep(300)")


def _gone(pid: int, within: float = 30.0) -> bool:
    """True once no process `pid` exists (the helper reaps its child, so no zombie stays)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _pid(path: Path) -> int:
    for _ in range(600):  # the child writes it before printing its first line
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the child never wrote its pid")


def test_normal_output_is_streamed_line_by_line():
    code = ("import sys; print('one'); print('  '); sys.stdout.write('50%\\r100%\\n'); "
            "sys.stderr.write('from stderr\\n'); sys.stdout.flush(); sys.exit(3)")
    seen: list[str] = []
    rc, tail = run_streaming([sys.executable, "-c", code], timeout=120, on_line=seen.append)
    assert rc == 3
    assert seen[0] == "one" and "100%" in seen and "from stderr" in seen
    assert "" not in seen and all(line == line.strip() for line in seen)
    assert tail == seen


def test_tail_keeps_the_last_lines_and_no_timeout_means_none():
    code = "for i in range(100): print(i)"
    rc, tail = run_streaming([sys.executable, "-c", code], timeout=None, tail=5)
    assert rc == 0 and tail == ["95", "96", "97", "98", "99"]


def test_clean_line_keeps_a_redrawn_bar_latest_state():
    assert clean_line(" 10%|#  \r 90%|#########\n") == "90%|#########"
    assert clean_line("\n") == ""


def test_timeout_fires_while_the_child_is_silent_and_kills_it(tmp_path):
    pidfile = tmp_path / "pid"
    code = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_streaming([sys.executable, "-c", code, str(pidfile)], timeout=5)
    assert time.monotonic() - t0 < 120, "the timeout must not wait for the child to print or exit"
    assert _gone(_pid(pidfile))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_while_reading_kills_the_child(tmp_path, error):
    pidfile = tmp_path / "pid"

    def on_line(line: str) -> None:
        assert line == "ready"
        raise error("stop")

    with pytest.raises(error):
        run_streaming([sys.executable, "-c", SLEEPER, str(pidfile)], timeout=600, on_line=on_line)
    assert _gone(_pid(pidfile))


def test_the_gguf_steps_use_it_and_name_the_option_on_timeout(tmp_path):
    from globmed_edge.errors import ModelError
    from globmed_edge.quantize import gguf

    partial = tmp_path / "half.gguf"
    partial.write_bytes(b"GGUF half")
    code = "import time; time.sleep(300)"
    with pytest.raises(ModelError, match=r"did not finish within 1 s .*--option gguf\.timeout_s"):
        gguf._run([sys.executable, "-c", code], dict(os.environ), 1, lambda _l: None, "x: GGUF conversion", partial)
    assert not partial.exists(), "a half-written file must not look like a build"


@pytest.mark.onnx
def test_the_onnx_builder_times_out_and_is_killed(tiny_model, tmp_path, monkeypatch):
    from globmed_edge.errors import ModelError
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.onnx import ONNXExporter

    pytest.importorskip("onnxruntime_genai")
    pidfile = tmp_path / "pid"
    sleeper = [sys.executable, "-c", SLEEPER, str(pidfile)]
    monkeypatch.setattr(ONNXExporter, "builder_args", lambda self, request, cache: [*sleeper, "-e", "cpu"])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelError, match=r"did not finish within 5 s .*--option onnx\.timeout_s"):
        ONNXExporter().export(ExportRequest(tiny_model, out, "int4", options={"timeout_s": 5}))
    assert _gone(_pid(pidfile))
    assert not (out / ".builder-cache").exists()
