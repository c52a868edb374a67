"""ONNX int8 with fp32 compute (accuracy_level 1) versus int8 activations (level 4), and int4.

Builds each variant of the default model with onnxruntime-genai's builder (the exporter that
`globmed-edge quantize` uses), then measures for each: decode tokens/s of a greedy chat reply
through the onnx backend (median of --rounds), and the parity check against the source model
(top-1 agreement, mean KL, greedy tokens in common). Why int8 builds use level 4 by default.

    python lab/perf/onnx_int8_levels.py [MODEL] [--rounds 3] [--tokens 48]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

QUESTION = "What are the danger signs of dehydration in a young child?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="smollm2-135m-instruct")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    args = ap.parse_args()

    from globmed_edge.backends import open_backend
    from globmed_edge.backends.base import GenerationRequest
    from globmed_edge.models import resolve_model
    from globmed_edge.quantize.base import ExportRequest
    from globmed_edge.quantize.onnx import QUANTIZATIONS, ONNXExporter
    from globmed_edge.quantize.parity import check_parity, compute_reference

    source = resolve_model(args.model)
    variants = {"int8 level 1": ("int8", 1), "int8 level 4": ("int8", 4), "int4 level 4": ("int4", 4)}
    with tempfile.TemporaryDirectory() as tmp:
        builds = {}
        for name, (quant, level) in variants.items():
            out = Path(tmp) / name.replace(" ", "-")
            out.mkdir()
            ONNXExporter().export(ExportRequest(source=source, out_dir=out, quantization=quant,
                                                options={"accuracy_level": level}))
            builds[name] = out
        reference = compute_reference(source)
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, path in builds.items():
                be = open_backend(path, verify=False)  # this script's own fresh exports: no manifest
                be.load()
                try:
                    req = GenerationRequest.from_text(QUESTION, max_new_tokens=args.tokens)
                    times = [ev.time for ev in be.stream(req) if ev.token_id is not None]
                    rates[name].append((len(times) - 1) / (times[-1] - times[0]))
                finally:
                    be.close()
        for name, path in builds.items():
            quant = variants[name][0]
            p = check_parity(path, "onnx", reference, QUANTIZATIONS[quant].thresholds).to_dict()
            print(f"{name}: decode {statistics.median(rates[name]):6.1f} tok/s "
                  f"(runs {[round(r, 1) for r in rates[name]]}); top-1 {p['top1_agreement']:.3f}, "
                  f"mean KL {p['mean_kl']:.5f}, greedy {p['greedy_match_tokens']}/{p['greedy_tokens']}",
                  flush=True)


if __name__ == "__main__":
    main()
