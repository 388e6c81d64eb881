"""Statistics for the evaluation report: Wilson score intervals, mean intervals, count histograms.

    from lego_inversion.evaluation.stats import wilson_interval, mean_interval
    lo, hi = wilson_interval(92, 200)          # Lego "Frozen in ice" VQA count, Table 2 of Lego (§5.3)

Table 2 of Lego reports counts out of 200 images; we add the rate and a 95% Wilson score interval, which
(unlike the normal approximation) stays inside [0, 1] and behaves at k = 0 and k = n.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n.

    centre = (p + z²/2n) / (1 + z²/n),  half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n),  p = k/n.
    Returns (nan, nan) when n == 0.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate_summary(k: int, n: int) -> dict:
    """`{"k", "n", "rate", "ci_low", "ci_high"}` for k successes out of n (rate = k/n, Wilson 95%)."""
    lo, hi = wilson_interval(k, n)
    return {"k": int(k), "n": int(n), "rate": (k / n) if n else math.nan, "ci_low": lo, "ci_high": hi}


def mean_interval(values: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high) with a normal-approximation interval mean ± z·s/√n (s: sample std, ddof=1).

    With one value the interval collapses to the mean; with none everything is nan.
    """
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return (mean, mean, mean)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = z * math.sqrt(var / n)
    return (mean, mean - half, mean + half)


def mean_summary(values: Sequence[float]) -> dict:
    mean, lo, hi = mean_interval(values)
    return {"n": len(values), "mean": mean, "ci_low": lo, "ci_high": hi}


def count_histogram(counts: Iterable[int]) -> dict[str, int]:
    """Histogram of subject counts as `{"0": a, "1": b, ...}` over 0..max (string keys for JSON)."""
    c = Counter(int(x) for x in counts)
    if not c:
        return {}
    return {str(i): c.get(i, 0) for i in range(0, max(c) + 1)}
