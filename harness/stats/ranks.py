"""Rank-based comparison of all arms at once (Demšar 2006): Friedman, Iman-Davenport, Nemenyi,
Holm-corrected comparisons with a control.

``scores`` is a 2-D array ``(blocks, arms)``: one row per block (here: per run, i.e.
(repeat, fold), or per data set), one column per arm. Within each row arms are ranked with
average ranks for ties, **rank 1 = best** (highest score unless ``higher_is_better=False``).

Caveat (see docs/statistics.md): these tests assume independent blocks. Runs of repeated
cross-validation are positively correlated, so with runs as blocks the p-values are optimistic;
they rank the arms, while the paired corrected t-test / Bayesian test decide each comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.stats._validate import as_float_array, check_probability
from harness.stats.multiple import holm

__all__ = ["friedman", "nemenyi", "holm_vs_control", "rank_scores"]


def _as_matrix(scores: Any) -> np.ndarray:
    s = as_float_array(scores, "scores", 2, "a 2-D array (runs x arms) of numbers")
    bad = np.argwhere(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"scores: non-finite value at (run, arm) {tuple(bad[0].tolist())}; "
                         "drop runs that failed for any arm")
    if s.shape[0] < 2:
        raise ValueError(f"scores: need at least 2 runs (rows), got {s.shape[0]}")
    return s


def rank_scores(scores: Any, higher_is_better: bool = True) -> np.ndarray:
    """Rank each row (average ranks for ties, 1 = best). Returns a float array like ``scores``."""
    s = _as_matrix(scores)
    return sps.rankdata(-s if higher_is_better else s, axis=1)


def friedman(scores: Any, higher_is_better: bool = True) -> dict[str, Any]:
    """Friedman's test that all arms have the same distribution of ranks, with Iman-Davenport.

    ``chi2_F = 12 / (N k (k+1)) · sum_j R_j^2 - 3 N (k+1)`` (R_j rank sums), divided by the tie
    correction ``1 - sum(t^3 - t) / (N k (k^2 - 1))`` — identical to
    ``scipy.stats.friedmanchisquare``; ``p`` from chi-square with k - 1 df. Iman & Davenport
    (1980): ``F = (N - 1) chi2_F / (N (k - 1) - chi2_F)`` on (k - 1, (k - 1)(N - 1)) df.

    Args:
        scores: (N runs, k arms), k >= 3, N >= 2, finite.
        higher_is_better: ranking direction (only affects ``mean_ranks``).

    Returns:
        ``{"statistic", "p", "df", "iman_davenport_F", "iman_davenport_p", "mean_ranks",
        "n_blocks", "n_arms"}``; ``mean_ranks`` is a list in column order (1 = best). Every row
        fully tied: statistic 0, p 1. Perfect agreement between rows: F = inf, p = 0.
    """
    s = _as_matrix(scores)
    n_blocks, k = s.shape
    if k < 3:
        raise ValueError(f"scores: Friedman needs >= 3 arms (columns), got {k}; "
                         "use the paired tests for two arms")
    ranks = rank_scores(s, higher_is_better)
    mean_ranks = ranks.mean(axis=0)
    rank_sums = ranks.sum(axis=0)
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts.astype(np.float64) ** 3 - counts))
    correction = 1.0 - ties / (n_blocks * k * (k * k - 1))
    base = {"df": float(k - 1), "mean_ranks": [float(r) for r in mean_ranks],
            "n_blocks": int(n_blocks), "n_arms": int(k)}
    if correction <= 0:  # every row fully tied: no evidence of any difference
        return {"statistic": 0.0, "p": 1.0, "iman_davenport_F": 0.0, "iman_davenport_p": 1.0,
                **base}
    chi2 = (12.0 / (n_blocks * k * (k + 1)) * float(np.sum(rank_sums**2))
            - 3.0 * n_blocks * (k + 1)) / correction
    chi2 = max(chi2, 0.0)
    p = float(sps.chi2.sf(chi2, k - 1))
    denom = n_blocks * (k - 1) - chi2
    if denom <= 1e-12 * n_blocks * k:
        f_stat, f_p = math.inf, 0.0
    else:
        f_stat = (n_blocks - 1) * chi2 / denom
        f_p = float(sps.f.sf(f_stat, k - 1, (k - 1) * (n_blocks - 1)))
    return {"statistic": float(chi2), "p": p, "iman_davenport_F": float(f_stat),
            "iman_davenport_p": f_p, **base}


def _rank_se(k: int, n_blocks: int) -> float:
    return math.sqrt(k * (k + 1) / (6.0 * n_blocks))


def nemenyi(
    mean_ranks: Sequence[float] | np.ndarray, n_blocks: int, alpha: float = 0.05
) -> dict[str, Any]:
    """Nemenyi post-hoc test and critical difference (Demšar 2006).

    ``CD = q_alpha · sqrt(k (k+1) / (6 N))`` with ``q_alpha`` the studentized range quantile
    ``q(1 - alpha; k, inf) / sqrt(2)`` (``scipy.stats.studentized_range``; q_0.05 = 1.960, 2.343,
    2.569, ... for k = 2, 3, 4, ... as in Demšar's Table 5). Two arms differ at level alpha when
    their mean ranks differ by more than CD. Pairwise p-values:
    ``P(Q_k > sqrt(2) · |R_i - R_j| / sqrt(k (k+1) / (6 N)))``.

    Args:
        mean_ranks: mean rank per arm (k >= 2), e.g. ``friedman(...)["mean_ranks"]``.
        n_blocks: N, the number of rows the ranks were averaged over (>= 2).
        alpha: family-wise level of the CD.

    Returns:
        ``{"cd", "q_alpha", "se", "pairwise_p"}``; ``pairwise_p`` is a k x k list of lists,
        symmetric, with 1.0 on the diagonal.
    """
    r = np.asarray(mean_ranks, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or not np.all(np.isfinite(r)):
        raise ValueError("mean_ranks: expected >= 2 finite mean ranks")
    if int(n_blocks) != n_blocks or n_blocks < 2:
        raise ValueError(f"n_blocks: must be an integer >= 2, got {n_blocks!r}")
    alpha = check_probability(alpha, "alpha")
    k = r.size
    se = _rank_se(k, int(n_blocks))
    q_alpha = float(sps.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)
    diff = np.abs(r[:, None] - r[None, :])
    pw = np.ones((k, k))
    iu = np.triu_indices(k, 1)
    pvals = sps.studentized_range.sf(math.sqrt(2.0) * diff[iu] / se, k, np.inf)
    pw[iu] = np.clip(pvals, 0.0, 1.0)
    pw[(iu[1], iu[0])] = pw[iu]
    return {"cd": q_alpha * se, "q_alpha": q_alpha, "se": se,
            "pairwise_p": [[float(v) for v in row] for row in pw]}


def holm_vs_control(
    scores: Any, control_index: int, higher_is_better: bool = True
) -> dict[str, Any]:
    """Compare every arm with a control on mean ranks, Holm-corrected (Demšar 2006, §3.2.2).

    ``z_j = (R_j - R_control) / sqrt(k (k+1) / (6 N))``, two-sided normal p, Holm step-down over
    the k - 1 comparisons. A negative ``mean_rank_difference`` means the arm ranks better
    (rank 1 = best).

    Args:
        scores: (N runs, k arms), k >= 2. control_index: column of the control (baseline).
        higher_is_better: ranking direction.

    Returns:
        ``{"mean_ranks", "control_index", "comparisons": [{"index", "mean_rank_difference",
        "z", "p", "p_holm"}, ...]}`` in column order without the control.
    """
    s = _as_matrix(scores)
    n_blocks, k = s.shape
    if k < 2:
        raise ValueError(f"scores: need >= 2 arms (columns), got {k}")
    if int(control_index) != control_index or not 0 <= control_index < k:
        raise ValueError(f"control_index: must be a column index in [0, {k - 1}], got "
                         f"{control_index!r}")
    mean_ranks = rank_scores(s, higher_is_better).mean(axis=0)
    se = _rank_se(k, n_blocks)
    others = [j for j in range(k) if j != control_index]
    deltas = [float(mean_ranks[j] - mean_ranks[control_index]) for j in others]
    zs = [d / se for d in deltas]
    ps = [float(2 * sps.norm.sf(abs(z))) for z in zs]
    adj = holm(ps)
    return {
        "mean_ranks": [float(v) for v in mean_ranks],
        "control_index": int(control_index),
        "comparisons": [
            {"index": j, "mean_rank_difference": d, "z": z, "p": p, "p_holm": ph}
            for j, d, z, p, ph in zip(others, deltas, zs, ps, adj)
        ],
    }
