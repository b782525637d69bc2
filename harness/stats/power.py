"""What repeated cross-validation can detect, and where one arm's mean score plausibly lies.

- :func:`minimal_detectable_difference` — the smallest true mean difference the corrected
  resampled t-test (Nadeau & Bengio 2003) detects with a given power, at the variance the runs
  achieved and the significance level left after Holm's correction.
- :func:`corrected_mean_interval` — the interval of one arm's mean score with the same
  correction for overlapping training sets (used to check that an arm scored above chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats as sps
from scipy.optimize import brentq

from harness.stats._validate import as_float_vector, check_probability

__all__ = ["minimal_detectable_difference", "holm_alpha", "corrected_mean_interval"]


def holm_alpha(alpha: float, n_hypotheses: int) -> float:
    """The level of the strictest step of Holm's procedure, ``alpha / m``.

    A comparison can only be declared significant after Holm if its p-value would pass some step;
    the first step (``alpha / m``) is the one the most significant comparison must pass, so
    powering each comparison at ``alpha / m`` is what guarantees it can be detected whatever the
    other arms do (Holm is never stricter than this).
    """
    alpha = check_probability(alpha, "alpha")
    m = int(n_hypotheses)
    if m != n_hypotheses or m < 1:
        raise ValueError(f"n_hypotheses: must be an integer >= 1, got {n_hypotheses!r}")
    return alpha / m


def minimal_detectable_difference(
    sd: float,
    n: int,
    ratio: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest |mean difference| the two-sided corrected t-test detects with probability ``power``.

    The corrected statistic is ``T = mean(d) / SE`` with ``SE = sqrt((1/n + ratio) · sd²)`` and
    ``df = n − 1`` (Nadeau & Bengio 2003). Under a true mean difference δ, ``T`` follows (to the
    approximation the test itself rests on) a noncentral t with ``df`` and noncentrality
    ``δ / SE``; the power is ``P(|T| > t_{1−α/2, df})``. This solves for δ (``scipy.stats.nct``).

    Args:
        sd: the standard deviation of the per-run differences the runs achieved (ddof = 1).
        n: the number of paired runs (>= 2).
        ratio: mean n_test / n_train of the runs (0 gives the ordinary one-sample t-test, which
            equals ``statsmodels.stats.power.TTestPower`` times ``sd``).
        alpha: two-sided level (pass ``holm_alpha(alpha, m)`` for the level after Holm).
        power: the wanted power (default 0.8).

    Returns:
        δ in the metric's units; 0 when ``sd`` is 0, NaN when ``sd`` is not finite.
    """
    alpha = check_probability(alpha, "alpha")
    power = check_probability(power, "power")
    if int(n) != n or n < 2:
        raise ValueError(f"n: need an integer >= 2 paired runs, got {n!r}")
    if not 0.0 < alpha < 1.0 or not alpha < power < 1.0:
        raise ValueError(f"alpha/power: need 0 < alpha < power < 1, got {alpha!r}, {power!r}")
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio: must be a number >= 0 (n_test/n_train), got {ratio!r}")
    sd = float(sd)
    if not math.isfinite(sd):
        return math.nan
    if sd < 0:
        raise ValueError(f"sd: must be >= 0, got {sd!r}")
    if sd == 0:
        return 0.0
    df = int(n) - 1
    se = math.sqrt((1.0 / n + ratio) * sd * sd)
    crit = float(sps.t.isf(alpha / 2, df))

    def shortfall(nc: float) -> float:
        upper = float(sps.nct.sf(crit, df, nc))
        lower = float(sps.nct.cdf(-crit, df, nc))  # the wrong-sign rejections (tiny; NaN far out)
        return upper + (lower if math.isfinite(lower) else 0.0) - power

    hi = crit + 10.0
    while shortfall(hi) < 0:
        hi *= 2
    nc = brentq(shortfall, 0.0, hi, xtol=1e-10)
    return float(nc * se)


def corrected_mean_interval(
    values: Sequence[float] | np.ndarray, ratio: float, confidence: float = 0.95
) -> list[float]:
    """Interval of one arm's mean score, widened for runs that share training data.

    ``mean ± t_{n−1} · sqrt((1/n + ratio) · s²)``: the Nadeau-Bengio variance applied to one
    arm's per-run scores (the runs of one arm are correlated for the same reason as their
    differences). Use it to ask whether an arm scored above chance; it may leave [0, 1] for
    bounded metrics (it is an interval of the mean, symmetric by construction): the report cuts
    it to the metric's range (:func:`harness.report.intervals.mean_interval`).
    """
    confidence = check_probability(confidence, "confidence")
    x = as_float_vector(values, "values", min_len=2)
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio: must be a number >= 0 (n_test/n_train), got {ratio!r}")
    n = x.size
    mean = float(x.mean())
    se = math.sqrt((1.0 / n + ratio) * float(x.var(ddof=1))) if np.ptp(x) > 0 else 0.0
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * se
    return [mean - half, mean + half]
