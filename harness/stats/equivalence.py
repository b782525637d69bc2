"""Equivalence of two cross-validated learning procedures: the corrected TOST and the four-way decision.

- :func:`corrected_tost` — Schuirmann's two one-sided tests (1987) on the per-run paired differences,
  with the Nadeau-Bengio (2003) variance of repeated cross-validation: is the mean difference inside
  ``±margin``?
- :func:`decide` — the four-way decision of one comparison: ``better``, ``worse``, ``equivalent``
  (within the margin) or ``undecided`` (neither shown), from the Holm-adjusted p-values of the
  corrected t-test and of the TOST.

Pure functions of arrays (numpy / scipy), like the rest of :mod:`harness.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.stats as sps

from harness.stats._validate import as_float_vector, check_probability

__all__ = ["TostResult", "corrected_tost", "decide", "DECISIONS"]

#: The answers :func:`decide` gives.
DECISIONS = ("better", "worse", "equivalent", "undecided")


@dataclass(frozen=True)
class TostResult:
    """One corrected TOST: the two one-sided statistics and p-values, and the interval that matches them.

    ``p`` is ``max(p_lower, p_upper)``; ``ci90`` is the ``1 − 2α`` corrected interval of the mean
    difference (``confidence``), inside ``(−margin, margin)`` exactly when ``p < alpha``.
    """

    mean: float
    se: float
    df: float
    n: int
    ratio: float
    margin: float
    t_lower: float
    t_upper: float
    p_lower: float
    p_upper: float
    p: float
    ci90: list[float]
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def corrected_tost(
    diffs: Sequence[float] | np.ndarray, ratio: float, margin: float, alpha: float = 0.05
) -> TostResult:
    """Two one-sided tests of ``|mean difference| < margin`` with the corrected repeated-CV variance.

    For the paired per-run differences ``d`` (arm − baseline, one per (repeat, fold); n of them):

        σ̂² = (1/n + n_test/n_train) · s²          (s² the sample variance, ddof = 1)
        t_lower = (mean(d) + margin) / σ̂,   p_lower = P(T_{n−1} > t_lower)   (H0: μ ≤ −margin)
        t_upper = (mean(d) − margin) / σ̂,   p_upper = P(T_{n−1} < t_upper)   (H0: μ ≥ +margin)
        p_TOST  = max(p_lower, p_upper)

    Equivalence within ``±margin`` is shown at level α when ``p_TOST < α``, which is the same as the
    ``1 − 2α`` interval ``mean ± t_{1−α, n−1} · σ̂`` lying inside ``(−margin, margin)``
    (Schuirmann 1987). The variance is the Nadeau & Bengio (2003) correction of
    :func:`harness.stats.corrected_resampled_t` (Bouckaert & Frank 2004), so the TOST and the
    corrected t-test read the same standard error; with ``ratio = 0`` it is the ordinary paired TOST
    (``statsmodels.stats.weightstats.ttost_paired``).

    Args:
        diffs: per-run paired differences (at least 2).
        ratio: mean of the per-run ``n_test / n_train`` (>= 0; 0 = runs treated as independent).
        margin: the equivalence margin, in the metric's units (> 0), stated before the run.
        alpha: the level of each one-sided test; the interval is at ``1 − 2α``.

    Returns:
        A :class:`TostResult`. All differences equal (σ̂ = 0): each one-sided p is 0 when its null
        is excluded by the common value and 1 otherwise.
    """
    d = as_float_vector(diffs, "diffs", min_len=2)
    alpha = check_probability(alpha, "alpha")
    if not alpha < 0.5:
        raise ValueError(f"alpha: must be below 0.5 (the interval is at 1 - 2 alpha), got {alpha!r}")
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio < 0:
        raise ValueError(f"ratio: must be a number >= 0 (n_test/n_train), got {ratio!r}")
    margin = float(margin)
    if not math.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin: must be a finite number > 0 (in the metric's units), got {margin!r}")
    n = int(d.size)
    df = n - 1
    mean = float(d.mean())
    # all-equal differences tested exactly: their float variance can be ~1e-34 instead of 0
    se = 0.0 if np.ptp(d) == 0 else math.sqrt((1.0 / n + ratio) * float(d.var(ddof=1)))
    if se == 0.0:
        t_lower = math.copysign(math.inf, mean + margin) if mean + margin else 0.0
        t_upper = math.copysign(math.inf, mean - margin) if mean - margin else 0.0
        p_lower = 0.0 if mean > -margin else 1.0
        p_upper = 0.0 if mean < margin else 1.0
        half = 0.0
    else:
        t_lower, t_upper = (mean + margin) / se, (mean - margin) / se
        p_lower, p_upper = float(sps.t.sf(t_lower, df)), float(sps.t.cdf(t_upper, df))
        half = float(sps.t.ppf(1.0 - alpha, df)) * se
    return TostResult(
        mean=mean, se=se, df=float(df), n=n, ratio=ratio, margin=margin,
        t_lower=float(t_lower), t_upper=float(t_upper), p_lower=p_lower, p_upper=p_upper,
        p=max(p_lower, p_upper), ci90=[mean - half, mean + half], confidence=1.0 - 2.0 * alpha,
    )


def decide(
    p_difference: float | None,
    p_equivalence: float | None,
    mean_difference: float,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> str:
    """The four-way answer of one comparison, from already Holm-adjusted p-values.

    ``equivalent`` when the TOST rejects (``p_equivalence < alpha``): the difference lies within the
    margin, even where the corrected t-test also detects it (a difference smaller than the margin
    was stated, before the run, not to matter); else ``better`` / ``worse`` when the corrected
    t-test rejects (``p_difference < alpha``), by the sign of ``mean_difference`` and the metric's
    direction; else ``undecided`` (neither shown: the interval overlaps both zero and a margin).
    A p-value that is None or NaN does not reject.
    """
    alpha = check_probability(alpha, "alpha")

    def rejects(p: float | None) -> bool:
        return p is not None and math.isfinite(float(p)) and float(p) < alpha

    if rejects(p_equivalence):
        return "equivalent"
    if rejects(p_difference) and math.isfinite(mean_difference) and mean_difference != 0:
        return "better" if (mean_difference > 0) == bool(higher_is_better) else "worse"
    return "undecided"
