"""Rates and intervals against hand computations (Wilson score interval, normal mean interval)."""

from __future__ import annotations

import math

import pytest

from lego_inversion.evaluation.tables import cell
from lego_inversion.evaluation.stats import (count_histogram, mean_interval, rate_summary, wilson_interval)


def quadratic_roots(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's interval by its definition: the p with (k/n - p)^2 = z^2 p (1 - p) / n, i.e. the roots of
    (1 + z^2/n) p^2 - (2 k/n + z^2/n) p + (k/n)^2 = 0 (a different route from the closed form in stats.py)."""
    ph, a = k / n, 1 + z * z / n
    b, c = -(2 * ph + z * z / n), ph * ph
    disc = math.sqrt(b * b - 4 * a * c)
    return ((-b - disc) / (2 * a), (-b + disc) / (2 * a))


def test_wilson_table2_frozen_lego():
    # k=92, n=200 (Lego, "Frozen in ice", Table 2): by hand 0.39233 .. 0.52918
    lo, hi = wilson_interval(92, 200)
    assert (lo, hi) == pytest.approx(quadratic_roots(92, 200), abs=1e-6)
    assert lo == pytest.approx(0.39233, abs=1e-5) and hi == pytest.approx(0.52918, abs=1e-5)


def test_wilson_edges():
    # k=0, n=10: centre = (z^2/20)/(1+z^2/10) = 0.1920729/1.3841459 = 0.1387666 = half  -> [0, 0.2775332]
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775328, abs=1e-6)
    lo, hi = wilson_interval(10, 10)  # symmetric
    assert hi == pytest.approx(1.0) and lo == pytest.approx(1 - 0.2775328, abs=1e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_wilson_is_not_the_normal_interval():
    # 1/4: Wald would give 0.25 +- 0.4244 (below 0); Wilson stays inside: [0.04559, 0.69936]
    lo, hi = wilson_interval(1, 4)
    assert (lo, hi) == pytest.approx(quadratic_roots(1, 4), abs=1e-6)
    assert lo == pytest.approx(0.04559, abs=1e-5) and hi == pytest.approx(0.69936, abs=1e-5)


def test_rate_summary_and_cell():
    s = rate_summary(92, 200)
    assert s["k"] == 92 and s["n"] == 200 and s["rate"] == 0.46
    assert cell(s, "vqa") == "92/200 (46.0%, 39.2–52.9%)"
    assert cell(None, "vqa") == "–"


def test_mean_interval():
    # [1, 2, 3, 4]: mean 2.5, s = sqrt(5/3) = 1.2909944, half = 1.959964 * 1.2909944 / 2 = 1.2651513
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert lo == pytest.approx(2.5 - 1.2651513, abs=1e-6) and hi == pytest.approx(2.5 + 1.2651513, abs=1e-6)
    assert mean_interval([0.3]) == (0.3, 0.3, 0.3)
    assert all(math.isnan(x) for x in mean_interval([]))
    assert cell({"n": 4, "mean": 2.5, "ci_low": 1.2348, "ci_high": 3.7652}, "clip_concept") == "2.500 [1.235, 3.765]"


def test_count_histogram():
    assert count_histogram([3, 1, 3, 4, 0, 3]) == {"0": 1, "1": 1, "2": 0, "3": 3, "4": 1}
    assert count_histogram([]) == {}
