"""The backend seam (issue #11 item 3): what every backend shares, written once.

The helpers of backends/common.py, the one timing type (backends/timing.py), the llama-cpp-python
version fence, and the chat opening a build with one verification. The backends themselves run
through tests/test_backend_conformance.py; mypy checks them against `Backend` (each module's
`type[Backend]` assignment).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from globmed_edge.backends import BACKENDS, open_backend
from globmed_edge.backends.base import ScoreResult, TokenEvent
from globmed_edge.backends.common import ScoreCollector, eos_ids, loaded, log_softmax, verify_build
from globmed_edge.backends.timing import StreamTiming
from globmed_edge.errors import BackendError, ModelError, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]


def test_score_collector_returns_results_in_request_order_and_raises_on_an_empty_slot():
    a, b, c = ScoreResult(-1.0, 1, True), ScoreResult(-2.0, 2, False), ScoreResult(-3.0, 1, True)
    full = ScoreCollector(3)
    full.put([2, 0], [c, a])
    full.put([1], [b])
    assert full.results() == [a, b, c]
    short = ScoreCollector(3)
    short.put([0, 2], [a, c])  # request 1 lost: must not come back as a two-result list
    with pytest.raises(BackendError, match=r"no result for request 1 \(1 of 3 missing\)"):
        short.results()
    with pytest.raises(ValueError):  # a group's results are as many as its requests
        ScoreCollector(2).put([0, 1], [a])


@pytest.mark.parametrize("name", ["transformers", "llamacpp", "onnx", "gptq"])
def test_every_backend_rejects_an_unknown_option_the_same_way(name, tmp_path):
    cls = BACKENDS.load(name)  # constructing loads nothing: no runtime needed
    with pytest.raises(UnknownNameError, match=rf"unknown {name} backend option 'n_thread'; did you mean 'threads'\?"):
        cls(tmp_path, n_thread=2)
    cls(tmp_path, device="cpu", threads=1, verify=False)  # the options every backend takes
    with pytest.raises(UnknownNameError, match=f"unknown {name} backend option 'devise'"):
        open_backend(tmp_path, name, devise="cpu", isolate=True)  # refused before a child starts


def test_loaded_guard_eos_ids_and_log_softmax():
    with pytest.raises(BackendError, match=r"backend used before load\(\)"):
        loaded(None)
    assert loaded(0) == 0  # only None means "not loaded"
    assert eos_ids(2, [3, 4], None) == {2, 3, 4}
    assert eos_ids(None, []) == set() and eos_ids((7,), 7) == {7}
    x = np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]], dtype=np.float64)
    lp = log_softmax(x)
    assert lp.dtype == np.float32 and lp.shape == x.shape
    assert np.allclose(np.exp(lp).sum(axis=-1), 1.0, atol=1e-6)  # no overflow at large logits
    assert lp[1] == pytest.approx([-np.log(3.0)] * 3)


def test_verify_build_refuses_a_manifest_of_another_format(tmp_path):
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest

    build = tmp_path / "b"
    build.mkdir()
    (build / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
    write_manifest(build, Manifest(name="b", format="gguf", quantization="q8_0", bits_per_weight=8.5,
                                   files=hash_build_files(build), source={"id": "x"}))
    assert verify_build(build, "gguf").status == "verified"
    assert verify_build(build, None).status == "verified"
    with pytest.raises(ModelError, match=r"b: manifest format is 'gguf', not 'onnx'"):
        verify_build(build, "onnx")
    with pytest.raises(ModelError, match=r"^elsewhere: manifest format"):
        verify_build(build / "model.gguf", "gptq", where=Path("elsewhere"))


def _event(i: int, t: float, text: str = "x", token: int | None = 1, finish: str | None = None,
           prompt: int | None = None) -> TokenEvent:
    return TokenEvent(text, i, t, token, finish, prompt)  # type: ignore[arg-type]


def test_stream_timing_ttft_and_decode_speed_from_event_times():
    events = [_event(0, 10.5, prompt=40), _event(1, 10.7), _event(2, 10.9),
              _event(3, 11.5, text="", finish="stop")]  # the end-of-generation token counts
    t = StreamTiming.of(10.0, events)
    assert (t.tokens, t.prompt_tokens, t.first, t.last) == (4, 40, 10.5, 11.5)
    assert t.ttft_s == pytest.approx(0.5) and t.decode_tokens_per_s == pytest.approx(3.0)
    # a bare "cancelled" marker (no text, no token) is not a token; `now` overrides the event time
    t2 = t.add(_event(4, 99.0, text="", token=None, finish="cancelled"))
    assert t2 == t
    assert t.add(_event(4, 99.0), now=12.5).decode_tokens_per_s == pytest.approx(4 / 2.0)
    one = StreamTiming.of(0.0, events[:1])
    assert one.ttft_s == pytest.approx(10.5) and one.decode_tokens_per_s is None
    none = StreamTiming.of(0.0, [])
    assert none.ttft_s is None and none.decode_tokens_per_s is None and none.tokens == 0


def test_chat_stats_are_the_one_timing_type():
    from globmed_edge.tui.session import StreamStats

    stats = StreamStats(1.0).add(_event(0, 1.25, prompt=3)).add(_event(1, 1.75))
    assert isinstance(stats, StreamStats) and isinstance(stats, StreamTiming)
    assert stats.ttft == stats.ttft_s == pytest.approx(0.25)
    assert stats.tokens_per_second == stats.decode_tokens_per_s == pytest.approx(2.0)
    assert stats.as_meta() == {"tokens": 2, "prompt_tokens": 3, "ttft_s": 0.25, "tokens_per_s": 2.0}


def test_llamacpp_python_version_is_the_pinned_one(monkeypatch):
    from globmed_edge.backends import llamacpp_runtime
    from globmed_edge.backends.llamacpp_context import LlamaContext

    pinned = llamacpp_runtime.PINNED_VERSION
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pins = set(re.findall(r'"llama-cpp-python==([^"]+)"', pyproject))
    assert pins == {pinned}, pins  # the fence and the install pin move together
    assert f"VERSION={pinned}\n" in (ROOT / "scripts" / "llama-cpp-wheel.sh").read_text(encoding="utf-8")
    monkeypatch.setattr(llamacpp_runtime, "version", lambda: "0.3.99")
    with pytest.raises(BackendError, match=rf"llama-cpp-python 0\.3\.99 is installed; .*needs {re.escape(pinned)}"):
        LlamaContext(object())  # refused before it touches the Llama


def test_opening_a_build_for_chat_hashes_it_once(tiny_model, tmp_path, monkeypatch):
    """The chat app checks the build (to show "unverified"), its loader checks it before it
    constructs the backend (a refused build never starts a runtime), and the backend's load()
    applies the rule once more: the build's files are hashed once."""
    from conftest import as_build

    import globmed_edge.trust as trust
    from globmed_edge.tui.loader import load_backend

    build = tmp_path / "tiny-hf"
    shutil.copytree(tiny_model, build)
    as_build(build, "hf", "fp32")
    hashed: list[Path] = []
    real = trust.require_valid_build

    def counting(folder):
        hashed.append(folder)
        return real(folder)

    monkeypatch.setattr(trust, "require_valid_build", counting)
    assert trust.check_model(build).status == "verified"  # what the app does first
    backend = load_backend(build)  # the chat's default factory: torch runs in this process
    try:
        assert backend.name == "transformers" and backend.tokenize("fever")
    finally:
        backend.close()
    assert len(hashed) == 1, hashed


def test_llama_cpp_python_internals_are_touched_in_one_class_only():
    """`_ctx`, `_batch`, `input_ids` and `n_tokens` of a `Llama` belong to llamacpp_context.py;
    no backend imports another backend's private names (the chat template has a module)."""
    pattern = re.compile(r"\.(_ctx|_batch)\b|llm\.(input_ids|n_tokens)\b")
    private_import = re.compile(r"from globmed_edge\.backends\.\w+ import .*\b_\w+")
    for path in sorted((ROOT / "edge" / "backends").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.name != "llamacpp_context.py":
            assert not pattern.search(text), f"{path.name}: {pattern.search(text)}"
        assert not private_import.search(text), f"{path.name}: {private_import.search(text)}"
    assert pattern.search((ROOT / "edge" / "backends" / "llamacpp_context.py").read_text(encoding="utf-8"))
