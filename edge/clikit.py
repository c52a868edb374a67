"""Small helpers for every click command, the stages' own and the top-level CLI's (tables, sizes,
comma lists, progress, shared data options). Below the stages, so bench, quantize and bundle
commands use them without importing the top-level CLI package."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """A plain-text table; column widths count characters (good enough for mixed scripts)."""
    from globmed_edge.textsafe import clean_line

    # Cells carry data (dataset names, option keys, CSV headers): no control character reaches the terminal.
    cells = [[clean_line(c) for c in headers]] + [[clean_line(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def human_size(n: float | None) -> str:
    """Bytes for people: "512 B", "100.6 MiB", "2.08 GiB"; "-" when unknown."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


def split_csv(values: Sequence[str]) -> tuple[str, ...]:
    """Repeatable comma-separated options (--langs en,sw --langs am) as one tuple, blanks dropped."""
    return tuple(v.strip() for raw in values for v in raw.split(",") if v.strip())


def progress_enabled() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """ "45 s", "3 min 05 s", "1 h 02 min": a duration for progress lines."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class LineProgress:
    """Progress for logs and pipes, where a bar would be noise: a line on stderr at most every
    `every_s` seconds, "scoring am: 64/100 items in 4 min 10 s; ~2 min 20 s left"."""

    def __init__(self, total: int, desc: str, unit: str = "items", every_s: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.clock = clock or time.monotonic
        self.start = self.last = self.clock()
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last < self.every_s or self.done >= self.total:
            return  # the caller reports the finished total itself
        self.last = now
        took = now - self.start
        left = f"; ~{duration(took * (self.total - self.done) / self.done)} left" if self.done else ""
        click.echo(f"{self.desc}: {self.done}/{self.total} {self.unit} in {duration(took)}{left}", err=True)

    def close(self) -> None:
        pass


def item_progress(total: int, desc: str, enabled: bool = True) -> Any:
    """A progress reporter with `update(n)` and `close()`: a tqdm bar on a terminal, a
    `LineProgress` otherwise, None when not `enabled`."""
    if not enabled or total <= 0:
        return None
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="item", leave=False)
    return LineProgress(total, desc)


def data_source_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--format / --lang / --split / --dataset / --license / --map, shared by data commands."""
    f = click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN",
                     help="CSV column mapping, e.g. --map question=Q --map options=opa,opb,opc,opd.")(f)
    f = click.option("--license", "license_", default=None, help="License for records that carry none.")(f)
    f = click.option("--dataset", default=None, help="Dataset name for records that carry none.")(f)
    f = click.option("--split", default=None, help="Split for records that carry none (train/dev/test).")(f)
    f = click.option("--lang", default=None, help="Language code for records that carry none.")(f)
    f = click.option("--format", "fmt", default="auto", show_default=True,
                     type=click.Choice(["auto", "jsonl", "globmed", "mmedbench", "csv"]),
                     help="Input layout; auto detects it from the path.")(f)
    return f
