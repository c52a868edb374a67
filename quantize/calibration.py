"""The calibration set: multilingual medical text, balanced across languages, never test items.

GGUF importance matrices and GPTQ both calibrate on text; what that text is decides which
languages the quantized weights are tuned for. The set is drawn from data in the project schema
(the packaged samples by default, or files/folders such as ../shared/data/mcq), from the train
and dev splits only, and taken round-robin across languages so that a dataset with 4,000 English
items and 13 Amharic ones still gives Amharic its turn. Within a language the order is fixed by
a hash of each item id (mixing datasets without randomness), so the same sources always give the
same texts and the same sha256, which goes into every build manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from globmed_edge.data.schema import ChatItem, Item, MCQItem
from globmed_edge.errors import DataError
from globmed_edge.quantize.base import Calibration

DEFAULT_SIZE = 256
MAX_CHARS = 2000  # long PubMedQA abstracts are cut; calibration wants many short texts
SPLITS = ("train", "dev")


def samples_dir() -> Path:
    """The sample data packaged with globmed-edge (edge/samples/*.jsonl)."""
    import globmed_edge

    return Path(globmed_edge.__file__).resolve().parent / "samples"


def default_sources() -> list[Path]:
    files = sorted(samples_dir().glob("*.jsonl"))
    if not files:
        raise DataError("no packaged sample data (*.jsonl) to calibrate on; pass --calibration FILE|DIR",
                        samples_dir())
    return files


def render_item(item: Item) -> str:
    """The text an item contributes: MCQ as question + options + answer, chat as its turns."""
    if isinstance(item, MCQItem):
        lines = [item.question.strip()]
        lines += [f"{letter}. {text.strip()}" for letter, text in item.options.items()]
        lines.append(f"Answer: {item.answer}. {item.options[item.answer].strip()}")
        text = "\n".join(lines)
    elif isinstance(item, ChatItem):
        text = "\n\n".join(m["content"].strip() for m in item.messages if m.get("content", "").strip())
    else:  # pragma: no cover - the schema has two item kinds
        raise DataError(f"item {getattr(item, 'id', '?')}: unknown item kind")
    return text[:MAX_CHARS]


def calibration_hash(texts: Sequence[str]) -> str:
    """sha256 over the exact texts, in order (a JSON array, so boundaries are unambiguous)."""
    payload = json.dumps(list(texts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _order_key(item: Item) -> str:
    return hashlib.sha256(f"{item.dataset}\0{item.id}".encode()).hexdigest()


def select_texts(sources: Iterable[str | Path] | None = None, *, size: int = DEFAULT_SIZE
                 ) -> list[tuple[str, str]]:
    """(language, text) pairs: train/dev items taken round-robin across languages, <= `size`."""
    if size < 1:
        raise DataError(f"calibration size must be at least 1, got {size}")
    paths = [Path(s) for s in sources] if sources else default_sources()
    from globmed_edge.data.readers import iter_items

    by_lang: dict[str, list[Item]] = {}
    seen: set[tuple[str, str]] = set()
    for item in iter_items(paths):
        if item.split not in SPLITS or (item.dataset, item.id) in seen:
            continue
        seen.add((item.dataset, item.id))
        by_lang.setdefault(item.lang, []).append(item)
    if not by_lang:
        where = ", ".join(str(p) for p in paths)
        raise DataError(f"no train/dev items to calibrate on in {where} (test items are never used)")
    queues = [sorted(items, key=_order_key) for _, items in sorted(by_lang.items())]
    chosen: list[tuple[str, str]] = []
    depth = 0
    while len(chosen) < size and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(chosen) < size:
                text = render_item(queue[depth])
                if text.strip():
                    chosen.append((queue[depth].lang, text))
        depth += 1
    return chosen


def build_calibration(sources: Iterable[str | Path] | None = None, *, size: int = DEFAULT_SIZE) -> Calibration:
    """A language-balanced calibration set of at most `size` texts from train/dev items."""
    paths = [Path(s) for s in sources] if sources else default_sources()
    chosen = select_texts(paths, size=size)
    texts = [text for _, text in chosen]
    return Calibration(
        texts=tuple(texts),
        sha256=calibration_hash(texts),
        languages=tuple(sorted({lang for lang, _ in chosen})),
        source=", ".join(_describe(p) for p in paths),
    )


def _describe(path: Path) -> str:
    try:
        return f"packaged:{path.resolve().relative_to(samples_dir()).as_posix()}"
    except ValueError:
        return str(path)


def manifest_record(calibration: Calibration) -> dict[str, object]:
    """What a manifest records about the calibration set it was built with."""
    return {"sha256": calibration.sha256, "texts": len(calibration.texts),
            "languages": list(calibration.languages), "source": calibration.source,
            "chars": sum(len(t) for t in calibration.texts)}
