"""Paired statistics for comparing benchmark arms, as pure functions of arrays.

The unit of analysis is the per-run score (one run = one (repeat, fold) of repeated, patient-grouped
k-fold cross-validation). Arms are compared with the baseline *paired by (repeat, fold)*: every
``diffs`` argument below is ``score(arm) - score(baseline)`` run by run, so a positive difference
means the arm scored higher. For metrics where lower is better, negate before calling (or read
"better" as "higher").

Why not a plain paired t-test: the k·r runs of repeated cross-validation share most of their
training data (and, across repeats, all of their test data), so their scores are positively
correlated and ``var(d)/n`` underestimates the variance of the mean difference. The corrected
resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) inflates the variance by the
heuristic correlation ``rho = n_test / (n_test + n_train)``; the Bayesian correlated t-test
(Corani & Benavoli 2015) uses the same correlation in its likelihood. See docs/statistics.md.

Public functions (all accept lists or numpy arrays; all raise ``ValueError`` with a one-line
message for mismatched lengths, too few runs, NaN/inf, bad parameters; all return plain Python
floats / lists / dicts ready for ``json.dumps``):

- :func:`summarize` — mean, std, n, t and bootstrap confidence intervals of per-run scores.
- :func:`mean_difference` — mean paired difference with naive, corrected and bootstrap CIs.
- :func:`cohens_dz` — standardized mean paired difference.
- :func:`corrected_resampled_t` — Nadeau-Bengio corrected repeated-CV t-test.
- :func:`wilcoxon_signed_rank` — scipy's Wilcoxon signed-rank test with documented zero handling.
- :func:`bayesian_correlated_t` — P(worse), P(equivalent), P(better) with a ROPE.
- :func:`mcnemar` — McNemar's test on paired decisions (continuity-corrected, exact, or
  clustered by patient).
- :func:`combine_repeats` — conservative combination of one test per CV repeat (McNemar).
- :func:`compare_to_baseline` — all per-run paired tests for one arm vs the baseline, one dict.
- :func:`verdict` — a plain-language sentence from a :func:`compare_to_baseline` result.

Holm's correction (:mod:`harness.stats.multiple`), DeLong's test (:mod:`harness.stats.delong`) and
the rank tests (:mod:`harness.stats.ranks`) live beside this module; :mod:`harness.stats` exports them all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.stats._validate import (
    as_binary_labels,
    as_float_vector,
    check_probability,
    same_length,
)

__all__ = [
    "summarize",
    "mean_difference",
    "cohens_dz",
    "corrected_resampled_t",
    "wilcoxon_signed_rank",
    "bayesian_correlated_t",
    "mcnemar",
    "combine_repeats",
    "compare_to_baseline",
    "verdict",
]

# Bootstrap resamples are drawn in chunks so memory stays bounded for long inputs.
_BOOT_CHUNK_ELEMENTS = 2_000_000


def _bootstrap_mean_ci(
    x: np.ndarray, confidence: float, n_boot: int, seed: int
) -> list[float]:
    """Percentile bootstrap CI of the mean (resampling entries with replacement)."""
    rng = np.random.default_rng(seed)
    n = x.size
    rows = max(1, _BOOT_CHUNK_ELEMENTS // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def _t_interval(mean: float, se: float, df: float, confidence: float) -> list[float]:
    if not math.isfinite(se):
        return [math.nan, math.nan]
    half = float(sps.t.ppf((1 + confidence) / 2, df)) * se
    return [mean - half, mean + half]


def _check_boot(confidence: float, n_boot: int) -> tuple[float, int]:
    confidence = check_probability(confidence, "confidence")
    if int(n_boot) != n_boot or n_boot < 100:
        raise ValueError(f"n_boot: must be an integer >= 100, got {n_boot!r}")
    return confidence, int(n_boot)


def summarize(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Describe per-run scores of one arm and metric.

    Args:
        values: per-run scores (one per (repeat, fold), any order), at least one.
        confidence: level of both intervals (default 0.95).
        n_boot: bootstrap resamples (>= 100).
        seed: seed of the bootstrap generator (``numpy.random.default_rng``); same seed, same CI.

    Returns:
        ``{"mean", "std", "n", "ci95_t", "ci95_bootstrap", "confidence"}`` where ``std`` uses
        ddof = 1, ``ci95_t = mean ± t_{n-1, (1+c)/2} · std / sqrt(n)`` and ``ci95_bootstrap`` is the
        *percentile* bootstrap interval of the mean (``[lo, hi]`` lists). The ``ci95_*`` keys keep
        their names for any ``confidence``; the level actually used is in ``confidence``.
        With ``n == 1`` the std and both intervals are NaN.

    Note:
        Both intervals treat runs as independent, which they are not in repeated CV (they share
        training data), so they describe the spread of the runs, not a guarantee about the
        learning method; use :func:`corrected_resampled_t` to compare arms.

    Example:
        >>> round(summarize([0.80, 0.82, 0.78, 0.81], n_boot=1000)["mean"], 4)
        0.8025
    """
    confidence, n_boot = _check_boot(confidence, n_boot)
    x = as_float_vector(values, "values", min_len=1)
    n = x.size
    mean = float(x.mean())
    if n == 1:
        nan_ci = [math.nan, math.nan]
        return {"mean": mean, "std": math.nan, "n": 1, "ci95_t": nan_ci,
                "ci95_bootstrap": list(nan_ci), "confidence": confidence}
    std = float(x.std(ddof=1))
    return {
        "mean": mean,
        "std": std,
        "n": int(n),
        "ci95_t": _t_interval(mean, std / math.sqrt(n), n - 1, confidence),
        "ci95_bootstrap": _bootstrap_mean_ci(x, confidence, n_boot, seed),
        "confidence": confidence,
    }


def _per_run(value: Any, name: str, n: int) -> np.ndarray:
    """A split size given as one number or one per run, as an array of length n."""
    if np.ndim(value) == 0:
        return np.full(n, as_float_vector([value], name)[0])
    arr = as_float_vector(value, name)
    if arr.size != n:
        raise ValueError(f"{name}: give one number or one per run; got {arr.size} for {n} runs")
    return arr


def _ratio(n_train: Any, n_test: Any, n: int) -> float:
    """Mean of the per-run ratios n_test / n_train."""
    tr, te = _per_run(n_train, "n_train", n), _per_run(n_test, "n_test", n)
    if np.any(tr <= 0) or np.any(te <= 0):
        raise ValueError("n_train/n_test: split sizes must be positive")
    return float(np.mean(te / tr))


def corrected_resampled_t(
    diffs: Sequence[float] | np.ndarray,
    n_train: float | Sequence[float] | np.ndarray,
    n_test: float | Sequence[float] | np.ndarray,
    folds: int,
    repeats: int,
    *,
    allow_missing: bool = False,
) -> dict[str, float]:
    """Corrected repeated k-fold CV t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004).

    ``t = mean(d) / sqrt((1/(k·r) + n_test/n_train) · var(d))`` with ``var`` the sample variance
    (ddof = 1), ``df = k·r - 1``, two-sided p from Student's t.

    Args:
        diffs: per-run paired differences ``arm - baseline``, one per (repeat, fold).
        n_train: size of the outer training part of each run (the data the model saw: training
            plus inner validation), a number or one per run.
        n_test: size of each run's test fold, a number or one per run. With patient-grouped
            folds the sizes differ per run; the correction uses the *mean of the per-run ratios*
            ``n_test/n_train`` (the heuristic correlation rho = ratio / (1 + ratio)).
        folds: k. repeats: r.
        allow_missing: if True, fewer than k·r differences are accepted (failed runs) and
            ``1/(k·r)`` becomes ``1/len(diffs)``; otherwise ``len(diffs)`` must equal k·r.

    Returns:
        ``{"statistic", "p", "df", "mean", "se", "ratio"}``; ``se`` is the corrected standard
        error of the mean difference. If all differences are equal (var = 0): statistic = ±inf and
        p = 0 when the mean is non-zero, statistic = 0 and p = 1 when all are zero.

    Example:
        >>> r = corrected_resampled_t([0.01, 0.03, -0.01, 0.02, 0.00], 80, 20, folds=5, repeats=1)
        >>> round(r["statistic"], 3), round(r["p"], 3)
        (0.943, 0.399)
    """
    d = as_float_vector(diffs, "diffs", min_len=2)
    k, r = int(folds), int(repeats)
    if k != folds or r != repeats or k < 2 or r < 1:
        raise ValueError(
            f"folds must be an integer >= 2 and repeats >= 1; got {folds!r}, {repeats!r}")
    n = d.size
    if n > k * r or (n < k * r and not allow_missing):
        raise ValueError(
            f"diffs: expected folds*repeats = {k * r} paired runs, got {n}"
            + ("" if n > k * r else " (pass allow_missing=True to accept failed runs)")
        )
    ratio = _ratio(n_train, n_test, n)
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    # all-equal differences tested exactly: their float variance can be ~1e-34 instead of 0
    se = 0.0 if np.ptp(d) == 0 else math.sqrt((1.0 / n + ratio) * var)
    df = n - 1
    if se == 0.0:
        stat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0.0 else 0.0
    else:
        stat = mean / se
        p = float(2 * sps.t.sf(abs(stat), df))
    return {"statistic": float(stat), "p": p, "df": float(df), "mean": mean, "se": se,
            "ratio": ratio}


def wilcoxon_signed_rank(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    zero_method: str = "pratt",
    method: str = "auto",
) -> dict[str, Any]:
    """Wilcoxon signed-rank test of the paired differences ``a - b`` (``scipy.stats.wilcoxon``).

    Args:
        a, b: paired per-run scores (arm, baseline), same length >= 2.
        zero_method: how zero differences are treated, passed to scipy: ``"pratt"`` (default;
            zeros take part in the ranking and are then dropped — Pratt 1959, keeps the
            information that ties exist and is more conservative than dropping them),
            ``"wilcox"`` (drop zeros first; scipy's default) or ``"zsplit"`` (split zero ranks
            between the signs).
        method: scipy's ``method``. ``"auto"``: exact null distribution for n <= 50 without
            ties/zeros; with ties or zeros an exhaustive (deterministic) permutation test for
            n <= 13 — about 0.1-1 s at n = 10-13 — and the tie-corrected normal approximation
            above that.

    Returns:
        ``{"statistic", "p", "n_nonzero", "zero_method"}``; ``statistic`` is scipy's (the smaller
        of the positive- and negative-rank sums for the two-sided test). All differences zero:
        statistic 0, p 1.

    Note:
        The test treats runs as independent, which repeated-CV runs are not; it is reported as a
        distribution-free companion to the corrected t-test, not instead of it. With n runs its
        smallest attainable two-sided p is 2 / 2^n (0.0625 for 5 runs).
    """
    x = as_float_vector(a, "a", min_len=2)
    y = as_float_vector(b, "b", min_len=2)
    same_length(a=x, b=y)
    if zero_method not in ("pratt", "wilcox", "zsplit"):
        raise ValueError(
            f"zero_method: expected 'pratt', 'wilcox' or 'zsplit', got {zero_method!r}")
    d = x - y
    n_nonzero = int(np.count_nonzero(d))
    if n_nonzero == 0:
        return {"statistic": 0.0, "p": 1.0, "n_nonzero": 0, "zero_method": zero_method}
    res = sps.wilcoxon(x, y, zero_method=zero_method, method=method)
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "n_nonzero": n_nonzero,
            "zero_method": zero_method}


def bayesian_correlated_t(
    diffs: Sequence[float] | np.ndarray, rho: float, rope: float = 0.01
) -> dict[str, float]:
    """Bayesian correlated t-test with a region of practical equivalence (Corani & Benavoli 2015).

    The runs are modelled as ``d_i ~ N(mu, sigma^2)`` with pairwise correlation ``rho``; with the
    non-informative prior of the paper the posterior of ``mu`` is Student's t with ``df = n - 1``,
    location ``mean(d)`` and scale ``sqrt((1/n + rho/(1-rho)) · var(d))`` (ddof = 1). This equals
    ``baycomp.CorrelatedTTest`` with ``rho = 1/folds`` (tested to 1e-6).

    Args:
        diffs: per-run differences ``arm - baseline``, at least 2.
        rho: correlation between runs, ``n_test / (n_train + n_test)`` in (0, 1) (1/k for k-fold).
        rope: half-width of the region of practical equivalence, in the metric's units (>= 0).

    Returns:
        ``{"p_worse", "p_rope", "p_better", "mean", "scale", "df", "rope", "rho"}`` with
        ``p_worse = P(mu < -rope)``, ``p_rope = P(-rope <= mu <= rope)``,
        ``p_better = P(mu > rope)`` (they sum to 1). If var(d) = 0 the posterior is a point mass
        at mean(d) and the probabilities are 0/1.
    """
    d = as_float_vector(diffs, "diffs", min_len=2)
    rho = check_probability(rho, "rho")
    rope = float(rope)
    if not math.isfinite(rope) or rope < 0:
        raise ValueError(f"rope: must be a finite number >= 0, got {rope!r}")
    n = d.size
    mean = float(d.mean())
    factor = 1.0 / n + rho / (1.0 - rho)
    scale = 0.0 if np.ptp(d) == 0 else math.sqrt(factor * float(d.var(ddof=1)))
    df = n - 1
    if scale == 0.0:
        p_worse = float(mean < -rope)
        p_better = float(mean > rope)
    else:
        p_worse = float(sps.t.cdf(-rope, df, loc=mean, scale=scale))
        p_better = float(sps.t.sf(rope, df, loc=mean, scale=scale))
    p_rope = max(0.0, 1.0 - p_worse - p_better)
    return {"p_worse": p_worse, "p_rope": p_rope, "p_better": p_better, "mean": mean,
            "scale": scale, "df": float(df), "rope": rope, "rho": rho}


def mcnemar(
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    exact: bool | None = None,
    exact_below: int = 25,
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """McNemar's test on paired decisions of two classifiers on the same samples.

    ``b`` = samples A classifies correctly and B wrongly; ``c`` = the reverse. Exact: two-sided
    binomial test of ``min(b, c)`` with ``n = b + c``, p = 0.5 (statistic = min(b, c)).
    Otherwise the continuity-corrected chi-square ``(|b - c| - 1)^2 / (b + c)`` with 1 df
    (Edwards 1948). Both match ``statsmodels.stats.contingency_tables.mcnemar``
    (``correction=True``); like statsmodels, b = c gives the statistic 1/(b+c), not 0.

    With ``clusters`` (e.g. patient ids, when several frames come from one patient) the
    Durkalski et al. (2003) clustered statistic ``(sum_k (b_k - c_k))^2 / sum_k (b_k - c_k)^2``
    (chi-square, 1 df, no continuity correction) is used instead, where b_k, c_k are the counts
    within cluster k; with one sample per cluster it equals the uncorrected McNemar statistic.
    It needs a reasonable number of clusters (>= ~20) and has no exact form.

    Args:
        y_true: 0/1 labels. pred_a, pred_b: 0/1 decisions (e.g. probability >= 0.5).
        exact: force the exact (True) or chi-square (False) form; None picks exact when
            ``b + c < exact_below`` (and never with clusters).
        exact_below: threshold on ``b + c`` for the automatic choice (default 25).
        clusters: optional cluster id per sample (any hashable values).

    Returns:
        ``{"statistic", "p", "b", "c", "exact", "n", "clustered"}``; ``b + c = 0`` (or, clustered,
        every cluster with b_k = c_k): statistic 0, p 1.

    Note:
        Without ``clusters`` the samples must be independent; frames of one patient are not, so
        pass the patient ids (or decide per patient/video first).
    """
    y = as_binary_labels(y_true, "y_true")
    pa = as_binary_labels(pred_a, "pred_a")
    pb = as_binary_labels(pred_b, "pred_b")
    same_length(y_true=y, pred_a=pa, pred_b=pb)
    ok_a, ok_b = pa == y, pb == y
    only_a, only_b = ok_a & ~ok_b, ~ok_a & ok_b
    b, c = int(np.count_nonzero(only_a)), int(np.count_nonzero(only_b))
    out = {"b": b, "c": c, "n": int(y.size), "clustered": clusters is not None}
    if clusters is not None:
        if exact:
            raise ValueError("exact: the clustered McNemar test has no exact form; use exact=None")
        cl = np.asarray(clusters)
        if cl.ndim != 1 or cl.size != y.size:
            raise ValueError(
                f"clusters: expected one id per sample ({y.size}), got shape {cl.shape}")
        _, inv = np.unique(cl, return_inverse=True)
        per = np.bincount(inv, weights=only_a.astype(float) - only_b.astype(float))
        denom = float(np.sum(per**2))
        if denom == 0.0:
            return {"statistic": 0.0, "p": 1.0, "exact": False, **out}
        stat = float(np.sum(per)) ** 2 / denom
        return {"statistic": stat, "p": float(sps.chi2.sf(stat, 1)), "exact": False, **out}
    use_exact = (b + c) < int(exact_below) if exact is None else bool(exact)
    if b + c == 0:
        return {"statistic": 0.0, "p": 1.0, "exact": use_exact, **out}
    if use_exact:
        stat = float(min(b, c))
        p = min(1.0, float(2 * sps.binom.cdf(min(b, c), b + c, 0.5)))
    else:
        stat = (abs(b - c) - 1.0) ** 2 / (b + c)
        p = float(sps.chi2.sf(stat, 1))
    return {"statistic": stat, "p": p, "exact": use_exact, **out}


def combine_repeats(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Conservatively combine one two-sided test per CV repeat on the *same* samples.

    Intended for McNemar: pool the test-fold decisions of each repeat (every sample appears once
    per repeat), run :func:`mcnemar` per repeat, then combine here. Repeats reuse the same
    samples, so their tests are positively correlated by an unknown amount. Each result is
    turned into a signed z (``sign(b - c) · Phi^-1(1 - p/2)``, or ``sign(statistic)`` when the
    result has no b/c), and ``z = mean_r z_r`` is referred to N(0, 1): the mean of (at most)
    standard-normal variables has variance <= 1 whatever their correlation, so the combined p
    is conservative, and exact for a single repeat.

    Args:
        results: one mapping per repeat with ``p`` and either ``b`` and ``c`` (McNemar) or a
            signed ``statistic``.

    Returns:
        ``{"statistic" (mean signed z), "p", "n_repeats"}``.
    """
    if len(results) == 0:
        raise ValueError("results: need at least one per-repeat result")
    zs = []
    for i, r in enumerate(results):
        try:
            p = float(r["p"])
            sign = np.sign(r["b"] - r["c"]) if "b" in r else np.sign(float(r["statistic"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"results[{i}]: expected 'p' and 'b'/'c' or 'statistic'") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"results[{i}]: p must lie in [0, 1], got {p!r}")
        zs.append(float(sign) * float(sps.norm.isf(p / 2.0)))
    z = float(np.mean(zs))
    if not math.isfinite(z):  # p = 0 in some repeat
        return {"statistic": z, "p": 0.0 if abs(z) == math.inf else math.nan,
                "n_repeats": len(zs)}
    return {"statistic": z, "p": float(2 * sps.norm.sf(abs(z))), "n_repeats": len(zs)}


def cohens_dz(diffs: Sequence[float] | np.ndarray) -> float:
    """Cohen's d_z = mean(d) / std(d) (ddof = 1) of paired differences (at least 2).

    All differences equal: 0 if they are zero, ±inf otherwise. Note that in repeated CV the std
    of the runs is shrunk by their correlation, so d_z is an index of consistency across runs,
    not of the effect's size in the population; report it with the mean difference.
    """
    d = as_float_vector(diffs, "diffs", min_len=2)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if np.ptp(d) == 0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd


def mean_difference(
    diffs: Sequence[float] | np.ndarray,
    ratio: float | None = None,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean paired difference with three confidence intervals.

    Args:
        diffs: per-run differences ``arm - baseline`` (at least 2).
        ratio: mean ``n_test / n_train`` of the runs; when given, ``ci95_corrected`` is the
            Nadeau-Bengio interval ``mean ± t_{n-1} · sqrt((1/n + ratio) · var(d))`` — the one
            that matches :func:`corrected_resampled_t` and should be shown as *the* CI.
        confidence, n_boot, seed: as in :func:`summarize`.

    Returns:
        ``{"mean", "ci95_corrected", "ci95_t", "ci95_bootstrap", "confidence", "n"}``;
        ``ci95_t`` (naive t) and ``ci95_bootstrap`` (percentile bootstrap over runs) ignore the
        correlation between runs and are too narrow for repeated CV; ``ci95_corrected`` is None
        without ``ratio``.
    """
    confidence, n_boot = _check_boot(confidence, n_boot)
    d = as_float_vector(diffs, "diffs", min_len=2)
    n = d.size
    mean, var = float(d.mean()), float(d.var(ddof=1))
    corrected = None
    if ratio is not None:
        ratio = float(ratio)
        if not math.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"ratio: must be a positive number (n_test/n_train), got {ratio!r}")
        corrected = _t_interval(mean, math.sqrt((1.0 / n + ratio) * var), n - 1, confidence)
    return {
        "mean": mean,
        "ci95_corrected": corrected,
        "ci95_t": _t_interval(mean, math.sqrt(var / n), n - 1, confidence),
        "ci95_bootstrap": _bootstrap_mean_ci(d, confidence, n_boot, seed),
        "confidence": confidence,
        "n": int(n),
    }


def _pair(
    arm_scores: Any, baseline_scores: Any, n_train: Any, n_test: Any, allow_missing: bool
) -> tuple[np.ndarray, np.ndarray, Any, Any, list[Any] | None]:
    """Pair scores either by position (sequences) or by (repeat, fold) key (mappings)."""
    if isinstance(arm_scores, Mapping) != isinstance(baseline_scores, Mapping):
        raise ValueError("arm_scores and baseline_scores: give both as sequences or both as "
                         "mappings {(repeat, fold): score}")
    if not isinstance(arm_scores, Mapping):
        a = as_float_vector(arm_scores, "arm_scores", min_len=2)
        b = as_float_vector(baseline_scores, "baseline_scores", min_len=2)
        same_length(arm_scores=a, baseline_scores=b)
        for name, v in (("n_train", n_train), ("n_test", n_test)):
            if isinstance(v, Mapping):
                raise ValueError(f"{name}: a mapping needs arm/baseline scores given as mappings")
        return a, b, n_train, n_test, None
    ka, kb = set(arm_scores), set(baseline_scores)
    if ka != kb and not allow_missing:
        missing = sorted(ka ^ kb)[:5]
        raise ValueError(f"arm_scores/baseline_scores: (repeat, fold) keys differ, e.g. {missing}; "
                         "pass allow_missing=True to compare the runs both have")
    keys = sorted(ka & kb)
    a = as_float_vector([arm_scores[k] for k in keys], "arm_scores", min_len=2)
    b = as_float_vector([baseline_scores[k] for k in keys], "baseline_scores", min_len=2)

    def pick(v: Any, name: str) -> Any:
        if isinstance(v, Mapping):
            lost = [k for k in keys if k not in v]
            if lost:
                raise ValueError(f"{name}: no split size for run(s) {lost[:5]}")
            return [v[k] for k in keys]
        if np.ndim(v) != 0:
            raise ValueError(f"{name}: with mapping scores give a number or a mapping")
        return v

    return a, b, pick(n_train, "n_train"), pick(n_test, "n_test"), keys


def compare_to_baseline(
    arm_scores: Sequence[float] | np.ndarray | Mapping[tuple[int, int], float],
    baseline_scores: Sequence[float] | np.ndarray | Mapping[tuple[int, int], float],
    n_train: float | Sequence[float] | Mapping[tuple[int, int], float],
    n_test: float | Sequence[float] | Mapping[tuple[int, int], float],
    folds: int,
    repeats: int,
    rope: float = 0.01,
    *,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    allow_missing: bool = False,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """All per-run paired comparisons of one arm with the baseline on one metric.

    Args:
        arm_scores, baseline_scores: per-run scores, either two sequences in the same
            (repeat, fold) order or two mappings ``{(repeat, fold): score}`` (paired by key).
        n_train, n_test: split sizes per run (see :func:`corrected_resampled_t`): a number, a
            sequence in the scores' order, or (with mapping scores) a mapping by (repeat, fold).
        folds, repeats: the cross-validation design (k, r).
        rope: half-width of practical equivalence in the metric's units (``report.rope``).
        confidence, n_boot, seed: for the intervals.
        allow_missing: accept runs missing from one arm (compares the runs both have).
        higher_is_better: False for metrics where lower is better (losses, error rates, seconds):
            the Bayesian probabilities are then computed on ``baseline - arm`` so that
            ``p_better`` still means "the arm is better". Every other field keeps the
            ``arm - baseline`` orientation (the two-sided tests are symmetric).

    Returns:
        ``{"n_runs", "mean_arm", "mean_baseline", "mean_difference", "ci95" (corrected t
        interval), "ci95_bootstrap", "ci95_naive", "cohens_dz", "rope", "ratio",
        "higher_is_better", "tests": {"corrected_t": {"statistic", "p", "df", "se"},
                  "wilcoxon": {"statistic", "p", "n_nonzero", "zero_method"},
                  "bayes_correlated_t": {"p_worse", "p_rope", "p_better", "mean", "scale", "df",
                                         "rope", "rho"}}}``
        with differences oriented ``arm - baseline``. The Bayesian test uses
        ``rho = ratio / (1 + ratio)`` so that it and the corrected t-test share one correction.
        The report adds ``p_holm`` and the DeLong / McNemar entries.
    """
    a, b, n_tr, n_te, _ = _pair(arm_scores, baseline_scores, n_train, n_test, allow_missing)
    d = a - b
    ct = corrected_resampled_t(d, n_tr, n_te, folds, repeats, allow_missing=allow_missing)
    ratio = ct["ratio"]
    md = mean_difference(d, ratio=ratio, confidence=confidence, n_boot=n_boot, seed=seed)
    bayes = bayesian_correlated_t(d if higher_is_better else -d, rho=ratio / (1.0 + ratio),
                                  rope=rope)
    return {
        "n_runs": int(d.size),
        "mean_arm": float(a.mean()),
        "mean_baseline": float(b.mean()),
        "mean_difference": md["mean"],
        "ci95": md["ci95_corrected"],
        "ci95_bootstrap": md["ci95_bootstrap"],
        "ci95_naive": md["ci95_t"],
        "cohens_dz": cohens_dz(d),
        "rope": float(rope),
        "ratio": ratio,
        "higher_is_better": bool(higher_is_better),
        "tests": {
            "corrected_t": {k: ct[k] for k in ("statistic", "p", "df", "se")},
            "wilcoxon": wilcoxon_signed_rank(a, b),
            "bayes_correlated_t": bayes,
        },
    }


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "p not computable"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _fmt_prob(p: float) -> str:
    if p > 0.995 and p < 1.0:
        return "> 0.99"
    if 0.0 < p < 0.005:
        return "< 0.01"
    return f"{p:.2f}"


def verdict(
    comparison: Mapping[str, Any], alpha: float = 0.05, decision_probability: float = 0.95
) -> str:
    """One plain-language sentence summarising a :func:`compare_to_baseline` result.

    The Bayesian posterior decides when one of its three regions holds at least
    ``decision_probability`` of the mass ("better with probability 0.97", "worse ...",
    "practically equivalent ..."); otherwise the corrected t-test (its Holm-adjusted p when the
    comparison carries ``tests.corrected_t.p_holm``) decides between "a detectable difference"
    and "no detectable difference". Every sentence carries the numbers behind it; "no detectable
    difference" is never phrased as "no difference". When the comparison carries ``mde`` (a number,
    or ``{"value": ...}`` from :func:`minimal_detectable_difference`), "no detectable difference"
    says how large a difference the runs could detect: "no difference larger than ±X detected".
    """
    check_probability(alpha, "alpha")
    check_probability(decision_probability, "decision_probability")
    try:
        ct = comparison["tests"]["corrected_t"]
        bt = comparison["tests"]["bayes_correlated_t"]
        md = float(comparison["mean_difference"])
    except (KeyError, TypeError):
        raise ValueError(
            "comparison: expected a compare_to_baseline() result with tests.corrected_t, "
            "tests.bayes_correlated_t and mean_difference") from None
    p = ct.get("p_holm")
    p_label = "Holm-adjusted corrected t"
    if p is None or (isinstance(p, float) and math.isnan(p)):
        p, p_label = ct["p"], "corrected t"
    p = float(p)
    rope = float(comparison.get("rope", bt.get("rope", 0.0)))
    pw, pr, pb = float(bt["p_worse"]), float(bt["p_rope"]), float(bt["p_better"])
    probs = (f"P(better) = {_fmt_prob(pb)}, P(equivalent within ±{rope:g}) = {_fmt_prob(pr)}, "
             f"P(worse) = {_fmt_prob(pw)}")
    numbers = f"mean difference {md:+.3g}, {p_label} {_fmt_p(p)}"
    if pb >= decision_probability:
        return f"better with probability {_fmt_prob(pb)} ({numbers}; {probs})"
    if pw >= decision_probability:
        return f"worse with probability {_fmt_prob(pw)} ({numbers}; {probs})"
    if pr >= decision_probability:
        return (f"practically equivalent: the difference lies within ±{rope:g} with probability "
                f"{_fmt_prob(pr)} ({numbers})")
    if math.isfinite(p) and p < alpha:
        direction = "higher" if md > 0 else "lower"
        return (f"detectably {direction} than the baseline ({numbers}), but the size of the "
                f"difference is uncertain ({probs})")
    mde = comparison.get("mde")
    if isinstance(mde, Mapping):
        mde = mde.get("value")
    if mde is not None and math.isfinite(float(mde)):
        return (f"no difference larger than ±{float(mde):.2g} detected (these runs detect a difference of "
                f"±{float(mde):.2g} with power 0.8 after Holm; smaller ones may go unnoticed; {p_label} "
                f"{_fmt_p(p)}; {probs}; mean difference {md:+.3g})")
    return f"no detectable difference ({p_label} {_fmt_p(p)}; {probs}; mean difference {md:+.3g})"
