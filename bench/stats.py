"""Small, dependency-free statistics for bench reports (checked against hand-computed values).

* `wilson` - the Wilson score interval for a binomial proportion (better than the normal
  approximation at small n and near 0 or 1, which is where per-language test sets live).
* `mcnemar_exact` - the exact (binomial) two-sided McNemar test on paired correct/incorrect
  outcomes: only discordant pairs count, b = right->wrong, c = wrong->right.
* `kl_divergence` - KL(P || Q) in nats between two answer distributions.
* `resolves` - whether n items can resolve a change of `delta` (Wilson half-width <= delta).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for k successes in n trials; (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be within 0..n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs (1.0 when b + c = 0)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # log-space binomial tail so large n does not underflow before summing
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))
               for i in range(k + 1))
    return min(1.0, 2.0 * tail)


def kl_divergence(p: Sequence[float], q: Sequence[float], eps: float = 1e-12) -> float:
    """KL(p || q) in nats; q is floored at eps so a zero there gives a large finite value."""
    if len(p) != len(q):
        raise ValueError(f"distributions differ in length ({len(p)} vs {len(q)})")
    return float(sum(pi * math.log(pi / max(qi, eps)) for pi, qi in zip(p, q, strict=True) if pi > 0))


def half_width(k: int, n: int) -> float:
    low, high = wilson(k, n)
    return (high - low) / 2


def resolves(k: int, n: int, delta: float = 0.02) -> bool:
    """True when the 95% Wilson half-width at this accuracy is at most `delta`."""
    return n > 0 and half_width(k, n) <= delta


def macro(values: Sequence[float]) -> float:
    """Unweighted mean (each language counts once); NaN for none."""
    return sum(values) / len(values) if values else math.nan
