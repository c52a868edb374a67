"""Progress on long work when stderr is not a terminal (logs, CI, nohup): plain lines, not a bar."""

from __future__ import annotations

from globmed_edge.clikit import LineProgress, duration, item_progress


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.4, 45, 185, 3720)] == ["0 s", "45 s", "3 min 05 s", "1 h 02 min"]


def test_a_line_at_most_every_interval_with_the_time_left(capsys):
    now = [0.0]
    bar = LineProgress(100, "scoring am", every_s=60.0, clock=lambda: now[0])
    for t, n in ((10.0, 32), (70.0, 32), (100.0, 4), (140.0, 16)):  # 32 at 10 s, 64 at 70 s, ...
        now[0] = t
        bar.update(n)
    now[0] = 200.0
    bar.update(16)  # the last items: the caller reports the total, no line here
    bar.close()
    err = capsys.readouterr().err.splitlines()
    assert err == ["scoring am: 64/100 items in 1 min 10 s; ~39 s left",
                   "scoring am: 84/100 items in 2 min 20 s; ~27 s left"]


def test_not_a_terminal_gets_lines_a_terminal_gets_a_bar(monkeypatch):
    import sys

    assert item_progress(10, "x", enabled=False) is None and item_progress(0, "x") is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(item_progress(10, "x"), LineProgress)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = item_progress(10, "x")
    try:
        assert type(bar).__name__ == "tqdm"
    finally:
        bar.close()


def test_score_mcq_reports_progress_off_a_terminal(monkeypatch, capsys):
    """bench's scorer, not on a terminal, says how far it is (every_s 0 here: a line per batch)."""
    import sys

    from globmed_edge import clikit
    from globmed_edge.data.schema import MCQItem
    from globmed_edge.mcq.scorer import score_mcq

    class Uniform:  # every continuation equally likely: enough to drive the scorer
        path = "uniform"

        def score(self, requests):
            from globmed_edge.backends.base import ScoreResult

            return [ScoreResult(logprob=-1.0, n_tokens=1, is_greedy=False) for _ in requests]

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(clikit, "LineProgress", lambda total, desc: LineProgress(total, desc, every_s=0.0))
    items = [MCQItem(id=f"q{i}", dataset="t", lang="am", split="test", question="?",
                     options={"A": "a", "B": "b"}, answer="A") for i in range(5)]
    assert len(score_mcq(Uniform(), items, batch_items=2, progress=True)) == 5  # type: ignore[arg-type]
    assert capsys.readouterr().err.splitlines() == [
        "scoring am: 2/5 items in 0 s; ~0 s left", "scoring am: 4/5 items in 0 s; ~0 s left"]


def test_transformers_bars_are_off_in_a_log_and_left_alone_on_a_terminal(monkeypatch):
    """Its weight-loading bar is one \\r update per tensor: 339 in a 1.5B model's quantize log."""
    import sys

    import pytest

    transformers = pytest.importorskip("transformers", reason="needs the torch extra")
    from globmed_edge.deps import require_transformers

    hf_logging = transformers.utils.logging
    try:
        hf_logging.enable_progress_bar()
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        assert require_transformers() is transformers
        assert hf_logging.is_progress_bar_enabled()
        monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
        require_transformers()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
