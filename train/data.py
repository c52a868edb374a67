"""Items in the project schema -> chat examples, a language-balanced train set and a dev split.

* An MCQ item becomes a two-turn chat: the user turn is the bench's own question block
  (`Question: ...`, lettered options, `Answer:`), the assistant turn is `"<letter>. <option>"`
  followed by the rationale when the item has one. Chat items are used as they are.
* Only `train`-split items are trained on (`train_splits=train,dev` adds the `dev` split). The
  dev set is the `dev`-split MCQ items of each language when they are not trained on; otherwise,
  or for a language without any, `dev_fraction` of its trainable MCQ items is held out (chosen
  by a hash of the item id, so the split never depends on file order). `test` items are never
  used here: they are for `globmed-edge bench`.
* Balanced sampling: language l gets p_l ∝ n_l^(1/T) of the `train_samples` examples (T = 1
  keeps the natural mix, large T tends to uniform), drawn as whole shuffled passes over the
  language's examples (low-resource languages are repeated, high-resource ones subsampled).
  Everything is seeded: the same data and seed give the same example order, which resume needs.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from globmed_edge.data.schema import Item, MCQItem
from globmed_edge.errors import DataError

if TYPE_CHECKING:
    from globmed_edge.train.config import TrainConfig

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Example:
    id: str
    lang: str
    messages: tuple[tuple[str, str], ...]  # (role, content): hashable and immutable

    def as_messages(self) -> Messages:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass(frozen=True)
class Splits:
    train: list[Example]  # balanced and shuffled: the order the trainer sees (before packing)
    dev: list[MCQItem]
    train_counts: dict[str, int]  # train items per language before balancing
    weights: dict[str, float]  # sampling probability per language
    files: dict[str, str]  # data file -> sha256


def sample_files() -> list[Path]:
    """The packaged sample data (14 languages x 12 MCQ items, plus chat items)."""
    root = files("globmed_edge.samples")
    return [Path(str(root.joinpath(n))) for n in ("mcq_sample.jsonl", "chat_sample.jsonl")]


def data_files(sources: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if not p.exists():
            raise DataError("no such data file or folder", p)
        out += sorted(p.rglob("*.jsonl")) if p.is_dir() else [p]
    return out


def hash_files(paths: Iterable[Path]) -> dict[str, str]:
    from globmed_edge.atomic import sha256_file

    return {str(p): sha256_file(p) for p in paths}


def mcq_to_messages(item: MCQItem, *, include_rationale: bool = True, system_prompt: str = "") -> Messages:
    from globmed_edge.mcq.prompts import render_question

    answer = f"{item.answer}. {item.options[item.answer].strip()}"
    if include_rationale and item.rationale and item.rationale.strip():
        answer += f"\n\n{item.rationale.strip()}"
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*msgs, {"role": "user", "content": render_question(item)},
            {"role": "assistant", "content": answer}]


def to_example(item: Item, *, include_rationale: bool = True, system_prompt: str = "") -> Example:
    if isinstance(item, MCQItem):
        msgs = mcq_to_messages(item, include_rationale=include_rationale, system_prompt=system_prompt)
    else:
        msgs = [dict(m) for m in item.messages]
        if system_prompt and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": system_prompt})
    return Example(item.id, item.lang, tuple((m["role"], m["content"]) for m in msgs))


def language_weights(counts: Mapping[str, int], temperature: float) -> dict[str, float]:
    """p_l ∝ n_l^(1/T), normalised; languages with no items get no weight."""
    raw = {lang: n ** (1.0 / temperature) for lang, n in sorted(counts.items()) if n > 0}
    total = sum(raw.values())
    return {lang: w / total for lang, w in raw.items()}


def allocate(weights: Mapping[str, float], n: int) -> dict[str, int]:
    """Integer counts summing to n (largest remainder), at least 1 per language when n allows."""
    exact = {lang: w * n for lang, w in weights.items()}
    counts = {lang: int(x) for lang, x in exact.items()}
    for lang in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[: n - sum(counts.values())]:
        counts[lang] += 1
    if n >= len(counts):
        for lang in [k for k, c in counts.items() if c == 0]:
            donor = max(counts, key=lambda k: (counts[k], k))
            counts[donor] -= 1
            counts[lang] = 1
    return counts


def balanced_sample(by_lang: Mapping[str, Sequence[Example]], n: int, temperature: float,
                    seed: int) -> list[Example]:
    counts = allocate(language_weights({k: len(v) for k, v in by_lang.items()}, temperature), n)
    rng = random.Random(seed)
    out: list[Example] = []
    for lang in sorted(counts):
        pool = list(by_lang[lang])
        taken: list[Example] = []
        while len(taken) < counts[lang]:
            rng.shuffle(pool)
            taken += pool[: counts[lang] - len(taken)]
        out += taken
    rng.shuffle(out)
    return out


def _held_out(item_id: str, fraction: float, seed: int) -> bool:
    h = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def build_splits(items: Sequence[Item], *, languages: Sequence[str] = (), train_samples: int = 0,
                 temperature: float = 3.0, dev_fraction: float = 0.1, dev_max_per_lang: int = 50,
                 include_rationale: bool = True, system_prompt: str = "", seed: int = 42,
                 train_splits: Sequence[str] = ("train",),
                 source: str = "the data", file_hashes: Mapping[str, str] | None = None) -> Splits:
    trainable = set(train_splits)
    if not trainable or not trainable <= {"train", "dev"}:
        raise DataError(f"train_splits must be train and/or dev, not {', '.join(train_splits) or 'nothing'}")
    named = "/".join(s for s in ("train", "dev") if s in trainable)
    present = Counter(i.lang for i in items if i.split in trainable)
    for lang in languages:
        if present[lang] == 0:
            have = ", ".join(sorted(present)) or "none"
            raise DataError(f"no {named} items for language {lang!r} in {source} (languages with {named} items: {have})")
    wanted = set(languages) or set(present)
    pool = [i for i in items if i.lang in wanted]
    eval_only = "dev" not in trainable
    dev_langs = {i.lang for i in pool if eval_only and i.split == "dev" and isinstance(i, MCQItem)}
    train_items: list[Item] = []
    dev: list[MCQItem] = []
    for item in pool:
        if eval_only and item.split == "dev" and isinstance(item, MCQItem):
            dev.append(item)
        elif item.split in trainable:
            if (isinstance(item, MCQItem) and item.lang not in dev_langs
                    and _held_out(item.id, dev_fraction, seed)):
                dev.append(item)
            else:
                train_items.append(item)
    if not train_items:
        raise DataError(f"no {named}-split items left to train on in {source}")
    by_lang: dict[str, list[Example]] = {}
    for item in train_items:
        ex = to_example(item, include_rationale=include_rationale, system_prompt=system_prompt)
        by_lang.setdefault(item.lang, []).append(ex)
    counts = {lang: len(v) for lang, v in sorted(by_lang.items())}
    n = train_samples or len(train_items)
    train = balanced_sample(by_lang, n, temperature, seed)
    per_lang: dict[str, list[MCQItem]] = {}
    for item in sorted(dev, key=lambda i: (i.lang, i.id)):
        per_lang.setdefault(item.lang, []).append(item)
    dev = [i for lang in sorted(per_lang) for i in per_lang[lang][:dev_max_per_lang]]
    return Splits(train, dev, counts, language_weights(counts, temperature), dict(file_hashes or {}))


def load_splits(sources: Sequence[str | Path], **kwargs: object) -> Splits:
    """Read every item (bad records raise with file and line) and build the splits."""
    from globmed_edge.data.readers import iter_items

    paths = data_files(sources) if sources else sample_files()
    items = list(iter_items(paths))
    if not items:
        raise DataError("no items found", ", ".join(map(str, paths)))
    src = ", ".join(map(str, sources)) if sources else "the packaged sample data"
    return build_splits(items, source=src, file_hashes=hash_files(paths), **kwargs)  # type: ignore[arg-type]


def splits_for(cfg: TrainConfig) -> Splits:
    """The splits a training config asks for (the trainer and `train --dry-run` share this)."""
    return load_splits(cfg.data, languages=cfg.languages, train_samples=cfg.train_samples,
                       temperature=cfg.sampling_temperature, dev_fraction=cfg.dev_fraction,
                       dev_max_per_lang=cfg.dev_max_per_lang, include_rationale=cfg.include_rationale,
                       system_prompt=cfg.system_prompt, seed=cfg.seed, train_splits=cfg.train_splits)


def data_fingerprint(splits: Splits) -> str:
    """A hash of the exact example order; a resumed run must see the same one."""
    h = hashlib.sha256()
    for ex in splits.train:
        h.update(json.dumps([ex.id, ex.messages], ensure_ascii=False).encode())
    return h.hexdigest()[:16]
