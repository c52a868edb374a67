"""`globmed-edge data validate|stats|convert`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from globmed_edge.clikit import data_source_options, progress_enabled, table
from globmed_edge.errors import DataError
from globmed_edge.textsafe import clean_line


def _inputs(fmt: str, lang: str | None, split: str | None, dataset: str | None,
            license_: str | None, mapping: tuple[str, ...]) -> dict[str, Any]:
    from globmed_edge.data.readers import CsvMapping, Defaults

    return {
        "fmt": fmt,
        "defaults": Defaults(dataset=dataset, lang=lang, split=split, license=license_),
        "mapping": CsvMapping.from_pairs(mapping) if mapping else None,
    }


def _progress(desc: str) -> Any:
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=" records", disable=not progress_enabled(), mininterval=0.5)
    return bar, (lambda _rec: bar.update())


@click.group()
def data() -> None:
    """Validate, inspect and convert medical QA datasets.

    Reads the project JSONL schema (../shared/data/mcq), the GlobMed release layout
    (ROOT/<lang>/<split>.json), MMedBench JSONL (answer_idx) and CSV with a column mapping.
    Files are streamed, so large files are fine.
    """


@data.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@data_source_options
@click.option("--strict", is_flag=True, help="Stop at the first bad record.")
@click.option("--max-errors", default=200, show_default=True, help="Print at most this many problems (all are counted).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary with every problem.")
def validate(sources: tuple[Path, ...], fmt: str, lang: str | None, split: str | None, dataset: str | None,
             license_: str | None, mapping: tuple[str, ...], strict: bool, max_errors: int, as_json: bool) -> None:
    """Check every record; print each bad one as FILE:LINE: reason.

    Exits 1 when any record is bad (at the first with --strict), 0 when all are valid.
    """
    from globmed_edge.data.validate import scan

    bar, tick = _progress("validate")
    try:
        report = scan(sources, strict=strict, on_record=tick, **_inputs(fmt, lang, split, dataset, license_, mapping))
    finally:
        bar.close()
    if as_json:
        out = report.to_dict()
        out["problem_list"] = [{"path": p.path, "line": p.line, "reason": p.reason, "id": p.item_id}
                               for p in report.problems]
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        for p in report.problems[:max_errors]:
            click.echo(clean_line(p))
        if len(report.problems) > max_errors:
            click.echo(f"... and {len(report.problems) - max_errors} more problems")
        click.echo(
            f"{report.items} valid items, {len(report.problems)} bad records "
            f"in {len(report.files)} file(s), {len(report.by_lang)} language(s)", err=True)
    if not report.ok:
        raise SystemExit(1)


@data.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@data_source_options
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def stats(sources: tuple[Path, ...], fmt: str, lang: str | None, split: str | None, dataset: str | None,
          license_: str | None, mapping: tuple[str, ...], as_json: bool) -> None:
    """Items per dataset, language, split and option count.

    Counts valid items; bad records are counted separately (see `data validate`) and make the
    command exit 1 after printing the statistics.
    """
    from globmed_edge.data.validate import scan
    from globmed_edge.languages import lookup

    bar, tick = _progress("stats")
    try:
        report = scan(sources, on_record=tick, **_inputs(fmt, lang, split, dataset, license_, mapping))
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"{report.items:,} items in {len(report.by_lang)} languages, "
                   f"{len(report.by_dataset)} datasets, {len(report.files)} files"
                   + (f"; {len(report.problems)} bad records (run `data validate`)" if report.problems else ""))
        click.echo()
        click.echo(table(["dataset", "items"], sorted(report.by_dataset.items()), right=[1]))
        click.echo()
        rows = []
        for code, n in sorted(report.by_lang.items(), key=lambda kv: (-kv[1], kv[0])):
            lg = lookup(code)
            per_split = " ".join(f"{s}={report.by_lang_split[(code, s)]}"
                                 for s in ("train", "dev", "test") if report.by_lang_split[(code, s)])
            rows.append([code, lg.name if lg.known else "(not in table)", lg.script, lg.direction,
                         lg.resource, n, per_split])
        click.echo(table(["lang", "name", "script", "dir", "resource", "items", "splits"], rows, right=[5]))
        click.echo()
        click.echo(table(["split", "items"], sorted(report.by_split.items()), right=[1]))
        if report.by_n_options:
            click.echo()
            click.echo(table(["options", "items"], sorted(report.by_n_options.items()), right=[0, 1]))
        if report.by_kind.get("chat"):
            click.echo(f"\nchat/SFT items: {report.by_kind['chat']}; MCQ items: {report.by_kind.get('mcq', 0)}")
    if not report.ok:
        raise SystemExit(1)


@data.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output JSONL file (project schema). Written atomically.")
@data_source_options
@click.option("--only-lang", multiple=True, help="Keep only these languages (repeatable).")
@click.option("--only-split", multiple=True, help="Keep only these splits (repeatable).")
@click.option("--skip-bad", is_flag=True, help="Write the valid records even if some are bad (they are still reported).")
def convert(sources: tuple[Path, ...], out: Path, fmt: str, lang: str | None, split: str | None,
            dataset: str | None, license_: str | None, mapping: tuple[str, ...],
            only_lang: tuple[str, ...], only_split: tuple[str, ...], skip_bad: bool) -> None:
    """Convert any supported layout into the project JSONL schema.

    By default nothing is written if any record is bad; --skip-bad writes the valid ones.
    """
    import os
    import tempfile

    from globmed_edge.atomic import file_mode
    from globmed_edge.data.validate import records

    _check_output(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        removed = _sweep_stale(out)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise DataError(f"cannot write there ({exc.strerror})", out.parent) from None
    _lock(fd)  # held while writing: a later convert knows this temporary is not stale
    for name in removed:
        click.echo(f"removed {out.parent / name} (left by an interrupted convert)", err=True)
    os.fchmod(fd, file_mode(out))  # the replaced file's mode, else the umask's (mkstemp makes 0600)
    written, bad = 0, 0
    bar, tick = _progress("convert")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for rec in records(sources, **_inputs(fmt, lang, split, dataset, license_, mapping)):
                tick(rec)
                if rec.problem is not None:
                    bad += 1
                    click.echo(clean_line(rec.problem), err=True)
                    continue
                item = rec.item
                assert item is not None
                if (only_lang and item.lang not in only_lang) or (only_split and item.split not in only_split):
                    continue
                with _write_errors(out):
                    fh.write(json.dumps(item.to_dict(), ensure_ascii=False, allow_nan=False) + "\n")
                written += 1
            with _write_errors(out):  # a full disk shows here at the latest, not at close
                fh.flush()
                os.fsync(fh.fileno())
        if bad and not skip_bad:
            os.unlink(tmp)
            click.echo(f"error: {bad} bad record(s); nothing written (use --skip-bad to write the {written} valid ones)", err=True)
            raise SystemExit(1)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        bar.close()
    click.echo(f"wrote {written} items to {out}" + (f" ({bad} bad records skipped)" if bad else ""), err=True)


def _check_output(out: Path) -> None:
    """--out must be a new path or a regular file: a device, FIFO, folder or symbolic link is
    refused (renaming over /dev/full made the device a regular file)."""
    import os
    import stat

    try:
        st = os.lstat(out)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DataError(f"cannot check the output path ({exc.strerror})", out) from None
    if stat.S_ISLNK(st.st_mode):
        raise DataError("the output path is a symbolic link; not replaced (give the file it points to)", out)
    if not stat.S_ISREG(st.st_mode):
        raise DataError("the output path is not a regular file (a device, FIFO or folder); not replaced", out)


def _write_errors(out: Path) -> Any:
    """A full or failing disk while writing is a one-line error (the temporary file is removed)."""
    import contextlib

    @contextlib.contextmanager
    def guard() -> Any:
        try:
            yield
        except (OSError, ValueError) as exc:  # ValueError: a float JSON cannot hold (NaN)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DataError(f"cannot write the output ({reason})", out) from None

    return guard()


def _lock(fd: int) -> bool:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (ImportError, OSError):
        return False


def _sweep_stale(out: Path) -> list[str]:
    """Remove `.OUT.*.tmp` files of killed converts: a temporary nobody holds locked is stale."""
    import os

    removed = []
    for tmp in sorted(out.parent.glob(f".{out.name}.*.tmp")):
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _lock(fd):
                os.unlink(tmp)
                removed.append(tmp.name)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
