"""Statistics of the study against hand computations and published worked examples (and scipy when present)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from lego_inversion.errors import UserError
from lego_inversion.study.stats import binomial_test, fleiss_kappa, majority, sign_test, wilson_interval


def test_majority_reports_ties():
    assert majority(7, 3) == "a"
    assert majority(2, 8) == "b"
    assert majority(5, 5) == "tie"
    with pytest.raises(ValueError):
        majority(-1, 2)


@pytest.mark.parametrize("k,n,low,high", [
    # Newcombe (1998), Stat. Med. 17:857, Table I, method 3 (Wilson score interval), 95%
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_newcombe_table(k, n, low, high):
    got = wilson_interval(k, n)
    assert got[0] == pytest.approx(low, abs=6e-5)
    assert got[1] == pytest.approx(high, abs=6e-5)


def test_wilson_by_hand():
    # 141 of 200 pairs (70.5%, like the paper's "over 70%"), z = 1.959964: p = .705, z^2/n = .0192073,
    # centre = (.705 + .0096037) / 1.0192073 = .701137, half = 1.959964/1.0192073 * sqrt(.705*.295/200 +
    # 3.841459/160000) = 1.923030 * sqrt(.00103988 + .00002401) = 1.923030 * .0326173 = .062724
    low, high = wilson_interval(141, 200)
    assert low == pytest.approx(0.701137 - 0.062724, abs=2e-6)
    assert high == pytest.approx(0.701137 + 0.062724, abs=2e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(UserError):
        wilson_interval(1, 2, confidence=1.5)


def test_sign_test_by_hand():
    # n = 10, 8 wins: P(X >= 8) = (45 + 10 + 1) / 1024; two-sided doubles it
    assert sign_test(8, 2) == pytest.approx(112 / 1024, rel=1e-12)
    assert sign_test(2, 8) == pytest.approx(112 / 1024, rel=1e-12)
    # n = 20, 15 wins: (15504 + 4845 + 1140 + 190 + 20 + 1) / 2^20, doubled
    assert sign_test(15, 5) == pytest.approx(2 * 21700 / 2**20, rel=1e-12)
    assert sign_test(5, 5) == 1.0
    assert math.isnan(sign_test(0, 0))  # no decided pair: nothing to test, like the win rate
    # all 200 pairs won: 2 / 2^200
    assert sign_test(200, 0) == pytest.approx(2.0 / 2**200, rel=1e-9)


def test_binomial_test_asymmetric_by_hand():
    # n = 4, p = 1/4: pmf = [81, 108, 54, 12, 1] / 256. Observed 2 (54/256): sum of pmf <= 54 -> 54 + 12 + 1
    assert binomial_test(2, 4, Fraction(1, 4)) == pytest.approx(67 / 256, rel=1e-12)
    # observed 0 (81/256): 81 + 54 + 12 + 1; observed 1 (the mode): everything
    assert binomial_test(0, 4, Fraction(1, 4)) == pytest.approx(148 / 256, rel=1e-12)
    assert binomial_test(1, 4, Fraction(1, 4)) == pytest.approx(1.0)


def test_fleiss_kappa_wikipedia_example():
    # The worked example of Fleiss' kappa on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_kappa_by_hand():
    # P_i = 1, 1, (4+1-3)/6 = 1/3 -> P_bar = 7/9; p = (5/9, 4/9) -> P_e = 41/81; kappa = (22/81)/(40/81) = .55
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1]]) == pytest.approx(0.55, abs=1e-12)
    # perfect agreement on both categories -> 1; a row with one rating is skipped
    assert fleiss_kappa([[3, 0], [0, 3], [1, 0]]) == pytest.approx(1.0)
    # everyone always picks "a": P_e = 1, kappa undefined
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))
    assert math.isnan(fleiss_kappa([]))


def test_against_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev only) is not installed; cross-check skipped")
    for k, n in [(0, 7), (3, 17), (70, 100), (141, 200), (55, 120)]:
        assert sign_test(k, n - k) == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)
        assert binomial_test(k, n, Fraction(3, 10)) == pytest.approx(stats.binomtest(k, n, 0.3).pvalue, rel=1e-7)
        ci = stats.binomtest(k, n).proportion_ci(0.9, method="wilson")
        assert wilson_interval(k, n, 0.9) == pytest.approx((ci.low, ci.high), abs=1e-12)
