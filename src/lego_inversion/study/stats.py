"""Statistics for the human preference study (Lego, §5.3 and Table 2 "Human"), without scipy.

    from lego_inversion.study.stats import wilson_interval, sign_test, fleiss_kappa, majority
    wilson_interval(141, 200)          # (0.638, 0.763): 95% CI of a 70.5% win rate
    sign_test(141, 59)                 # exact two-sided binomial p-value under H0: p = 1/2
    fleiss_kappa([[7, 3], [10, 0]])    # agreement of raters over 2 categories, rows = pairs (any n per row)

The paper pairs 200 Lego images with 200 baseline images per concept, asks 10 raters per pair which image
"best represents the concept", and lets the majority vote decide each pair; Lego wins over 70% of pairs.
These functions turn such votes into a win rate with an uncertainty (Wilson score interval), a test against
chance (exact sign test) and a measure of how much raters agree (Fleiss' kappa, in its generalised form for
pairs answered by unequal numbers of raters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

from ..errors import UserError


def majority(votes_a: int, votes_b: int) -> str:
    """Outcome of one pair by majority vote (§5.3): "a", "b" or "tie" (equal votes are reported, not hidden)."""
    if votes_a < 0 or votes_b < 0:
        raise ValueError("vote counts must be non-negative")
    if votes_a > votes_b:
        return "a"
    if votes_b > votes_a:
        return "b"
    return "tie"


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    With p = successes/n and z the two-sided normal quantile,
    centre = (p + z^2/(2n)) / (1 + z^2/n), half = z/(1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2)).
    Returns (nan, nan) when n == 0.
    """
    if not 0 < confidence < 1:
        raise UserError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return (math.nan, math.nan)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def binom_pmf(k: int, n: int, p: Fraction) -> Fraction:
    """Exact binomial probability C(n, k) p^k (1-p)^(n-k) as a fraction."""
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def binomial_test(successes: int, n: int, p: float | Fraction = Fraction(1, 2)) -> float:
    """Exact two-sided binomial test: sum of P(X = i) over all i with P(X = i) <= P(X = successes).

    Computed in exact rational arithmetic, so no tolerance is needed when comparing probabilities.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 1.0
    p = Fraction(p).limit_denominator(10**12) if not isinstance(p, Fraction) else p
    pmf = [binom_pmf(i, n, p) for i in range(n + 1)]
    observed = pmf[successes]
    return float(min(Fraction(1), sum(x for x in pmf if x <= observed)))


def sign_test(wins_a: int, wins_b: int) -> float:
    """Exact two-sided sign test of "a" vs "b" wins (ties are dropped beforehand): binomial test at p = 1/2.
    nan when there is nothing to test (no decided pair), like the win rate it goes with."""
    if wins_a + wins_b == 0:
        return math.nan
    return binomial_test(wins_a, wins_a + wins_b, Fraction(1, 2))


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa for a table of rating counts: rows = items (pairs), columns = categories; generalised to
    items rated by unequal numbers of raters n_i.

    P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),  P_bar = mean_i P_i,
    p_j = sum_i n_ij / sum_i n_i,  P_e = sum_j p_j^2,  kappa = (P_bar - P_e) / (1 - P_e).
    Fleiss (1971) defines kappa for a constant n; this is the usual generalisation to varying n_i (each item's
    agreement P_i uses its own n_i, category shares p_j pool all ratings), which equals Fleiss' statistic when
    every n_i is the same. In a study, n_i varies when a pair is not yet fully answered or raters were dropped.
    Items with fewer than two ratings carry no agreement information and are skipped.
    Returns nan when undefined (no usable item, or every rating in one category so P_e = 1).
    """
    rows = [[int(c) for c in row] for row in table]
    if any(c < 0 for row in rows for c in row):
        raise ValueError("rating counts must be non-negative")
    rows = [row for row in rows if sum(row) >= 2]
    if not rows:
        return math.nan
    n_cat = len(rows[0])
    if any(len(row) != n_cat for row in rows):
        raise ValueError("every row needs the same number of categories")
    p_items = [(sum(c * c for c in row) - sum(row)) / (sum(row) * (sum(row) - 1)) for row in rows]
    p_bar = sum(p_items) / len(p_items)
    total = sum(sum(row) for row in rows)
    p_e = sum((sum(row[j] for row in rows) / total) ** 2 for j in range(n_cat))
    if math.isclose(p_e, 1.0):
        return math.nan
    return (p_bar - p_e) / (1 - p_e)
