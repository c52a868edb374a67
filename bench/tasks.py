"""Bench tasks: which items are scored, how they are sampled, and where shots come from.

A `TaskSpec` selects MCQ items from any sources the data readers understand (project JSONL,
`../shared/data/mcq`, GlobMed, MMedBench, CSV) by dataset, language and split. `--limit N`
keeps N items per language, chosen by a seeded hash of the item id (a stratified, deterministic
sample: the same N items every run and on every machine, independent of file order). k-shot
prompts take k solved items of the same language from the train/dev splits of the same sources
(preferring the same dataset), never from the scored split, and never the scored items.

Tasks are found through one registry (`TASKS`): `mcq-loglik` (`run_loglik`, here) and
`mcq-generate` (`bench.generate.run_generate`); each returns a `LangOutcome`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from globmed_edge.backends.base import Backend
from globmed_edge.data.schema import MCQItem
from globmed_edge.errors import ConfigError, DataError
from globmed_edge.mcq.scorer import DEFAULT_BATCH_ITEMS, score_mcq
from globmed_edge.registry import LazyRegistry

TASKS = LazyRegistry("task", {
    "mcq-loglik": "globmed_edge.bench.tasks:run_loglik",
    "mcq-generate": "globmed_edge.bench.generate:run_generate",
})
MODES = {"loglik": "mcq-loglik", "generate": "mcq-generate"}
SHOT_SPLITS = ("train", "dev")


@dataclass(frozen=True)
class TaskSpec:
    sources: tuple[str, ...]
    langs: tuple[str, ...] = ()  # empty = every language found
    datasets: tuple[str, ...] = ()  # empty = every dataset found
    split: str = "test"
    limit: int | None = None  # per language
    shots: int = 0
    mode: str = "loglik"
    seed: int = 0

    @property
    def task_name(self) -> str:
        return f"{MODES[self.mode]}-{self.shots}shot"


@dataclass(frozen=True)
class TaskData:
    """Items to score per language, and the shots for each language."""

    spec: TaskSpec
    items: dict[str, list[MCQItem]]
    shots: dict[str, list[MCQItem]]

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(sorted({i.dataset for its in self.items.values() for i in its}))


@dataclass(frozen=True)
class LangOutcome:
    """What a task's run function returns for one language's items, in item order."""

    pred: tuple[str, ...]
    pred_text: tuple[str, ...]
    letter_logprobs: tuple[tuple[float, ...], ...]
    failures: int | None = None


def run_loglik(backend: Backend, items: Sequence[MCQItem], shots: Sequence[MCQItem], *,
               batch_items: int = DEFAULT_BATCH_ITEMS, max_new_tokens: int = 0, progress: bool = False) -> LangOutcome:
    """The `mcq-loglik` task: letter and length-normalised text rules from one scoring pass."""
    scores = score_mcq(backend, items, shots={items[0].lang: shots} if items else None,
                       batch_items=batch_items, progress=progress)
    return LangOutcome(
        pred=tuple(s.pred_letter for s in scores), pred_text=tuple(s.pred_text for s in scores),
        letter_logprobs=tuple(tuple(round(x, 5) for x in s.letter_logprobs) for s in scores))


def _rank(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def items_hash(items: Sequence[MCQItem]) -> str:
    return hashlib.sha256("\n".join(sorted(i.id for i in items)).encode()).hexdigest()[:16]


def stratified_sample(items: Sequence[MCQItem], limit: int | None, seed: int = 0) -> dict[str, list[MCQItem]]:
    """lang -> up to `limit` items, chosen by seeded hash of the id, returned in id-hash order."""
    by_lang: dict[str, list[MCQItem]] = {}
    for it in items:
        by_lang.setdefault(it.lang, []).append(it)
    out = {}
    for lang in sorted(by_lang):
        ranked = sorted(by_lang[lang], key=lambda i: _rank(seed, i.id))
        out[lang] = ranked if limit is None else ranked[:limit]
    return out


def pick_shots(pool: Sequence[MCQItem], lang: str, k: int, *, datasets: Sequence[str] = (),
               exclude: frozenset[str] | set[str] = frozenset(), seed: int = 0) -> list[MCQItem]:
    """k train/dev items of `lang` (same datasets first), deterministic; raises when too few."""
    cands = [i for i in pool if i.lang == lang and i.split in SHOT_SPLITS and i.id not in exclude]
    cands.sort(key=lambda i: (i.dataset not in datasets, _rank(seed, "shot:" + i.id)))
    if len(cands) < k:
        raise ConfigError(f"--shots {k}: language {lang!r} has only {len(cands)} train/dev items in the "
                          f"given data to draw shots from")
    return cands[:k]


def load_task(spec: TaskSpec) -> TaskData:
    """Read the sources once, select the scored items and their shots."""
    from globmed_edge.data.readers import iter_items

    if spec.mode not in MODES:
        raise ConfigError(f"unknown mode {spec.mode!r} (known: {', '.join(MODES)})")
    if spec.limit is not None and spec.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {spec.limit}")
    if spec.shots < 0:
        raise ConfigError(f"--shots must be >= 0, got {spec.shots}")
    if spec.shots and spec.split in SHOT_SPLITS:
        raise ConfigError(f"--shots needs the scored split to be test (got {spec.split!r}): shots come from train/dev")
    for src in spec.sources:
        if not Path(src).exists():
            raise DataError("no such file or folder", src)
    every = [i for i in iter_items(spec.sources) if isinstance(i, MCQItem)]
    pool = [i for i in every if not spec.datasets or i.dataset in spec.datasets]
    wanted = [i for i in pool if i.split == spec.split and (not spec.langs or i.lang in spec.langs)]
    if not wanted:
        found = sorted({(i.lang, i.split) for i in every})
        raise DataError(f"no {spec.split} items for languages {', '.join(spec.langs) or 'any'} "
                        f"(found lang/split: {', '.join(f'{a}/{b}' for a, b in found[:20]) or 'none'})",
                        ", ".join(spec.sources))
    missing = [lang for lang in spec.langs if lang not in {i.lang for i in wanted}]
    if missing:
        raise DataError(f"no {spec.split} items for language(s) {', '.join(missing)}", ", ".join(spec.sources))
    items = stratified_sample(wanted, spec.limit, spec.seed)
    scored = {i.id for its in items.values() for i in its}
    shots = {}
    if spec.shots:
        for lang, its in items.items():
            ds = sorted({i.dataset for i in its})
            shots[lang] = pick_shots(pool, lang, spec.shots, datasets=ds, exclude=scored, seed=spec.seed)
    return TaskData(spec, items, shots)


def default_sources() -> tuple[str, ...]:
    """`../shared/data/mcq` when it is beside the checkout, else the packaged sample set."""
    from importlib.resources import files

    from globmed_edge.paths import shared_data_dir

    shared = shared_data_dir()
    if shared is not None and (shared / "mcq").is_dir():
        return (str(shared / "mcq"),)
    return (str(files("globmed_edge.samples").joinpath("mcq_sample.jsonl")),)
