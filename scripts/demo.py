"""`make demo`: the main job on the default model, offline, each step a plain `globmed-edge` command.

prepare -> quantize (GGUF q8_0 and q4_k_m, ONNX int4, each with its parity check) -> bench run over
six languages (right-to-left and low-resource included) with throughput as the chat gets it ->
bench report (HTML) -> bench recommend for one RAM tier and language set -> a one-shot chat answer
from the recommended build. It prints every command before running it, so a newcomer can rerun
any step by hand, and ends with where the report is and the command that opens the chat app.

Usage: python scripts/demo.py [--bin .venv/bin] [--out report/demo] [--limit 6]

Builds go to the data directory (GLOBMED_EDGE_HOME or the platform default), where `chat` finds
them; results and the report go to --out. Each run measures anew: `bench run --force` sets the
earlier records of these builds aside (results.replaced-<time>.jsonl, nothing lost), so a rerun
with another data home does not recommend builds of the last one. A format this machine cannot build (GGUF without
llama-cpp-python) is reported by quantize as unavailable and left out of the rest. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
FORMATS = ("gguf:q8_0,q4_k_m", "onnx:int4")
LANGS = "en,fr,hi,ar,am,zu"  # Arabic right-to-left; Hindi (Devanagari), Amharic (Ge'ez) and Zulu low-resource
CLINIC = ("4", "am,en")  # the RAM tier (GiB) and languages of the clinic the demo recommends for
QUESTION = "What are the danger signs of dehydration in a child?"


def run(cmd: list[str], *, capture: bool = False, ok: tuple[int, ...] = (0,)) -> str:
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE if capture else None)
    print(f"  ({time.perf_counter() - start:.0f} s, exit {proc.returncode})", flush=True)
    if proc.returncode not in ok:
        raise SystemExit(f"demo: step failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return proc.stdout or ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=str(ROOT / ".venv" / "bin"), help="folder with the globmed-edge executable")
    ap.add_argument("--out", default=str(ROOT / "report" / "demo"), help="results and report folder")
    ap.add_argument("--limit", default="6", help="items per language (a demo: too few to tell builds apart, as the report says)")
    args = ap.parse_args(argv)
    ge = str(Path(args.bin) / "globmed-edge")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.perf_counter()

    prepared = run([ge, "models", "prepare", MODEL], capture=True)
    print(prepared, end="")
    source = next(line.split(" ready at ", 1)[1].strip() for line in prepared.splitlines() if " ready at " in line)
    quant = run([ge, "quantize", MODEL, *[a for f in FORMATS for a in ("--format", f)], "--json"], capture=True)
    builds = [b for b in json.loads(quant)["builds"] if b["status"] in ("built", "skipped")]
    for b in json.loads(quant)["builds"]:
        parity = b.get("parity") or {}
        print(f"  {b['build']}: {b['status']}" + (f", parity {'passed' if parity.get('passed') else 'FAILED'} "
              f"(top-1 {parity.get('top1_agreement')}, mean KL {parity.get('mean_kl')})" if parity else
              f" ({b.get('message', '')})"))
    if not builds:
        raise SystemExit("demo: quantize made no build on this machine")

    results = out / "results.jsonl"
    data = ROOT.parent / "shared" / "data" / "mcq"
    data_args = ["--data", str(data)] if data.is_dir() else []  # else bench's default: the packaged sample
    run([ge, "bench", "run", source, *[b["path"] for b in builds], "--reference", source, *data_args,
         "--langs", LANGS, "--limit", args.limit, "--throughput", "--threads", "auto", "--repeats", "3",
         "--new-tokens", "32", "--force", "--out", str(results)])
    run([ge, "bench", "report", str(results), "--out", str(out)])
    tier, langs = CLINIC
    run([ge, "bench", "recommend", "--results", str(results), "--ram", tier, "--langs", langs])
    decision = json.loads(run([ge, "bench", "recommend", "--results", str(results), "--ram", tier, "--langs", langs,
                               "--json"], capture=True))
    build = decision["choice_path"]
    if build is None:
        print(f"  no build recommended ({decision['summary']}); the answer comes from the source model")
        build = source
    run([ge, "chat", build, "--prompt", QUESTION, "--max-tokens", "64"])

    print(f"\ndemo done in {time.perf_counter() - started:.0f} s")
    print(f"report: {out / 'report.html'} (and report.md)")
    print(f"recommended for a {tier} GB laptop speaking {langs}: {decision['choice'] or 'none'}")
    print(f"open the chat app: {ge} chat {shlex.quote(build)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
