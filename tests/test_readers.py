import json
from pathlib import Path

import pytest

from globmed_edge.data.readers import CsvMapping, Defaults, detect_format, iter_items, read
from globmed_edge.data.schema import MCQItem
from globmed_edge.data.validate import scan
from globmed_edge.errors import DataError


def rec(i, lang="en", split="test", **kw):
    base = {"id": f"t-{split}-{i}", "dataset": "t", "lang": lang, "split": split,
            "question": f"Question {i}?", "options": {"A": f"yes {i}", "B": f"no {i}"}, "answer": "A"}
    base.update(kw)
    return base


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def problems(path, **kw):
    return [(p.line, p.reason) for p in scan([path], **kw).problems]


def test_planted_errors_are_each_reported_with_line(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [
        rec(0),
        '{"id": "t-test-1", "dataset": "t", "lang": "en", "split": "te',  # truncated JSON
        rec(2, answer=None),  # missing answer
        rec(3, answer="D"),  # answer not among options
        rec(4, options={}),  # empty options
        rec(0),  # duplicate id
        rec(6),
    ])
    found = problems(f)
    assert [line for line, _ in found] == [2, 3, 4, 5, 6]
    reasons = " | ".join(r for _, r in found)
    assert "invalid JSON" in reasons and "missing field 'answer'" in reasons
    assert "not among the options" in reasons and "at least 2 options" in reasons
    assert "duplicate id 't-test-0'" in reasons and f"{f}:1" in reasons
    report = scan([f])
    assert report.items == 2 and not report.ok


def test_strict_stops_at_first(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [rec(0), rec(1, answer="Z"), rec(2, answer="Y")])
    with pytest.raises(DataError, match=r"bad.jsonl:2: answer 'Z'"):
        scan([f], strict=True)


def test_wrong_encoding_is_reported(tmp_path):
    f = tmp_path / "latin1.jsonl"
    bad_line = json.dumps(rec(1, question="Fi\u00e8vre?"), ensure_ascii=False).encode("latin-1")
    f.write_bytes(json.dumps(rec(0)).encode() + b"\n" + bad_line + b"\n")
    col = bad_line.index(b"\xe8") + 1
    assert problems(f) == [(2, f"not valid UTF-8 (byte 0xe8 at column {col}); re-save the file as UTF-8")]


def test_bom_and_blank_lines_are_tolerated(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps(rec(0)).encode() + b"\n\n" + json.dumps(rec(1)).encode() + b"\n")
    assert scan([f]).items == 2


def test_unknown_languages_and_scripts_validate(tmp_path):
    rows = [rec(0, lang="dv", question="ދިވެހި ސުވާލު؟", options={"A": "އާ", "B": "ނޫން"}),
            rec(1, lang="ti", question="ሕማም ዓሶ እንታይ እዩ?", options={"A": "ረስኒ", "B": "ሳዕሊ"}),
            rec(2, lang="he", question="מהו חום?", options={"A": "כן", "B": "לא"})]
    f = write_jsonl(tmp_path / "other.jsonl", rows)
    report = scan([f])
    assert report.ok and set(report.by_lang) == {"dv", "ti", "he"}


def test_globmed_layout_streams_json_arrays(tmp_path):
    root = tmp_path / "globmed"
    (root / "sw").mkdir(parents=True)
    (root / "ar").mkdir()
    (root / "sw" / "train.json").write_text(json.dumps([
        {"question": "Q1", "options": ["a", "b", "c"], "answer": 1},
        {"question": "Q2", "options": {"A": "x", "B": "y"}, "answer": "y"},
        {"question": "Q3", "options": {"A": "x", "B": "y"}, "answer": "B", "rationale": "because"},
    ], indent=1), encoding="utf-8")
    (root / "ar" / "test.jsonl").write_text(json.dumps(
        {"question": "ما هو؟", "options": ["نعم", "لا"], "answer": "A"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert detect_format(root) == "globmed"
    items = list(iter_items([root]))
    mcqs = [i for i in items if isinstance(i, MCQItem)]
    assert mcqs == items
    assert [(i.lang, i.split, i.answer) for i in mcqs] == [("ar", "test", "A"), ("sw", "train", "B"),
                                                             ("sw", "train", "B"), ("sw", "train", "B")]
    assert mcqs[1].id == "globmed-sw-train-0" and mcqs[3].rationale == "because"


def test_globmed_truncated_array_reports_line(tmp_path):
    root = tmp_path / "gm"
    (root / "fr").mkdir(parents=True)
    (root / "fr" / "test.json").write_text(
        '[\n {"question": "Q", "options": ["a", "b"], "answer": 0},\n {"question": "R", "opt', encoding="utf-8")
    recs = list(read(root))
    assert recs[0].item is not None
    assert recs[1].problem is not None and "truncated" in recs[1].problem.reason and recs[1].line == 3


def test_small_chunks_stream_the_same(tmp_path, monkeypatch):
    from globmed_edge.data import readers

    path = tmp_path / "a.json"
    rows = [{"question": f"Q{i} é漢", "options": ["a", "b"], "answer": 0} for i in range(50)]
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    got = [obj for _, obj in readers._iter_json_array(path, chunk_size=7)]
    assert got == rows


def test_mmedbench(tmp_path):
    d = tmp_path / "Test"
    d.mkdir()
    f = d / "French.jsonl"
    write_jsonl(f, [
        {"question": "Q?", "options": {"A": "un", "B": "deux"}, "answer_idx": "B", "answer": "deux",
         "rationale": "r", "meta_info": "x"},
        {"question": "Q?", "options": {"A": "un", "B": "deux"}, "answer_idx": "A,B", "answer": "un"},
        {"question": "Q?", "options": {"A": "un", "B": "deux"}, "answer_idx": "A", "answer": "deux"},
    ])
    assert detect_format(f) == "mmedbench"
    recs = list(read(f))
    assert recs[0].item is not None and recs[0].item.lang == "fr" and recs[0].item.split == "test"
    assert isinstance(recs[0].item, MCQItem)
    assert recs[0].item.answer == "B" and recs[0].item.rationale == "r"
    assert recs[1].problem is not None and recs[2].problem is not None
    assert "multi-answer" in recs[1].problem.reason
    assert "disagree" in recs[2].problem.reason


def test_csv_with_mapping(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("qid,Question,opa,opb,opc,Correct\n1,Fever?,yes,no,,A\n2,\"Multi\nline\",x,y,z,z\n3,Bad?,a,b,,E\n",
                 encoding="utf-8")
    mapping = CsvMapping.from_pairs(["id=qid", "question=Question", "answer=Correct", "options=opa,opb,opc"])
    recs = list(read(f, defaults=Defaults(lang="en", split="test", dataset="csvset"), mapping=mapping))
    assert isinstance(recs[0].item, MCQItem) and isinstance(recs[1].item, MCQItem)
    assert recs[0].item.options == {"A": "yes", "B": "no"}
    assert recs[1].item.answer == "C" and recs[1].item.question == "Multi\nline"
    assert recs[2].problem is not None and recs[2].line == 5 and "'E'" in recs[2].problem.reason


def test_csv_missing_columns(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("question,A,B\nQ,x,y\n", encoding="utf-8")
    recs = list(read(f))
    assert len(recs) == 1 and recs[0].line == 1
    assert recs[0].problem is not None
    assert "missing column(s): answer, lang, split" in recs[0].problem.reason


def test_csv_mapping_rejects_unknown_field():
    with pytest.raises(DataError, match="unknown field 'qestion'"):
        CsvMapping.from_pairs(["qestion=Q"])


def test_missing_path():
    with pytest.raises(DataError, match="no such file"):
        list(read("/nonexistent/file.jsonl"))


def test_sample_set_is_valid_and_covers_required_languages(sample_mcq, sample_chat):
    from globmed_edge.languages import lookup

    report = scan([sample_mcq])
    assert report.ok, report.problems[:3]
    langs = set(report.by_lang)
    assert len(langs) >= 12 and all(n >= 10 for n in report.by_lang.values())
    assert sum(lookup(c).is_low_resource for c in langs) >= 4
    assert any(lookup(c).is_rtl for c in langs)
    chat = scan([sample_chat])
    assert chat.ok and chat.by_kind["chat"] == chat.items > 0


def test_shared_data_counts(shared_mcq):
    report = scan([shared_mcq])
    assert report.ok
    assert report.items == 31150 and len(report.by_lang) == 19
