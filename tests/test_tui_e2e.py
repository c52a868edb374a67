"""End to end with the real default model (HF folder, transformers backend, CPU): few tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from globmed_edge.backends import open_backend
from globmed_edge.tui.app import make_app
from globmed_edge.tui.i18n import system_prompt
from globmed_edge.tui.store import ChatStore
from globmed_edge.tui.widgets import ChatInput, MessageBox

pytestmark = pytest.mark.slow
QUESTION = "What is oral rehydration solution?"
N = 8


@pytest.fixture(scope="module")
def reference(default_model: Path) -> str:
    """The greedy answer of the same build driven directly through its backend."""
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.tui.session import DEFAULT_REPETITION_PENALTY

    be = open_backend(default_model)
    be.load()
    req = GenerationRequest.from_text(QUESTION, system=system_prompt("en"), max_new_tokens=N,
                                      repetition_penalty=DEFAULT_REPETITION_PENALTY)  # as the chat asks
    text = "".join(ev.text for ev in be.stream(req))
    be.close()
    assert text.strip()
    return text


def test_one_shot_prompt_streams_the_same_answer(default_model, reference):
    from globmed_edge.cli.main import cli

    result = CliRunner().invoke(cli, ["chat", str(default_model), "--prompt", QUESTION,
                                      "--lang", "en", "--max-tokens", str(N)])
    assert result.exit_code == 0, result.output
    assert result.stdout == reference + "\n"  # stdout is the answer only
    assert "does not replace" in result.stderr and "tokens/s" in result.stderr


async def test_app_answers_with_the_real_model(default_model, reference, tmp_path):
    store = ChatStore(tmp_path / "h.sqlite3")
    app = make_app(default_model, lang="en", store=store, max_new_tokens=N)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(3000):
            if app.chat is not None and app.chat.backend is not None:
                break
            await pilot.pause(0.05)
        chat = app.chat
        assert chat is not None and chat.backend is not None
        chat.query_one(ChatInput).insert(QUESTION)
        await pilot.press("enter")
        for _ in range(3000):
            # N tokens: the answer is cut at the limit (status "cut") unless the model ends it first
            done = [b for b in chat.query(MessageBox) if b.role == "assistant" and b.status in ("complete", "cut")]
            if done:
                break
            await pilot.pause(0.05)
        assert done and done[0].body == reference
        assert "tokens/s" in str(chat.query_one("#status").render())
    msgs = store.messages(store.list_conversations()[0].id)
    assert msgs[-1].content == reference and msgs[-1].meta["tokens"] >= 1
    store.close()
