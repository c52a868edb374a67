"""`data validate` and `data stats`: one streaming pass over any number of sources."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from globmed_edge.data.readers import CsvMapping, Defaults, Record, read
from globmed_edge.data.schema import MCQItem, Problem
from globmed_edge.errors import DataError


@dataclass
class Report:
    """What one pass over the data found: counts of good items, and every problem."""

    items: int = 0
    problems: list[Problem] = field(default_factory=list)
    by_dataset: Counter[str] = field(default_factory=Counter)
    by_lang: Counter[str] = field(default_factory=Counter)
    by_split: Counter[str] = field(default_factory=Counter)
    by_n_options: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_lang_split: Counter[tuple[str, str]] = field(default_factory=Counter)
    with_rationale: int = 0
    files: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "files": len(self.files),
            "languages": len(self.by_lang),
            "problems": len(self.problems),
            "by_dataset": dict(sorted(self.by_dataset.items())),
            "by_lang": dict(sorted(self.by_lang.items())),
            "by_split": dict(sorted(self.by_split.items())),
            "by_n_options": {str(k): v for k, v in sorted(self.by_n_options.items())},
            "by_kind": dict(sorted(self.by_kind.items())),
            "by_lang_split": {f"{lang}/{split}": n for (lang, split), n in sorted(self.by_lang_split.items())},
            "with_rationale": self.with_rationale,
        }


def records(
    sources: Iterable[str | Path], fmt: str = "auto", defaults: Defaults = Defaults(),
    mapping: CsvMapping | None = None,
) -> Iterator[Record]:
    """Records from all sources, with duplicate ids (across all of them) turned into problems."""
    seen: dict[str, str] = {}
    for source in sources:
        for rec in read(source, fmt, defaults=defaults, mapping=mapping):
            if rec.item is not None:
                where = f"{rec.path}:{rec.line}"
                first = seen.get(rec.item.id)
                if first is not None:
                    yield Record(rec.path, rec.line, problem=Problem(
                        rec.path, rec.line, f"duplicate id {rec.item.id!r} (first seen at {first})", rec.item.id))
                    continue
                seen[rec.item.id] = where
            yield rec


def scan(
    sources: Iterable[str | Path], fmt: str = "auto", *, strict: bool = False,
    defaults: Defaults = Defaults(), mapping: CsvMapping | None = None,
    on_record: Any = None,
) -> Report:
    """Count and check every record. With `strict`, the first problem raises DataError."""
    report = Report()
    for rec in records(sources, fmt, defaults, mapping):
        report.files.add(rec.path)
        if on_record is not None:
            on_record(rec)
        if rec.problem is not None:
            if strict:
                raise DataError(rec.problem.reason, rec.problem.path, rec.problem.line)
            report.problems.append(rec.problem)
            continue
        item = rec.item
        assert item is not None
        report.items += 1
        report.by_dataset[item.dataset] += 1
        report.by_lang[item.lang] += 1
        report.by_split[item.split] += 1
        report.by_kind[item.kind] += 1
        report.by_lang_split[(item.lang, item.split)] += 1
        if isinstance(item, MCQItem):
            report.by_n_options[len(item.options)] += 1
            if item.rationale:
                report.with_rationale += 1
    return report
