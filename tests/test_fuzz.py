"""Issue #16 acceptance: generated malformed data files, manifests and result records each get
a clean one-line error and a non-zero exit from the command that reads them, never a traceback.

Hypothesis runs derandomized (the same cases every run, as every test here is deterministic);
each test counts its cases and asserts that the planned number ran.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from globmed_edge.cli.main import cli

CASES = int(os.environ.get("GLOBMED_FUZZ_CASES", "200"))
SETTINGS = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ITEM: dict[str, Any] = {"id": "q-1", "dataset": "fuzz", "lang": "en", "split": "test", "question": "Which?",
                        "options": {"A": "one", "B": "two"}, "answer": "A", "license": "CC0"}

# Values of every JSON type, and the textual oddities the issue found.
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                       st.text(max_size=8), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
RAW_ODDITIES = st.sampled_from([
    "[" * 3000 + "]" * 3000,  # nesting past the recursion limit
    "9" * 5000,  # an integer over 4,300 digits
    "NaN", "Infinity", "-Infinity",
    '"\\ud800"',  # a lone surrogate
    '"en\\n"',
])


def clean_failure(result: Result, *last: str) -> None:
    """Non-zero exit, no traceback, and a last stderr line that starts with one of `last`
    (`error: ...`, or the command's own one-line summary of the problems it listed)."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert err and any(p in err[-1] for p in last), (err, result.stdout[-300:])


# ----------------------------------------------------------------------------- data files


@st.composite
def bad_item_line(draw: st.DrawFn) -> str:
    """One JSONL line that is not a valid item: a mutated item, or not JSON at all."""
    kind = draw(st.sampled_from(["drop", "retype", "answer", "lang", "raw", "odd", "dupe", "options"]))
    item = json.loads(json.dumps(ITEM))
    if kind == "drop":
        del item[draw(st.sampled_from(["id", "lang", "question", "options", "answer"]))]
    elif kind == "retype":
        key = draw(st.sampled_from(["id", "lang", "question", "options", "answer", "split"]))
        value = draw(ODD_VALUES.filter(lambda v: not isinstance(v, str) or key in ("options",)))
        item[key] = value
    elif kind == "answer":
        item["answer"] = draw(st.sampled_from(["C", "Z", "", "AB", "a"]))
    elif kind == "lang":
        item["lang"] = draw(st.sampled_from(["en\n", "", "EN", "english", "e", "en_US", " en"]))
    elif kind == "raw":
        return draw(st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b.strip() != b"")
                    ).decode("latin-1")
    elif kind == "odd":
        text = json.dumps(item)
        odd = draw(RAW_ODDITIES)
        field = "lang" if odd == '"en\\n"' else draw(st.sampled_from(["question", "answer", "lang"]))
        return text.replace(json.dumps(item[field]), odd, 1)
    elif kind == "dupe":  # the gold answer given twice, differently
        return json.dumps(item)[:-1] + ', "answer": "B"}'
    else:
        item["options"] = {letter: "x" for letter in draw(st.sampled_from([["A"], [], ["A", "A2"], ["1", "2"]]))}
    return json.dumps(item, ensure_ascii=False)


def test_fuzz_malformed_data_files():
    ran = []

    @SETTINGS
    @given(line=bad_item_line(), before=st.integers(0, 3), after=st.integers(0, 3))
    def one(line: str, before: int, after: int) -> None:
        good = [json.dumps({**ITEM, "id": f"g-{i}"}) for i in range(before + after)]
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "in.jsonl"
            lines = [*good[:before], line, *good[before:]]
            src.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
            runner = CliRunner()
            result = runner.invoke(cli, ["data", "validate", str(src)])
            clean_failure(result, "1 bad records in 1 file(s)")
            assert f"in.jsonl:{before + 1}: " in result.output  # names the file and line
            out = Path(d) / "out.jsonl"
            result = runner.invoke(cli, ["data", "convert", str(src), "--out", str(out)])
            clean_failure(result, "error: 1 bad record(s); nothing written")
            assert not out.exists() and sorted(os.listdir(d)) == ["in.jsonl"]  # nothing half-written
            stats = runner.invoke(cli, ["data", "stats", str(src)])
            assert stats.exception is None or isinstance(stats.exception, SystemExit), repr(stats.exception)
        ran.append(1)

    one()
    assert len(ran) == CASES


# ------------------------------------------------------------------------------- manifests


def _build(root: Path) -> Path:
    from globmed_edge.manifest import Manifest, hash_build_files, write_manifest

    build = root / "b"
    build.mkdir()
    (build / "model.gguf").write_bytes(b"GGUF" + b"\x01" * 64)
    write_manifest(build, Manifest(name="b", format="gguf", quantization="q8_0", bits_per_weight=8.5,
                                   files=hash_build_files(build), source={"id": "x"}))
    return build


@st.composite
def bad_manifest(draw: st.DrawFn) -> str:
    from globmed_edge.manifest import _TYPES, _is

    data: dict[str, Any] = {"schema_version": 1, "name": "b", "format": "gguf", "quantization": "q8_0", "bits_per_weight": 8.5,
            "files": [{"path": "model.gguf", "size": 68, "sha256": "0" * 64}], "source": {"id": "x"}}
    kind = draw(st.sampled_from(["retype", "path", "size", "digest", "entry", "unknown", "missing", "raw",
                                 "format", "version"]))
    if kind == "retype":
        key = draw(st.sampled_from(sorted(_TYPES)))
        data[key] = draw(ODD_VALUES.filter(lambda v: not _is(v, _TYPES[key])))
    elif kind == "path":
        data["files"][0]["path"] = draw(st.one_of(
            st.sampled_from(["../../etc/passwd", "/etc/shadow", "a/../../x", "", "./model.gguf", "a//b",
                             "C:\\x", "manifest.json", "x\x00y"]),
            st.text(max_size=6).map(lambda t: "../" + t)))
    elif kind == "size":
        data["files"][0]["size"] = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=2**40 + 1),
                                                  st.just("68"), st.just(68.0), st.booleans(), st.none()))
    elif kind == "digest":
        data["files"][0]["sha256"] = draw(st.text(max_size=70).filter(lambda t: len(t) != 64))
    elif kind == "entry":
        data["files"] = [draw(st.one_of(ODD_VALUES, st.just({"path": "model.gguf"}),
                                        st.just({"path": "model.gguf", "size": 1, "sha256": "0" * 64, "x": 1})))]
    elif kind == "unknown":
        data[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in _TYPES and k != "schema_version"))] = 1
    elif kind == "missing":
        del data[draw(st.sampled_from(["name", "format", "quantization", "files", "source"]))]
    elif kind == "raw":
        return draw(st.one_of(RAW_ODDITIES, st.text(max_size=30).filter(lambda t: not _parses(t))))
    elif kind == "format":
        data["format"] = draw(st.text(max_size=6).filter(lambda t: t not in ("hf", "gguf", "onnx", "gptq")))
    else:
        data["schema_version"] = draw(st.one_of(st.integers().filter(lambda v: v != 1), st.just("1"), st.just(True)))
    return json.dumps(data)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except (ValueError, RecursionError):
        return False


def test_fuzz_malformed_manifests():
    ran = []

    @SETTINGS
    @given(text=bad_manifest())
    def one(text: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            build = _build(Path(d))
            (build / "manifest.json").write_bytes(text.encode("utf-8", "surrogatepass"))
            runner = CliRunner()
            result = runner.invoke(cli, ["models", "verify", str(build)])
            clean_failure(result, "error: ")
            assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
            assert "ok" not in result.stdout
            listing = runner.invoke(cli, ["models", "list", "--builds", d, "--json"])
            assert listing.exit_code == 0 and listing.exception is None, listing.output
            row = json.loads(listing.stdout)["builds"][0]
            assert row["status"].startswith("INVALID: ") and "\n" not in row["status"]
        ran.append(1)

    one()
    assert len(ran) == CASES


# --------------------------------------------------------------------------- result records


def _records() -> list[dict[str, Any]]:
    from globmed_edge.bench.records import AccuracyRecord, BuildInfo, ThroughputRecord, to_dict

    build = BuildInfo("b", "/b", "gguf", "q8_0", 1000, 8.5)
    acc = AccuracyRecord(build=build, device="cpu", task="mcq-loglik-0shot", lang="en", datasets=("d",),
                         split="test", items_hash="h", n=2, correct_letter=1, correct_text=1, accuracy=0.5,
                         accuracy_text=0.5, ci_low=0.1, ci_high=0.9, item_ids=("a", "b"), gold=("A", "B"),
                         pred=("A", "A"), pred_text=("A", "A"), letter_logprobs=((-0.1, -2.0), (-0.2, -1.0)))
    thr = ThroughputRecord(build=build, device="cpu", threads=1, prompt_tokens=10, new_tokens=5, repeats=1,
                           prefill_tokens_per_s=100.0, decode_tokens_per_s=20.0, ttft_s=0.1, peak_rss_bytes=1,
                           runs=({"decode_tokens_per_s": 20.0},))
    return [json.loads(json.dumps(to_dict(acc))), json.loads(json.dumps(to_dict(thr)))]


@st.composite
def bad_record(draw: st.DrawFn) -> str:
    import typing

    from globmed_edge.bench.records import RECORD_TYPES, _type_ok

    rec = draw(st.sampled_from(_records()))
    cls = RECORD_TYPES[rec["type"]]
    kind = draw(st.sampled_from(["retype", "build", "build-key", "unknown", "raw", "inconsistent", "missing"]))
    if kind == "retype":
        hints = typing.get_type_hints(cls)
        key = draw(st.sampled_from(sorted(k for k in rec if k not in ("type", "build", "schema_version"))))
        value = draw(ODD_VALUES.filter(lambda v: not _type_ok(_tuple(v), hints[key])))
        rec[key] = value
    elif kind == "build":
        rec["build"] = draw(st.one_of(st.text(max_size=5), st.integers(), st.none(), st.lists(st.integers())))
    elif kind == "build-key":
        from globmed_edge.bench.records import BuildInfo

        key = draw(st.sampled_from(["name", "size_bytes", "format", "unverified"]))
        hint = typing.get_type_hints(BuildInfo)[key]
        rec["build"][key] = draw(st.sampled_from([7, "7", None, [1], 1.5]).filter(
            lambda v: not _type_ok(_tuple(v), hint)))
    elif kind == "unknown":
        rec[draw(st.text(min_size=1, max_size=5).filter(lambda k: k not in rec))] = 1
    elif kind == "raw":
        return draw(st.one_of(st.text(max_size=20).filter(lambda t: t.strip() and not _parses(t)),
                              st.sampled_from(["[]", "1", '"x"', "null"])))
    elif kind == "inconsistent" and rec["type"] == "accuracy":
        change = draw(st.sampled_from([{"n": 0, "accuracy": 0.4}, {"pred": ["A"]}, {"correct_letter": 5},
                                       {"accuracy": 0.9}, {"n": -1}]))
        rec.update(change)
    else:
        del rec[draw(st.sampled_from(["device", "build"]))]
    return json.dumps(rec)


def _tuple(v: Any) -> Any:
    return tuple(_tuple(x) for x in v) if isinstance(v, list) else v


def test_fuzz_malformed_result_records():
    ran = []
    good = [json.dumps(r) for r in _records()]

    @SETTINGS
    @given(line=bad_record())
    def one(line: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            results = Path(d) / "results.jsonl"
            results.write_text("\n".join([good[0], line, good[1]]) + "\n", encoding="utf-8")
            result = CliRunner().invoke(cli, ["bench", "report", str(results), "--out", str(Path(d) / "r"),
                                              "--no-charts"])
            clean_failure(result, "error: ")
            assert "results.jsonl:2" in result.stderr, result.stderr
            assert not (Path(d) / "r" / "report.md").exists()
        ran.append(1)

    one()
    assert len(ran) == CASES
