"""SVG snapshots of the chat screen at 80x24: English, Amharic and Arabic (right-to-left).

Deterministic: the fake backend replays fixed tokens, timings are frozen (`freeze_timings`),
the cursor does not blink and notifications are not drawn. Baselines live in
tests/__snapshots__/ and were created with `--snapshot-update` and reviewed as images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_fakes import FakeBackend

from globmed_edge.tui.app import ChatApp, make_app
from globmed_edge.tui.builds import BuildChoice
from globmed_edge.tui.store import ChatStore
from globmed_edge.tui.widgets import ChatInput, MessageBox

CASES = {
    "en": ("My child has diarrhoea and sunken eyes. What should I do?",
           ["Give ", "oral ", "rehydration ", "salts ", "(ORS) ", "after ", "each ", "loose ",
            "stool. ", "Sunken ", "eyes ", "can ", "mean ", "severe ", "dehydration: ", "refer ",
            "today."]),
    "am": ("ልጄ ተቅማጥ አለበት። ምን ላድርግ?",
           ["በእያንዳንዱ ", "ተቅማጥ ", "በኋላ ", "ኦአርኤስ ", "ይስጡ። ", "ፈሳሽ ", "መጠጣት ",
            "ካልቻለ ", "ወደ ", "ጤና ", "ጣቢያ ", "ይላኩ።"]),
    "ar": ("طفلي مصاب بالإسهال وعيون غائرة. ماذا أفعل؟",
           ["أعطِ ", "محلول ", "الإماهة ", "الفموية ", "بعد ", "كل ", "إسهال. ", "العيون ",
            "الغائرة ", "قد ", "تعني ", "جفافًا ", "شديدًا: ", "أحِله ", "اليوم."]),
}


def chat_app(tmp_path: Path, lang: str) -> ChatApp:
    _question, tokens = CASES[lang]
    be = FakeBackend(replies=[tokens])
    return make_app(Path("smollm2-q4_k_m"), lang=lang, store=ChatStore(tmp_path / "h.sqlite3"),
                    backend_factory=lambda p: be, freeze_timings=True, export_dir=tmp_path)


async def _ask(pilot, lang: str) -> None:
    app = pilot.app
    for _ in range(500):
        if app.chat is not None and app.chat.backend is not None:
            break
        await pilot.pause(0.02)
    box = app.chat.query_one(ChatInput)
    box.cursor_blink = False
    box.insert(CASES[lang][0])
    await pilot.press("enter")
    for _ in range(500):
        if [b for b in app.chat.query(MessageBox) if b.role == "assistant" and b.status == "complete"]:
            break
        await pilot.pause(0.02)
    app.clear_notifications()  # the emergency toast is tested elsewhere; keep the screen visible
    await pilot.pause()


@pytest.mark.parametrize("lang", ["en", "am", "ar"])
def test_chat_screen_snapshot(snap_compare, tmp_path, lang):
    async def run_before(pilot) -> None:
        await _ask(pilot, lang)

    assert snap_compare(chat_app(tmp_path, lang), terminal_size=(80, 24), run_before=run_before)


def test_picker_snapshot(snap_compare, tmp_path):
    choices = [
        BuildChoice("smollm2-135m-instruct", Path("/data/builds/smollm2"), "hf", "bf16", 270 * 2**20, "English",
                    840 * 2**20, 41.0),
        BuildChoice("gemma3-medical-q4_k_m", Path("/data/builds/gemma3-q4"), "gguf", "q4_k_m", 3 * 2**30,
                    "en, sw, ha, yo, am", 4 * 2**30, None),
    ]
    app = make_app(None, store=ChatStore(tmp_path / "h.sqlite3"), choices=choices,
                   free_memory=2 * 2**30, freeze_timings=True)
    assert snap_compare(app, terminal_size=(80, 24))


def test_picker_tells_builds_of_one_model_apart_and_marks_one(snap_compare, tmp_path):
    """Issue #15 item 7: at 80 columns the names keep their distinguishing end (format and
    quantization), and the build `chat --prompt` would pick here is marked and highlighted."""
    model = "smollm2-135m-instruct"
    choices = [
        BuildChoice(f"{model}-gguf-q4_k_m", Path(f"/data/builds/{model}-gguf-q4_k_m"), "gguf", "q4_k_m",
                    101 * 2**20, "English", 270 * 2**20, 74.2, parity_passed=True, grade="small loss",
                    memory_measured=True),
        BuildChoice(f"{model}-gguf-q8_0", Path(f"/data/builds/{model}-gguf-q8_0"), "gguf", "q8_0",
                    138 * 2**20, "English", 310 * 2**20, 81.1, parity_passed=True, grade="near-lossless",
                    memory_measured=True),
        BuildChoice(f"{model}-onnx-int4", Path(f"/data/builds/{model}-onnx-int4"), "onnx", "int4",
                    86 * 2**20, "English", 410 * 2**20, None, parity_passed=True, grade="lossy"),
    ]
    app = make_app(None, store=ChatStore(tmp_path / "h.sqlite3"), choices=choices,
                   free_memory=2 * 2**30, freeze_timings=True)
    assert snap_compare(app, terminal_size=(80, 24))
