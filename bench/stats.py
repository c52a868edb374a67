"""Small, dependency-free statistics for bench reports (checked against hand-computed values).

* `wilson` - the Wilson score interval for a binomial proportion (better than the normal
  approximation at small n and near 0 or 1, which is where per-language test sets live).
* `mcnemar_exact` - the exact (binomial) two-sided McNemar test on paired correct/incorrect
  outcomes: only discordant pairs count, b = right->wrong, c = wrong->right.
* `kl_divergence` - KL(P || Q) in nats between two answer distributions.
* `resolves` - whether n items can resolve a change of `delta` (Wilson half-width <= delta).
* `paired_diff_ci` - Newcombe's hybrid score interval (his method 10) for the difference of two
  accuracies measured on the same items: the non-inferiority test of the recommendation.
* `items_to_resolve` - how many items would make that interval's lower bound clear a margin,
  if the observed proportions of the four paired outcomes held.
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
    # exact at the ends: at k = 0 (k = n) the bound is 0 (1) in theory, a rounding error off in floats
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


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


def paired_diff_ci(both: float, only_a: float, only_b: float, neither: float, z: float = Z95) -> tuple[float, float, float]:
    """(difference, low, high): accuracy of A minus accuracy of B on the same items, with the 95%
    interval of Newcombe (1998, Statistics in Medicine 17:2635, method 10).

    `both` items right for A and B, `only_a` right for A only, `only_b` right for B only,
    `neither` wrong for both. The interval combines the Wilson intervals of the two accuracies
    with their correlation (phi) over the paired table, so concordant items narrow it. Counts may
    be fractional (`items_to_resolve` scales them)."""
    n = both + only_a + only_b + neither
    if n <= 0:
        return 0.0, -1.0, 1.0
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = _wilson_f(pa, n, z)
    lb, ub = _wilson_f(pb, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0
    lo_w = (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2
    hi_w = (ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2
    diff = pa - pb
    return diff, max(-1.0, diff - math.sqrt(max(lo_w, 0.0))), min(1.0, diff + math.sqrt(max(hi_w, 0.0)))


def _wilson_f(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson interval from a proportion and a (possibly fractional) n."""
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def items_to_resolve(both: int, only_a: int, only_b: int, neither: int, margin: float,
                     limit: int = 1_000_000) -> int | None:
    """Smallest number of items at which A's paired interval against B would lie above -margin,
    if the observed proportions of the four outcomes held; None when the observed difference is
    itself at or below -margin (more items cannot show non-inferiority) or `limit` is not enough."""
    n = both + only_a + only_b + neither
    if n <= 0 or (only_a - only_b) / n <= -margin:
        return None

    def clears(m: int) -> bool:
        f = m / n
        return paired_diff_ci(both * f, only_a * f, only_b * f, neither * f)[1] > -margin

    if clears(n):
        return n
    if not clears(limit):
        return None
    lo, hi = n, limit  # clears(lo) is False, clears(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if clears(mid) else (mid, hi)
    return hi
