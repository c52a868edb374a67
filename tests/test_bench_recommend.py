"""The build recommendation: paired non-inferiority per language, fidelity, memory tiers, speed noise.

Synthetic records with known paired outcomes, so every verdict can be worked out by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from globmed_edge.bench.recommend import (
    INFERIOR,
    NON_INFERIOR,
    TOO_FEW,
    answer_spread,
    compare,
    language_sets,
    recommend,
)
from globmed_edge.bench.records import (
    AccuracyRecord,
    BuildInfo,
    Record,
    ResultsFile,
    ThroughputRecord,
)
from globmed_edge.bench.stats import items_to_resolve, paired_diff_ci, wilson
from globmed_edge.cli.main import cli
from globmed_edge.errors import DataError

MiB = 1024**2
LETTERS = "ABCD"


def gold_of(n: int, lang: str) -> str:
    return "".join(LETTERS[(i * 7 + len(lang)) % 4] for i in range(n))


def wrong(letter: str) -> str:
    return LETTERS[(LETTERS.index(letter) + 1) % 4]


def ref_pred(gold: str, right: int) -> str:
    """The first `right` items answered correctly, the rest wrong."""
    return "".join(g if i < right else wrong(g) for i, g in enumerate(gold))


def variant(pred: str, gold: str, *, r2w: int = 0, w2r: int = 0) -> str:
    """`pred` with `r2w` right answers made wrong and `w2r` wrong answers made right."""
    out = list(pred)
    right = [i for i, (p, g) in enumerate(zip(pred, gold, strict=True)) if p == g]
    bad = [i for i, (p, g) in enumerate(zip(pred, gold, strict=True)) if p != g]
    for i in right[:r2w]:
        out[i] = wrong(gold[i])
    for i in bad[:w2r]:
        out[i] = gold[i]
    return "".join(out)


def acc(name: str, lang: str, gold: str, pred: str, *, tilt: float = 0.0, fmt: str = "gguf", quant: str = "q8_0",
        size: int = 100 * MiB, parity_passed: bool | None = None) -> AccuracyRecord:
    """An accuracy record; `tilt` shifts log-likelihood towards option B (a build that drifts)."""
    k = sum(p == g for p, g in zip(pred, gold, strict=True))
    low, high = wilson(k, len(gold))
    lps = tuple(tuple((-0.3 if letter == p else -2.5) + (tilt if letter == "B" else 0.0) for letter in LETTERS)
                for p in pred)
    return AccuracyRecord(
        build=BuildInfo(name, f"/b/{name}", fmt, quant, size, parity_passed=parity_passed), device="cpu",
        task="mcq-loglik-0shot", lang=lang,
        datasets=("d",), split="test", items_hash=f"h-{lang}-{len(gold)}", n=len(gold), correct_letter=k,
        correct_text=k, accuracy=k / len(gold), accuracy_text=k / len(gold), ci_low=low, ci_high=high,
        item_ids=tuple(f"{lang}-{i}" for i in range(len(gold))), gold=tuple(gold), pred=tuple(pred),
        letter_logprobs=lps)


def tp(name: str, decode: float, *, rss: int = 300 * MiB, runs: tuple[float, ...] | None = None,
       load: float | None = 0.0, kv_per_token: int | None = None, context: int | None = None,
       prealloc: bool | None = None, long_rss: int | None = None, threads: int | str | None = "auto",
       size: int = 100 * MiB, logits_per_token: int | None = None) -> ThroughputRecord:
    runs = runs or (decode * 0.99, decode, decode * 1.01)
    return ThroughputRecord(
        build=BuildInfo(name, f"/b/{name}", "gguf", "q8_0", size), device="cpu", threads=threads,
        prompt_tokens=111, new_tokens=32, repeats=len(runs), prefill_tokens_per_s=300.0,
        decode_tokens_per_s=sorted(runs)[len(runs) // 2], ttft_s=0.3, peak_rss_bytes=rss,
        runs=tuple({"decode_tokens_per_s": r} for r in runs), load={} if load is None else {"other_cpu_share": load},
        context_tokens=context, kv_bytes_per_token=kv_per_token, kv_preallocated=prealloc,
        logits_bytes_per_token=logits_per_token, long_prompt_tokens=4000 if long_rss else None, long_peak_rss_bytes=long_rss)


N = 400  # items per language: enough to resolve a 2-point margin when builds agree closely


def two_language_records() -> list[Record]:
    """ref; `big` (+12.5 points in en, -10 in sw: best macro, inferior in sw); `small` (= ref but 2 flips)."""
    recs: list[Record] = []
    for lang in ("en", "sw"):
        gold = gold_of(N, lang)
        base = ref_pred(gold, 240)  # 60%
        recs.append(acc("ref", lang, gold, base, fmt="hf", quant="bfloat16", size=1000 * MiB))
        big = variant(base, gold, w2r=54, r2w=4) if lang == "en" else variant(base, gold, r2w=44, w2r=4)
        recs.append(acc("big", lang, gold, big))
        recs.append(acc("small", lang, gold, variant(base, gold, r2w=1, w2r=1), size=60 * MiB))
    recs += [tp("ref", 5.0, rss=1200 * MiB), tp("big", 90.0), tp("small", 40.0, rss=200 * MiB)]
    return recs


# --- statistics --------------------------------------------------------------------------------------------

def test_paired_interval_matches_newcombe_example() -> None:
    # Newcombe (1998), Table II example (a): 36 both, 12 first only, 2 second only, 0 neither
    diff, low, high = paired_diff_ci(36, 12, 2, 0)
    assert diff == pytest.approx(0.2)
    assert (round(low, 4), round(high, 4)) == (0.0569, 0.3404)
    # swapping the two builds mirrors the interval
    d2, l2, h2 = paired_diff_ci(36, 2, 12, 0)
    assert (d2, l2, h2) == pytest.approx((-diff, -high, -low))


def test_items_to_resolve_is_the_smallest_n_that_clears_the_margin() -> None:
    need = items_to_resolve(15, 0, 0, 5, 0.02)  # 20 items, identical answers
    assert need is not None and need > 20
    f = need / 20
    assert paired_diff_ci(15 * f, 0, 0, 5 * f)[1] > -0.02
    f = (need - 1) / 20
    assert paired_diff_ci(15 * f, 0, 0, 5 * f)[1] <= -0.02
    assert items_to_resolve(14, 0, 1, 5, 0.02) is None  # observed loss 5 points > margin: more items cannot help


# --- the decision -------------------------------------------------------------------------------------------

def test_best_macro_build_inferior_in_one_requested_language_is_not_recommended() -> None:
    recs = two_language_records()
    en_sw = recommend(recs, ram_gb=4, langs=["sw", "en"])
    big = next(b for b in en_sw.builds if b.name == "big")
    macro = {b.name: sum(v.accuracy for v in b.verdicts) / 2 for b in en_sw.builds}
    assert macro["big"] > macro["small"] and macro["big"] >= macro["ref"]  # best on macro accuracy (and fastest)
    assert [v.verdict for v in big.verdicts] == [INFERIOR, NON_INFERIOR]
    assert big.status == "excluded" and "inferior to the reference in sw" in big.reason
    assert en_sw.choice == "small"
    # a clinic that needs English only gets the build that is non-inferior there and fastest
    assert recommend(recs, ram_gb=4, langs=["en"]).choice == "big"


def test_answer_kls_a_few_thousandths_apart_are_equal_and_the_smaller_file_wins() -> None:
    """The Qwen2.5-Coder-1.5B case of 2026-12-04: q8_0 (KL 0.0008) and the packaged Q4_K_M (0.0016)
    differ by less than the same weights do between torch and llama.cpp; the smaller file wins."""
    from globmed_edge.bench.recommend import KL_FLOOR

    gold = gold_of(N, "en")
    base = ref_pred(gold, 240)
    recs: list[Record] = [acc("ref", "en", gold, base, fmt="hf", quant="bfloat16"),
                          acc("q8", "en", gold, base, tilt=0.05, size=1807 * MiB),
                          acc("packaged", "en", gold, base, tilt=0.08, size=1066 * MiB),
                          tp("ref", 4.1, rss=3511 * MiB), tp("q8", 9.4, rss=2032 * MiB),
                          tp("packaged", 15.7, rss=1888 * MiB)]
    d = recommend(recs, ram_gb=8)
    kl = {b.name: b.mean_kl for b in d.builds}
    assert kl["q8"] is not None and kl["packaged"] is not None
    assert 0 < kl["q8"] < kl["packaged"] < kl["q8"] + KL_FLOOR  # q8 "more faithful", within the floor
    assert d.choice == "packaged" and "smallest file" in d.summary
    # a gap beyond the floor still decides for the more faithful build
    far = [*recs[:2], acc("packaged", "en", gold, base, tilt=0.4, size=1066 * MiB), *recs[3:]]
    d = recommend(far, ram_gb=8)
    assert d.choice == "q8" and "most faithful" in d.summary


def test_a_tie_goes_to_the_build_whose_parity_check_did_not_fail_before_the_smaller_file() -> None:
    """Qwen 2026-12-04, zh: the re-quantized q4_k_m (parity FAILED, kept with --allow-drift) is 505
    bytes smaller than the packaged Q4_K_M and equal to it on everything measured."""
    gold = gold_of(N, "zh")
    base = ref_pred(gold, 240)

    def records(requant_parity: bool | None, packaged_parity: bool | None = None) -> list[Record]:
        return [acc("ref", "zh", gold, base, fmt="hf", quant="bfloat16"),
                acc("packaged", "zh", gold, base, tilt=0.05, size=1066 * MiB, parity_passed=packaged_parity),
                acc("requant", "zh", gold, base, tilt=0.06, size=1066 * MiB - 505, parity_passed=requant_parity),
                tp("ref", 4.1, rss=3511 * MiB), tp("packaged", 15.7, rss=1888 * MiB),
                tp("requant", 14.1, rss=1881 * MiB)]

    assert recommend(records(True), ram_gb=8).choice == "requant"  # both fine: the smaller file
    d = recommend(records(False), ram_gb=8)
    assert d.choice == "packaged" and "whose parity check did not fail" in d.summary
    why = {b.name: b.reason for b in d.builds}
    assert "parity check failed (kept with --allow-drift)" in why["requant"]
    d = recommend(records(False, packaged_parity=False), ram_gb=8)  # both failed: no claim that one passed
    assert d.choice == "requant" and "smallest file" in d.summary and "did not fail" not in d.summary


def test_builds_equal_within_noise_are_decided_by_speed_then_memory_not_by_point_estimate() -> None:
    gold = gold_of(N, "en")
    base = ref_pred(gold, 240)
    recs: list[Record] = [acc("ref", "en", gold, base, fmt="hf", quant="bfloat16"),
                          acc("ahead", "en", gold, variant(base, gold, w2r=2)),  # 2 items better: noise
                          acc("level", "en", gold, variant(base, gold, r2w=1, w2r=1), size=60 * MiB)]
    slow_ref = tp("ref", 10.0, rss=2000 * MiB)
    faster = recommend([*recs, slow_ref, tp("ahead", 30.0), tp("level", 80.0)], ram_gb=8)
    assert {v.verdict for b in faster.builds for v in b.verdicts if not b.is_reference} == {NON_INFERIOR}
    assert faster.choice == "level" and "fastest" in faster.summary
    # speeds equal within noise (a factor of 2): the smaller memory decides, still not the point estimate
    tied = recommend([*recs, slow_ref, tp("ahead", 80.0, rss=400 * MiB), tp("level", 50.0, rss=300 * MiB)],
                     ram_gb=8)
    assert tied.choice == "level" and "least memory" in tied.summary
    # ...memory level too: fidelity (the answer KL), then the smaller file; never the point estimate
    level = recommend([*recs, slow_ref, tp("ahead", 80.0), tp("level", 80.0)], ram_gb=8)
    assert level.choice == "level" and "smallest file" in level.summary  # KLs equal, 60 vs 100 MiB
    drifting = [*recs[:2], acc("level", "en", gold, variant(base, gold, r2w=1, w2r=1), tilt=0.4, size=60 * MiB)]
    faithful = recommend([*drifting, slow_ref, tp("ahead", 80.0), tp("level", 80.0)], ram_gb=8)
    assert faithful.choice == "ahead" and "most faithful" in faithful.summary
    flipped = recommend([*recs, slow_ref, tp("ahead", 80.0), tp("level", 30.0)], ram_gb=8)
    assert flipped.choice == "ahead" and "fastest" in flipped.summary


def test_fidelity_decides_where_accuracy_cannot_tell() -> None:
    gold = gold_of(20, "zu")
    const = "A" * 20  # every build answers A: near chance, one letter
    recs: list[Record] = [acc("ref", "zu", gold, const, fmt="hf", quant="bfloat16"),
                          acc("q8", "zu", gold, const, tilt=0.05), acc("int4", "zu", gold, const, tilt=1.2),
                          tp("ref", 10.0, rss=1200 * MiB), tp("q8", 70.0), tp("int4", 90.0, rss=250 * MiB)]
    d = recommend(recs, ram_gb=4)
    by = {b.name: b for b in d.builds}
    assert by["int4"].verdicts[0].verdict == TOO_FEW and by["int4"].verdicts[0].items_needed
    assert by["q8"].verdicts[0].spread is not None and by["q8"].verdicts[0].spread.degenerate
    assert by["int4"].status == "excluded" and "KL" in by["int4"].reason
    assert d.choice == "q8" and "fidelity decided" in d.summary


def test_not_timed_is_not_does_not_fit_and_kv_cache_counts() -> None:
    recs = two_language_records()[:6]  # accuracy records only
    d = recommend(recs, ram_gb=4)
    assert d.choice is None and {b.status for b in d.builds} == {"not timed", "excluded"}
    assert "no build is timed" in d.summary
    # small fits 2 GiB on its short-prompt RSS, but not with a growing KV cache at 4096 tokens
    kv = 100 * 1024  # bytes per token -> 400 MiB at 4096 tokens
    base = [*recs, tp("ref", 20.0, rss=1200 * MiB)]
    grow = recommend([*base, tp("small", 60.0, rss=200 * MiB, kv_per_token=kv, context=4096, prealloc=False)],
                     ram_gb=2, headroom_gb=1.5)
    small = next(b for b in grow.builds if b.name == "small")
    assert small.memory.kv_bytes == kv * 4096 and small.status == "does not fit"
    pre = recommend([*base, tp("small", 60.0, rss=200 * MiB, kv_per_token=kv, context=4096, prealloc=True)],
                    ram_gb=2, headroom_gb=1.5)
    assert pre.choice == "small"  # llama.cpp's cache is allocated at load: already in the peak RSS
    # a runtime that keeps every prompt position's logits: 50 KiB/token x 4096 = 200 MiB more
    logits = recommend([*base, tp("small", 60.0, rss=200 * MiB, kv_per_token=kv, context=4096, prealloc=True,
                                  logits_per_token=50 * 1024)], ram_gb=2, headroom_gb=0.1)
    mem = next(b for b in logits.builds if b.name == "small").memory
    assert mem.logits_bytes == 200 * MiB and mem.chat_bytes == 400 * MiB
    measured = recommend([*base, tp("small", 60.0, rss=200 * MiB, kv_per_token=kv, context=4096, prealloc=True,
                                    long_rss=700 * MiB)], ram_gb=2, headroom_gb=1.5)
    assert next(b for b in measured.builds if b.name == "small").status == "does not fit"  # measured run wins


def test_nothing_acceptable_names_the_least_bad_build_and_its_loss() -> None:
    kept = [r for r in two_language_records() if not isinstance(r, ThroughputRecord)]
    accs = [r for r in kept if isinstance(r, AccuracyRecord)]
    assert accs == kept
    recs: list[Record] = [r for r in accs if r.build.name != "small"]
    recs += [tp("ref", 5.0, rss=6000 * MiB), tp("big", 90.0)]
    d = recommend(recs, ram_gb=4, langs=["en", "sw"])
    assert d.choice is None and d.least_bad == "big"
    assert re.search(r"least bad: big, which loses 10\.0 points in sw", d.summary)


def test_unreliable_speed_does_not_decide() -> None:
    gold = gold_of(N, "en")
    base = ref_pred(gold, 240)
    recs: list[Record] = [acc("ref", "en", gold, base, fmt="hf", quant="bfloat16"), acc("a", "en", gold, base),
                          acc("b", "en", gold, base), tp("ref", 5.0, rss=3000 * MiB)]
    # a is 2.25x faster, but on a loaded machine: within a factor of 4 that is noise, so memory decides
    d = recommend([*recs, tp("a", 90.0, rss=500 * MiB, load=0.6), tp("b", 40.0, rss=300 * MiB)], ram_gb=8)
    a = next(b for b in d.builds if b.name == "a")
    assert a.speed is not None and a.speed.unreliable and d.choice == "b" and "least memory" in d.summary
    assert recommend([*recs, tp("a", 90.0, rss=500 * MiB, load=0.0), tp("b", 40.0, rss=300 * MiB)],
                     ram_gb=8).choice == "a"  # the same speeds measured on a quiet machine
    spread = recommend([*recs, tp("a", 90.0, rss=500 * MiB, runs=(30, 90, 95)), tp("b", 40.0, rss=300 * MiB)],
                       ram_gb=8)
    assert spread.choice == "b"
    # beyond a factor of 4 even an unreliable record is evidence (3.8 vs 104 tok/s is not noise)
    assert recommend([*recs, tp("a", 90.0, rss=500 * MiB, load=0.6), tp("b", 20.0, rss=300 * MiB)],
                     ram_gb=8).choice == "a"


def test_degenerate_answers_are_flagged_against_the_gold() -> None:
    gold = gold_of(20, "en")
    spread = answer_spread(acc("x", "en", gold, "A" * 19 + "B"))
    assert spread is not None and spread.degenerate and spread.top_letter == "A" and spread.top_share == 0.95
    same = answer_spread(acc("x", "en", gold, gold))
    assert same is not None and not same.degenerate
    all_a = "A" * 20  # gold that is itself one letter: answering it is not degenerate
    one_letter = answer_spread(acc("x", "en", all_a, all_a))
    assert one_letter is not None and not one_letter.degenerate


def test_compare_rejects_different_items_and_bad_arguments() -> None:
    a = acc("a", "en", gold_of(20, "en"), "A" * 20)
    b = acc("b", "en", gold_of(21, "en"), "A" * 21)
    with pytest.raises(DataError, match="different items"):
        compare(a, b, 2.0)
    recs = two_language_records()
    with pytest.raises(DataError, match="language 'am'"):
        recommend(recs, ram_gb=4, langs=["am"])
    with pytest.raises(DataError, match="ram_gb=-1"):
        recommend(recs, ram_gb=-1)
    with pytest.raises(DataError, match="reference build 'nope'"):
        recommend(recs, ram_gb=4, reference="nope")


# --- the CLI and the report agree -------------------------------------------------------------------------

def write(records: list[Record], path: Path) -> Path:
    rf = ResultsFile(path)
    for r in records:
        rf.append(r)
    return path


def test_recommend_cli_json_agrees_with_the_report(tmp_path: Path) -> None:
    res = write(two_language_records(), tmp_path / "r.jsonl")
    rep = CliRunner().invoke(cli, ["bench", "report", str(res), "--out", str(tmp_path / "rep"), "--no-charts"])
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text(encoding="utf-8")
    assert md.split("\n## ")[1].startswith("Recommendation")  # the decision comes first
    table = md.split("| language set |")[1].split("\n\n")[0].splitlines()[2:]
    sets = dict(language_sets(two_language_records()))
    checked = 0
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        label, langs = cells[0].strip("*"), cells[1]
        assert tuple(langs.split(", ")) == sets[label]
        for tier, cell in zip((4, 8, 16), cells[2:], strict=True):
            out = CliRunner().invoke(cli, ["bench", "recommend", "--results", str(res), "--ram", str(tier),
                                           "--langs", langs.replace(" ", ""), "--json"])
            assert out.exit_code == 0, out.output
            data = json.loads(out.output)
            assert data["choice"] == (cell.strip("*") if data["choice"] else None)
            checked += 1
    assert checked == 3 * len(sets) and "**small**" in md and "**big**" in md


def test_recommend_cli_text_and_errors(tmp_path: Path) -> None:
    res = write(two_language_records(), tmp_path / "r.jsonl")
    out = CliRunner().invoke(cli, ["bench", "recommend", "--results", str(res), "--ram", "4", "--langs", "sw,en"])
    assert out.exit_code == 0 and "recommended: small" in out.output
    assert sum(line.startswith("- ") for line in out.output.splitlines()) == 3  # one line per build
    bad = CliRunner().invoke(cli, ["bench", "recommend", "--results", str(res), "--ram", "4", "--langs", "am"])
    assert bad.exit_code != 0 and "language 'am'" in bad.output and len(bad.output.strip().splitlines()) == 1
    none = CliRunner().invoke(cli, ["bench", "recommend", "--ram", "4"])
    assert none.exit_code != 0 and "--results" in none.output
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{]\n{}\n", encoding="utf-8")
    broken = CliRunner().invoke(cli, ["bench", "recommend", "--results", str(junk), "--ram", "4"])
    assert broken.exit_code != 0 and "junk.jsonl:1" in broken.output
