import json

from click.testing import CliRunner

from globmed_edge.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"id": "a-test-0", "dataset": "a", "lang": "am", "split": "test", "question": "የወባ ምልክት ምንድን ነው?",
        "options": {"A": "ትኩሳት", "B": "ሳል", "C": "ሽፍታ"}, "answer": "A"}


def test_validate_names_each_bad_line_and_exits_nonzero(tmp_path):
    f = write(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "a-test-1", "answer": "Q"},
                                      {**GOOD, "id": "a-test-2", "options": {"A": "x"}}])
    r = run("data", "validate", f)
    assert r.exit_code == 1
    assert f"{f}:2: answer 'Q' is not among the options" in r.output
    assert f"{f}:3: field 'options' needs at least 2 options" in r.output
    assert "1 valid items, 2 bad records" in r.output


def test_validate_ok_and_json(tmp_path):
    f = write(tmp_path / "d.jsonl", [GOOD])
    assert run("data", "validate", f).exit_code == 0
    r = run("data", "validate", "--json", write(tmp_path / "e.jsonl", [GOOD, {**GOOD}]))
    data = json.loads(r.output)
    assert r.exit_code == 1 and data["problems"] == 1 and data["problem_list"][0]["line"] == 2


def test_validate_strict_is_one_line_error(tmp_path):
    f = write(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "x", "lang": "Amharic"}])
    r = run("data", "validate", "--strict", f)
    assert r.exit_code == 1
    assert r.output.strip() == f"error: {f}:2: lang 'Amharic' is not an ISO 639 code (like 'en', 'sw', 'nso', 'pt-BR')"


def test_stats_table_and_json(tmp_path):
    f = write(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "b", "lang": "ar", "split": "dev",
                                             "options": {"A": "حمى", "B": "سعال"}}])
    r = run("data", "stats", f)
    assert r.exit_code == 0, r.output
    assert "2 items in 2 languages" in r.output and "Amharic" in r.output and "rtl" in r.output
    data = json.loads(run("data", "stats", "--json", f).output)
    assert data["by_lang"] == {"am": 1, "ar": 1} and data["by_n_options"] == {"2": 1, "3": 1}


def test_stats_shared_data(shared_mcq):
    r = run("data", "stats", "--json", shared_mcq)
    data = json.loads(r.output)
    assert r.exit_code == 0 and data["items"] == 31150 and data["languages"] == 19


def test_convert_csv_atomically(tmp_path):
    src = tmp_path / "q.csv"
    src.write_text("Q,a,b,ans\nFever?,yes,no,a\nCough?,x,y,B\n", encoding="utf-8")
    out = tmp_path / "out" / "q.jsonl"
    args = ["data", "convert", src, "--out", out, "--lang", "en", "--split", "test",
            "--map", "question=Q", "--map", "options=a,b", "--map", "answer=ans"]
    r = run(*args)
    # 'a' is not a letter nor an option text: one bad record, nothing written by default
    assert r.exit_code == 1 and not out.exists() and "nothing written" in r.output
    assert not list(out.parent.glob(".*.tmp"))
    r = run(*args, "--skip-bad")
    assert r.exit_code == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"id": "q-test-1", "dataset": "q", "lang": "en", "split": "test", "question": "Cough?",
                     "options": {"A": "x", "B": "y"}, "answer": "B"}]


def test_unknown_command_suggests():
    r = run("quantise")
    assert r.exit_code == 2 and "Did you mean 'quantize'?" in r.output
