"""How lossy a build is, in one word, from the drift its parity check measured.

"pass" only says a build is within the thresholds of its own quantization, and those are wide
for the low-bit formats: ONNX int4 passes at top-1 0.517 like GGUF q8_0 at 0.938. The grade
puts every build on one scale instead, whatever its format, so builds of one model can be told
apart in the quantize table, `models list`, `models show` and the chat picker.
"""

from __future__ import annotations

import math
from typing import Any

#: (lowest top-1 agreement, highest mean KL(source || build)) of each grade, best first. Both
#: must hold; a build gets the first grade it meets, else "lossy".
#:
#: The bands are the project's own pass thresholds of the 8-bit builds (GGUF q8_0, ONNX int8:
#: top-1 >= 0.90, mean KL <= 0.03) and of the 4-bit k-quants (q4_k_m, q5_k_m: 0.68, 0.2), and
#: they separate what was measured on the default model (SmolLM2-135M, the parity probes of
#: quantize/parity.py; lab/results/cpu-smollm2-default/quantize.json, docs/quantize.md and
#: quantize/gguf.py's notes), mean KL / top-1:
#:   near-lossless  f16 1e-5 / 1.00;  q8_0 0.0082 / 0.938;  ONNX int8 0.0025 / 0.979 and, with
#:                  int8 activations, 0.0086 / 0.927
#:   small loss     q6_k 0.023 / 0.873 (imatrix 0.016 / 0.898: top-1 just under the bar);
#:                  q4_k_m 0.069 / 0.794 (0.102 / 0.762 without imatrix);  q5_k_m without
#:                  imatrix 0.118 / 0.735
#:   lossy          q4_0 0.285 / 0.617 (0.430 / 0.565 without imatrix);  ONNX int4 0.543 / 0.517
#: Both numbers count because each misleads alone: a tiny random model has near-flat
#: distributions, so its q4_k_m has a small KL (0.018) at top-1 0.479. The greedy match is not
#: used: it is one 24-token sample that a single early flip zeroes (ONNX int8 at KL 0.0086
#: matched 2/24 tokens, q8_0 at 0.0082 matched 20/24).
GRADES: tuple[tuple[str, float, float], ...] = (
    ("near-lossless", 0.90, 0.03),
    ("small loss", 0.68, 0.2),
)
LOSSY = "lossy"
UNKNOWN = "-"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def parity_grade(parity: dict[str, Any] | None) -> str:
    """"near-lossless", "small loss" or "lossy" from a parity record's `top1_agreement` and
    `mean_kl` (a manifest's `parity`, or one language of its `languages`); "-" when either is
    missing or not a finite number (no parity check recorded, an old or damaged manifest)."""
    if not isinstance(parity, dict):
        return UNKNOWN
    top1, kl = _number(parity.get("top1_agreement")), _number(parity.get("mean_kl"))
    if top1 is None or kl is None:
        return UNKNOWN
    for grade, min_top1, max_kl in GRADES:
        if top1 >= min_top1 and kl <= max_kl:
            return grade
    return LOSSY
