"""Minimal detectable difference of the corrected t-test, and one arm's corrected interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as sps

from harness import stats


@pytest.mark.parametrize("n,alpha", [(5, 0.05), (15, 0.05 / 9), (30, 0.01), (100, 0.05)])
def test_uncorrected_case_equals_statsmodels(n: int, alpha: float) -> None:
    from statsmodels.stats.power import TTestPower

    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
    mde = stats.minimal_detectable_difference(0.02, n, 0.0, alpha, 0.8)
    assert mde == pytest.approx(0.02 * d, rel=1e-4)  # statsmodels' own solver tolerance
    power = TTestPower().power(effect_size=mde / 0.02, nobs=n, alpha=alpha, alternative="two-sided")
    assert power == pytest.approx(0.8, abs=1e-8)


def test_corrected_case_has_the_stated_power_in_simulation() -> None:
    """Equicorrelated normal runs with rho = ratio / (1 + ratio), the Nadeau-Bengio model: at a true
    difference equal to the MDE, the corrected t-test rejects 80 % of the time."""
    n, ratio, alpha = 15, 0.25, 0.05 / 9
    rho = ratio / (1 + ratio)
    sigma = 0.03
    sd = sigma * math.sqrt(1 - rho)  # the expected sample sd of correlated runs
    mde = stats.minimal_detectable_difference(sd, n, ratio, alpha, 0.8)
    rng = np.random.default_rng(0)
    sims = 40_000
    shared = rng.normal(0, sigma * math.sqrt(rho), (sims, 1))
    d = mde + shared + rng.normal(0, sigma * math.sqrt(1 - rho), (sims, n))
    t = d.mean(1) / np.sqrt((1 / n + ratio) * d.var(1, ddof=1))
    rate = np.mean(2 * sps.t.sf(np.abs(t), n - 1) < alpha)
    assert rate == pytest.approx(0.8, abs=0.01)


def test_issue_example_fifteen_runs_nine_arms() -> None:
    """15 runs, rho = 0.2 (ratio 0.25), Holm over nine arms: ~0.04 AUC at a per-run sd of ~0.017."""
    value = stats.minimal_detectable_difference(0.017, 15, 0.25, stats.holm_alpha(0.05, 9))
    assert 0.035 < value < 0.045


def test_edge_cases_and_validation() -> None:
    assert stats.minimal_detectable_difference(0.0, 5, 0.2) == 0.0
    assert math.isnan(stats.minimal_detectable_difference(float("nan"), 5, 0.2))
    assert stats.minimal_detectable_difference(0.02, 10, 0.2) > stats.minimal_detectable_difference(0.02, 10, 0.0)
    with pytest.raises(ValueError, match="n:"):
        stats.minimal_detectable_difference(0.02, 1)
    with pytest.raises(ValueError, match="ratio"):
        stats.minimal_detectable_difference(0.02, 5, -1.0)
    with pytest.raises(ValueError, match="n_hypotheses"):
        stats.holm_alpha(0.05, 0)


def test_corrected_mean_interval_is_wider_than_the_naive_one() -> None:
    x = [0.50, 0.55, 0.48, 0.52, 0.51, 0.47]
    lo, hi = stats.corrected_mean_interval(x, 0.25)
    naive = stats.summarize(x)["ci95_t"]
    assert lo < naive[0] and hi > naive[1]
    half = sps.t.ppf(0.975, 5) * math.sqrt((1 / 6 + 0.25) * np.var(x, ddof=1))
    assert [lo, hi] == pytest.approx([np.mean(x) - half, np.mean(x) + half])


def test_verdict_states_the_detectable_difference() -> None:
    c = stats.compare_to_baseline([0.80, 0.82, 0.79, 0.81, 0.80], [0.80, 0.81, 0.80, 0.80, 0.81], 80, 20, 5, 1,
                                  rope=0.001)
    assert stats.verdict(c).startswith("no detectable difference")
    text = stats.verdict({**c, "mde": 0.031})
    assert text.startswith("no difference larger than ±0.031 detected (these runs detect")
