"""DeLong's test for two paired ROC AUCs, plain and clustered, and its combination across folds.

Notation: ``m`` positives X, ``n`` negatives Y, kernel ``psi(x, y) = 1 if x > y, 1/2 if x == y,
0 otherwise``; ``AUC = mean psi(X_i, Y_j)``. DeLong, DeLong & Clarke-Pearson (1988) estimate the
variance of (correlated) AUCs from the *structural components* (placement values)

    V10(X_i) = (1/n) sum_j psi(X_i, Y_j)      V01(Y_j) = (1/m) sum_i psi(X_i, Y_j)

and Sun & Xu (2014) compute them in O((m + n) log(m + n)) from midranks:
``V10(X_i) = (Tz(X_i) - Tx(X_i)) / n`` and ``V01(Y_j) = 1 - (Tz(Y_j) - Ty(Y_j)) / m`` where Tz,
Tx, Ty are midranks in the pooled sample, among positives and among negatives.

Clustered data (several frames of one patient): Obuchowski (1997) sums the components within
cluster i (``V10_i``, ``V01_i``, with ``m_i`` positives and ``n_i`` negatives in the cluster) and
estimates, for an AUC or a difference of AUCs ``theta``,

    S10 = I10 / ((I10 - 1) m) · sum_i (V10_i - m_i theta)^2
    S01 = I01 / ((I01 - 1) n) · sum_i (V01_i - n_i theta)^2
    S11 = I / (I - 1) · sum_i (V10_i - m_i theta)(V01_i - n_i theta)
    var = S10 / m + S01 / n + 2 S11 / (m n)

(I10 / I01: clusters holding positives / negatives, I: all clusters). With one sample per
cluster this is exactly the plain DeLong variance (tested).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.stats._validate import as_binary_labels, as_float_vector, same_length

__all__ = ["delong_paired", "combine_delong_folds"]

# |difference| below this counts as "no difference" in the zero-variance special case.
_ZERO = 1e-12


def _placements(scores: np.ndarray, pos: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and structural components (V10 per positive, V01 per negative) via midranks."""
    x, y = scores[pos], scores[~pos]
    m, n = x.size, y.size
    tz = sps.rankdata(scores)  # midranks ("average") in the pooled sample
    tx, ty = sps.rankdata(x), sps.rankdata(y)
    v10 = (tz[pos] - tx) / n
    v01 = 1.0 - (tz[~pos] - ty) / m
    auc = float(v10.mean())
    return auc, v10, v01


def _z_test(diff: float, var: float) -> tuple[float, float]:
    """Two-sided normal test of diff with variance var, with the degenerate cases made explicit."""
    if not math.isfinite(var) or var < 0:
        return math.nan, math.nan
    if var <= _ZERO**2:
        if abs(diff) <= _ZERO:
            return 0.0, 1.0  # identical or both perfect classifiers (as pROC)
        return math.copysign(math.inf, diff), 0.0
    z = diff / math.sqrt(var)
    return z, float(2 * sps.norm.sf(abs(z)))


def _clustered_var(
    c10: np.ndarray, c01: np.ndarray, theta: float, cl_pos: np.ndarray, cl_neg: np.ndarray,
    n_clusters: int,
) -> float:
    """Obuchowski (1997) variance of theta from per-sample components and cluster indices."""
    m, n = c10.size, c01.size
    m_i = np.bincount(cl_pos, minlength=n_clusters)
    n_i = np.bincount(cl_neg, minlength=n_clusters)
    a = np.bincount(cl_pos, weights=c10, minlength=n_clusters) - m_i * theta
    b = np.bincount(cl_neg, weights=c01, minlength=n_clusters) - n_i * theta
    i10, i01 = int(np.count_nonzero(m_i)), int(np.count_nonzero(n_i))
    s10 = i10 / ((i10 - 1) * m) * float(np.sum(a * a))
    s01 = i01 / ((i01 - 1) * n) * float(np.sum(b * b))
    s11 = n_clusters / (n_clusters - 1) * float(np.sum(a * b))
    return s10 / m + s01 / n + 2.0 * s11 / (m * n)


def delong_paired(
    y_true: Sequence[int] | np.ndarray,
    p_a: Sequence[float] | np.ndarray,
    p_b: Sequence[float] | np.ndarray,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """DeLong's test of ``AUC(p_a) - AUC(p_b)`` on the same samples (one test fold).

    Args:
        y_true: 0/1 labels (1 = positive), both classes present, >= 2 of each (>= 2 clusters
            holding each class when clustered).
        p_a, p_b: scores of the two models for the same samples (higher = more positive); any
            monotone scale (probabilities, logits).
        clusters: optional cluster id per sample (e.g. patient id; any hashable values). When
            given, the variance is Obuchowski's (1997) clustered estimator, which accounts for the
            correlation of frames of one patient; without it every sample is independent.

    Returns:
        ``{"auc_a", "auc_b", "difference", "var", "statistic", "p", "var_a", "var_b", "cov",
        "n_pos", "n_neg", "n_clusters"}``; ``difference = auc_a - auc_b``, ``var`` its variance,
        ``statistic = difference / sqrt(var)`` (z), ``p`` two-sided normal. ``var_a``, ``var_b``
        are the variances of each AUC (for CIs), ``cov`` their covariance. Zero variance: z = 0
        and p = 1 when the AUCs are equal (identical models, or both perfect), z = ±inf and p = 0
        otherwise. A (rare, few-cluster) negative clustered variance gives z = p = NaN.
        ``n_clusters`` is None without clusters.
    """
    y = as_binary_labels(y_true, "y_true")
    a = as_float_vector(p_a, "p_a")
    b = as_float_vector(p_b, "p_b")
    same_length(y_true=y, p_a=a, p_b=b)
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        raise ValueError(f"y_true: DeLong needs >= 2 positives and >= 2 negatives, got {m} and {n}")
    auc_a, v10a, v01a = _placements(a, pos)
    auc_b, v10b, v01b = _placements(b, pos)
    diff = auc_a - auc_b
    if clusters is None:
        # Sun & Xu: S = S10/m + S01/n with S10, S01 the 2x2 sample covariances of the components.
        s = np.cov(np.vstack([v10a, v10b])) / m + np.cov(np.vstack([v01a, v01b])) / n
        var_a, var_b, cov = float(s[0, 0]), float(s[1, 1]), float(s[0, 1])
        var = var_a + var_b - 2.0 * cov
        n_clusters = None
    else:
        cl = np.asarray(clusters)
        if cl.ndim != 1 or cl.size != y.size:
            raise ValueError(
                f"clusters: expected one id per sample ({y.size}), got shape {cl.shape}")
        _, inv = np.unique(cl, return_inverse=True)
        n_clusters = int(inv.max()) + 1
        cp, cn = inv[pos], inv[~pos]
        i10, i01 = np.unique(cp).size, np.unique(cn).size
        if i10 < 2 or i01 < 2:
            raise ValueError(f"clusters: need >= 2 clusters with positives and >= 2 with "
                             f"negatives, got {i10} and {i01}")
        var_a = _clustered_var(v10a, v01a, auc_a, cp, cn, n_clusters)
        var_b = _clustered_var(v10b, v01b, auc_b, cp, cn, n_clusters)
        var = _clustered_var(v10a - v10b, v01a - v01b, diff, cp, cn, n_clusters)
        cov = (var_a + var_b - var) / 2.0
    z, p = _z_test(diff, var)
    return {
        "auc_a": auc_a, "auc_b": auc_b, "difference": diff, "var": float(var),
        "statistic": z, "p": p, "var_a": var_a, "var_b": var_b, "cov": cov,
        "n_pos": m, "n_neg": n, "n_clusters": n_clusters,
    }


def combine_delong_folds(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine per-test-fold DeLong results into one z-test of the AUC difference.

    Within one repeat the test folds hold disjoint patients, so their estimates are independent
    given the trained models: they are pooled by the inverse-variance weighted mean
    ``D_r = sum w_f d_f / sum w_f``, ``w_f = 1 / var_f``, ``Var(D_r) = 1 / sum w_f``.
    Across repeats the same patients are tested again, so the repeat estimates are positively
    correlated by an unknown amount; they are averaged, ``D = mean_r D_r``, with the conservative
    standard error ``SE = mean_r sqrt(Var(D_r))`` — the exact SE if the repeats were perfectly
    correlated and an upper bound for any correlation (Cauchy-Schwarz). ``z = D / SE``,
    two-sided normal p.

    Args:
        results: one mapping per test fold with ``difference`` and ``var`` (as returned by
            :func:`delong_paired`) and optionally ``repeat`` (default 0: all one repeat).

    Returns:
        ``{"statistic", "p", "difference", "se", "n_repeats", "n_folds", "n_folds_skipped",
        "method"}``. Folds with zero variance (identical or both-perfect models) carry no
        weight information and are skipped (counted in ``n_folds_skipped``); if every fold is
        skipped the result is z = 0, p = 1 when all differences are 0, otherwise NaN.
    """
    if len(results) == 0:
        raise ValueError("results: need at least one per-fold DeLong result")
    by_repeat: dict[Any, list[tuple[float, float]]] = {}
    for i, r in enumerate(results):
        try:
            d, v = float(r["difference"]), float(r["var"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"results[{i}]: expected a mapping with numeric 'difference' and "
                             "'var'") from None
        if not (math.isfinite(d) and math.isfinite(v)) or v < 0:
            raise ValueError(f"results[{i}]: difference/var must be finite and var >= 0, got "
                             f"{d!r}, {v!r}")
        by_repeat.setdefault(r.get("repeat", 0), []).append((d, v))
    skipped, used, diffs_skipped = 0, 0, []
    est, ses = [], []
    for folds in by_repeat.values():
        w_sum, wd_sum = 0.0, 0.0
        for d, v in folds:
            if v <= _ZERO**2:
                skipped += 1
                diffs_skipped.append(d)
                continue
            used += 1
            w_sum += 1.0 / v
            wd_sum += d / v
        if w_sum > 0:
            est.append(wd_sum / w_sum)
            ses.append(math.sqrt(1.0 / w_sum))
    base = {"n_repeats": len(by_repeat), "n_folds": used, "n_folds_skipped": skipped,
            "method": "inverse-variance within repeat; mean across repeats with mean SE "
                      "(conservative)"}
    if not est:
        all_zero = all(abs(d) <= _ZERO for d in diffs_skipped)
        return {"statistic": 0.0 if all_zero else math.nan, "p": 1.0 if all_zero else math.nan,
                "difference": 0.0 if all_zero else math.nan, "se": 0.0, **base}
    diff = float(np.mean(est))
    se = float(np.mean(ses))
    z = diff / se
    return {"statistic": z, "p": float(2 * sps.norm.sf(abs(z))), "difference": diff, "se": se,
            **base}
