"""Cost of `globmed-edge quantize` per build, and the first accuracy-versus-size table.

For each build (default: the CLI's default builds of the default model) two stages run, each in
its own child process started from a fresh launcher, so that the launcher's
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` is the peak RSS of that stage alone (including
any process the exporter starts, e.g. the ONNX model builder):

* export: the format's exporter (HF -> format conversion + quantization, and the importance
  matrix for GGUF k-quants), as the runner calls it;
* parity: the source model's reference pass (transformers) + the build through its own backend.

A baseline child that only imports torch + transformers is measured the same way, and every peak
is shown next to the fp16 size of the model (the issue's target: peak RSS < 2x fp16 size).

    nice python lab/perf/quantize_cost.py [--model smollm2-135m-instruct] [--format onnx:int8,int4 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHER = ("import json, resource, subprocess, sys, time\n"
            "t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode\n"
            "print(json.dumps({'rc': rc, 'wall_s': time.perf_counter() - t,\n"
            "                  'peak_rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))\n")


def measure(cmd: list[str]) -> dict:
    """Run `cmd` under a fresh launcher; its wall time and peak RSS (with its descendants)."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"launcher failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {result['rc']}): {out.stderr[-2000:]}")
    return result


def fp16_bytes(model: Path) -> int:
    """2 bytes x parameters, counted from the safetensors headers (no weights loaded)."""
    from globmed_edge.quantize.source import parameter_count

    return 2 * parameter_count(model)


# ---------------------------------------------------------------------------- the stages (children)


def stage_export(model: Path, target: str, build: Path, report: Path) -> None:
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.runner import (
        QuantizeOptions,
        QuantizeRun,
        check_source,
        parse_targets,
    )

    (t,) = parse_targets([target])
    run = QuantizeRun(model, model.name, check_source(model), QuantizeOptions(out=build.parent), print)
    cal = run.calibration() if run.uses_calibration(t) else None
    from globmed_edge.quantize.base import EXPORTERS

    build.mkdir(parents=True)
    result = EXPORTERS.load(t.format)().export(ExportRequest(
        model, build, t.quantization, calibration=cal, options=run.export_options(t)))
    report.write_text(json.dumps({"bits_per_weight": result.bits_per_weight,
                                  "size": sum(p.stat().st_size for p in build.rglob("*") if p.is_file())}))


def stage_parity(model: Path, target: str, build: Path, report: Path) -> None:
    from globmed_edge.quantize.parity import check_parity, compute_reference
    from globmed_edge.quantize.runner import parse_targets

    (t,) = parse_targets([target])
    assert t.spec is not None
    ref = compute_reference(model)
    result = check_parity(build, t.format, ref, t.spec.thresholds)
    report.write_text(json.dumps({**result.to_dict(), "reference_seconds": ref.seconds}))


# ---------------------------------------------------------------------------- the table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--format", action="append", dest="formats")
    ap.add_argument("--stage", choices=["export", "parity"], help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from globmed_edge.models import MODELS, prepare, resolve_model

    if args.stage:
        model = resolve_model(args.model)
        {"export": stage_export, "parity": stage_parity}[args.stage](model, args.target, args.build, args.report)
        return
    model = prepare(args.model, progress=False) if args.model in MODELS else resolve_model(args.model)
    from globmed_edge.quantize.runner import DEFAULT_FORMATS, check_available, parse_targets

    targets = parse_targets(args.formats or list(DEFAULT_FORMATS))
    fp16 = fp16_bytes(model)
    mib = 1 << 20
    print(f"model {args.model}: {fp16 // 2 / 1e6:.1f}M parameters, fp16 size {fp16 / mib:.0f} MiB; "
          f"{os.cpu_count()} CPUs; each stage in its own process\n")
    base = measure([sys.executable, "-c", "import torch, transformers"])
    rows = [("python + torch + transformers (baseline)", "-", base["wall_s"], base["peak_rss"])]
    quality = []
    with tempfile.TemporaryDirectory(prefix="quantize-cost-") as tmp:
        for t in targets:
            why = check_available(t)
            if why:
                print(f"skipping {t.label}: {why}")
                continue
            build, rep = Path(tmp) / t.label.replace(":", "-"), Path(tmp) / f"{t.label}.json"
            me = [sys.executable, __file__, "--model", str(model), "--target", t.label, "--build", str(build)]
            e = measure([*me, "--stage", "export", "--report", str(rep)])
            info = json.loads(rep.read_text())
            p = measure([*me, "--stage", "parity", "--report", str(rep)])
            par = json.loads(rep.read_text())
            rows += [(t.label, "export", e["wall_s"], e["peak_rss"]), (t.label, "parity", p["wall_s"], p["peak_rss"])]
            quality.append((t.label, info["size"], info["bits_per_weight"], par))
            sys.stdout.flush()
    print(f"{'build':42} {'stage':7} {'wall s':>8} {'peak RSS MiB':>13} {'x fp16':>7}")
    for label, stage, wall, rss in rows:
        print(f"{label:42} {stage:7} {wall:8.1f} {rss / mib:13.0f} {rss / fp16:7.2f}")
    print(f"\n{'build':14} {'size MiB':>9} {'bits/w':>7} {'tokens':>7} {'top-1':>6} {'mean KL':>9} "
          f"{'greedy':>7} {'parity':>6}  (reference pass {quality[0][3]['reference_seconds'] if quality else 0:.1f} s)")
    for label, size, bpw, par in quality:
        print(f"{label:14} {size / mib:9.1f} {bpw or 0:7.2f} {'same' if par['tokens_identical'] else 'DIFF':>7} "
              f"{par['top1_agreement']:6.3f} {par['mean_kl']:9.4g} "
              f"{par['greedy_match_tokens']:>3}/{par['greedy_tokens']:<3} {'pass' if par['passed'] else 'FAIL':>6}")
    print(f"\n(time {time.strftime('%Y-%m-%d %H:%M')} UTC; wall times on a shared machine vary run to run)")


if __name__ == "__main__":
    main()
