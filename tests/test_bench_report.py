"""The report: the decision first, verdict colours, and the committed default-model report kept current."""

from __future__ import annotations

from pathlib import Path

from globmed_edge.bench.charts import CHARTS
from globmed_edge.bench.recommend import recommend
from globmed_edge.bench.records import merge
from globmed_edge.bench.report import build_sections, to_html, to_markdown

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "lab" / "results" / "cpu-smollm2-default"


def test_committed_report_is_rendered_from_its_records_by_the_current_rule() -> None:
    """Golden file: lab/results/cpu-smollm2-default/report.md is what the code makes of results.jsonl
    (re-render with `globmed-edge bench report results.jsonl --out .` in that folder)."""
    records = merge([COMMITTED / "results.jsonl"])
    md = to_markdown(build_sections(records, list(CHARTS)))
    assert md == (COMMITTED / "report.md").read_text(encoding="utf-8")


def test_committed_records_are_not_decided_inside_the_noise() -> None:
    records = merge([COMMITTED / "results.jsonl"])
    for tier in (4, 8, 16):
        d = recommend(records, ram_gb=tier)
        by = {b.name: b for b in d.builds}
        # 20 items per language resolve nothing: no verdict may claim a difference
        assert {v.verdict for b in d.builds if not b.is_reference for v in b.verdicts} == {"too few items"}
        # the one-item macro lead of q4_k_m (20.0 vs 19.0) does not decide, nor do int4's few MiB
        assert by["smollm2-135m-instruct-onnx-int4"].status == "excluded"
        # q8_0 (81.1 tok/s), q4_k_m (74.2) and int8 (61.8) are equal within noise, and so is their memory;
        # fidelity leaves q8_0 and int8 (KL 0.0023, 0.0028; q4_k_m 0.0135), and q8_0 is the smaller file
        assert d.choice == "smollm2-135m-instruct-gguf-q8_0" and "smallest file" in d.summary
        assert "less faithful" in by["smollm2-135m-instruct-gguf-q4_k_m"].reason


def test_decision_comes_first_and_html_colours_verdicts() -> None:
    records = merge([COMMITTED / "results.jsonl"])
    sections = build_sections(records)
    assert [s.title for s in sections[:3]] == [
        "Recommendation", "Acceptable per language (margin 2 points, against smollm2-135m-instruct)", "Why, per build"]
    page = to_html(sections, {})
    assert page.index("<h2>Recommendation</h2>") < page.index("<h2>Builds</h2>")
    assert "class='unsure'" in page and "<code>globmed-edge bench recommend" in page
    assert "ONE LETTER" in page  # the constant answers are called out


def test_chart_of_a_language_with_no_correct_answer() -> None:
    """wilson(0, 6) puts the lower bound a rounding error above 0; the error bar must not go negative."""
    import pytest

    pytest.importorskip("matplotlib")
    from globmed_edge.bench.charts import accuracy_vs_size
    from globmed_edge.bench.records import AccuracyRecord, BuildInfo
    from globmed_edge.bench.stats import wilson

    low, high = wilson(0, 6)
    rec = AccuracyRecord(build=BuildInfo("b", "/b", "gguf", "q8_0", 10**8), device="cpu", task="t", lang="am",
                         datasets=("d",), split="test", items_hash="h", n=6, correct_letter=0, correct_text=0,
                         accuracy=0.0, accuracy_text=0.0, ci_low=max(low, 1e-17), ci_high=high,
                         item_ids=tuple(map(str, range(6))), gold=("A",) * 6, pred=("B",) * 6)
    png = accuracy_vs_size([rec])
    assert png is not None and png.startswith(b"\x89PNG")


def test_unwritable_report_folder_and_zero_repeats_are_one_line_errors(tmp_path: Path) -> None:
    """Issue #16 Low: a read-only --out was a traceback after rendering; --repeats 0 an IndexError."""
    import os

    from click.testing import CliRunner

    from globmed_edge.cli.main import cli

    if os.geteuid() == 0:
        target = Path("/proc/globmed-report")  # root writes anywhere else; /proc refuses everyone
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        target = ro / "report"
    r = CliRunner().invoke(cli, ["bench", "report", str(COMMITTED / "results.jsonl"), "--out", str(target), "--no-charts"])
    assert r.exit_code == 1 and "cannot write the report there" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["bench", "run", "x", "--repeats", "0"])
    assert r.exit_code == 2 and "--repeats" in r.output
