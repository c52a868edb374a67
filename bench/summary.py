"""Numbers a report shows, computed only from records (so every one can be re-derived).

The recommendation (which build for which clinic) lives in recommend.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from globmed_edge.bench.records import (
    AccuracyRecord,
    BuildInfo,
    DriftRecord,
    Record,
    ThroughputRecord,
)
from globmed_edge.bench.stats import macro
from globmed_edge.languages import lookup


@dataclass(frozen=True)
class BuildSummary:
    build: BuildInfo
    task: str
    device: str
    langs: tuple[str, ...]
    macro_accuracy: float
    macro_accuracy_text: float | None
    low_resource_accuracy: float  # macro over low-resource languages (NaN if none)
    high_resource_accuracy: float
    n: int
    extraction_failure_rate: float | None


def accuracy_records(records: Sequence[Record]) -> list[AccuracyRecord]:
    return [r for r in records if isinstance(r, AccuracyRecord)]


def groups(records: Sequence[Record]) -> list[tuple[str, str]]:
    """(task, device) pairs present, sorted."""
    return sorted({(r.task, r.device) for r in accuracy_records(records)})


def builds_in(records: Sequence[Record]) -> list[BuildInfo]:
    seen: dict[str, BuildInfo] = {}
    for r in records:
        if isinstance(r, AccuracyRecord | ThroughputRecord):
            seen.setdefault(r.build.name, r.build)
    return sorted(seen.values(), key=lambda b: (-b.size_bytes, b.name))


def summarise(records: Sequence[Record], task: str, device: str) -> list[BuildSummary]:
    acc = [r for r in accuracy_records(records) if r.task == task and r.device == device]
    out = []
    for b in builds_in(acc):
        rs = sorted((r for r in acc if r.build.name == b.name), key=lambda r: r.lang)
        low = [r.accuracy for r in rs if lookup(r.lang).is_low_resource]
        high = [r.accuracy for r in rs if not lookup(r.lang).is_low_resource]
        texts = [r.accuracy_text for r in rs if r.accuracy_text is not None]
        fails = [r.extraction_failures for r in rs if r.extraction_failures is not None]
        n = sum(r.n for r in rs)
        out.append(BuildSummary(
            b, task, device, tuple(r.lang for r in rs), macro([r.accuracy for r in rs]),
            macro(texts) if len(texts) == len(rs) else None, macro(low), macro(high), n,
            sum(fails) / n if fails and n else None))
    return out


def throughputs(records: Sequence[Record]) -> list[ThroughputRecord]:
    return sorted((r for r in records if isinstance(r, ThroughputRecord)),
                  key=lambda r: (r.device, r.build.name, r.threads or 0))


def drifts(records: Sequence[Record]) -> list[DriftRecord]:
    return sorted((r for r in records if isinstance(r, DriftRecord)),
                  key=lambda r: (r.task, r.device, r.reference, r.build, r.lang))


def fmt_pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"
