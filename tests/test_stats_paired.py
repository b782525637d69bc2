"""Paired per-run tests of harness.stats.paired against references and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

import harness.stats as S


def _scores(seed: int = 0, n: int = 10, shift: float = 0.01):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.8, 0.03, n)
    arm = base + rng.normal(shift, 0.01, n)
    return arm, base


# ---------------------------------------------------------------- summarize / effect sizes


def test_summarize_matches_t_interval_and_is_deterministic():
    x = [0.71, 0.74, 0.69, 0.80, 0.77, 0.73]
    r = S.summarize(x, n_boot=2000, seed=3)
    m, sd, n = np.mean(x), np.std(x, ddof=1), len(x)
    lo, hi = sps.t.interval(0.95, n - 1, loc=m, scale=sd / math.sqrt(n))
    assert r["mean"] == pytest.approx(m) and r["std"] == pytest.approx(sd) and r["n"] == 6
    assert r["ci95_t"] == pytest.approx([lo, hi])
    assert r["ci95_bootstrap"] == S.summarize(x, n_boot=2000, seed=3)["ci95_bootstrap"]
    assert r["ci95_bootstrap"] != S.summarize(x, n_boot=2000, seed=4)["ci95_bootstrap"]
    # percentile bootstrap of the mean: inside the data range, around the mean
    assert min(x) < r["ci95_bootstrap"][0] < m < r["ci95_bootstrap"][1] < max(x)


def test_summarize_bootstrap_matches_independent_percentile_bootstrap():
    x = np.array([0.5, 0.6, 0.55, 0.7, 0.65, 0.52, 0.58, 0.61])
    rng = np.random.default_rng(11)
    means = x[rng.integers(0, x.size, size=(5000, x.size))].mean(1)
    assert S.summarize(x, n_boot=5000, seed=11)["ci95_bootstrap"] == pytest.approx(
        np.quantile(means, [0.025, 0.975]).tolist())


def test_summarize_single_value_and_bad_inputs():
    r = S.summarize([0.9])
    assert r["mean"] == 0.9 and math.isnan(r["std"]) and all(math.isnan(v) for v in r["ci95_t"])
    with pytest.raises(ValueError, match="values: 1 non-finite"):
        S.summarize([0.1, float("nan")])
    with pytest.raises(ValueError, match="at least 1"):
        S.summarize([])
    with pytest.raises(ValueError, match="confidence"):
        S.summarize([0.1, 0.2], confidence=1.5)


def test_cohens_dz_and_mean_difference():
    d = np.array([0.02, 0.01, 0.03, -0.005, 0.015])
    assert S.cohens_dz(d) == pytest.approx(d.mean() / d.std(ddof=1))
    assert S.cohens_dz([0.0, 0.0]) == 0.0 and S.cohens_dz([0.1, 0.1]) == math.inf
    md = S.mean_difference(d, ratio=0.25, n_boot=1000)
    se_c = math.sqrt((1 / 5 + 0.25) * d.var(ddof=1))
    assert md["ci95_corrected"] == pytest.approx(list(sps.t.interval(0.95, 4, d.mean(), se_c)))
    assert md["ci95_t"] == pytest.approx(list(sps.t.interval(0.95, 4, d.mean(), sps.sem(d))))
    # the corrected interval is wider than the naive one
    assert md["ci95_corrected"][1] - md["ci95_corrected"][0] > md["ci95_t"][1] - md["ci95_t"][0]
    assert S.mean_difference(d, n_boot=1000)["ci95_corrected"] is None


# ---------------------------------------------------------------- corrected t


def test_corrected_t_hand_computation_and_naive_limit():
    d = np.array([0.012, 0.004, 0.020, -0.003, 0.010, 0.007, 0.015, 0.001, 0.009, 0.011])
    r = S.corrected_resampled_t(d, n_train=80, n_test=20, folds=5, repeats=2)
    se = math.sqrt((1 / 10 + 20 / 80) * d.var(ddof=1))
    assert r["se"] == pytest.approx(se) and r["df"] == 9 and r["ratio"] == 0.25
    assert r["statistic"] == pytest.approx(d.mean() / se)
    assert r["p"] == pytest.approx(2 * sps.t.sf(d.mean() / se, 9))
    # with no correction term it is the ordinary one-sample t-test
    naive = sps.ttest_1samp(d, 0.0)
    tiny = S.corrected_resampled_t(d, n_train=1e12, n_test=1, folds=5, repeats=2)
    assert tiny["statistic"] == pytest.approx(naive.statistic, rel=1e-9)
    assert tiny["p"] == pytest.approx(naive.pvalue, rel=1e-9)


def test_corrected_t_per_run_sizes_use_mean_ratio():
    d = [0.01, 0.02, -0.01, 0.03]
    n_train, n_test = [60, 70, 65, 62], [20, 10, 15, 18]
    r = S.corrected_resampled_t(d, n_train, n_test, folds=2, repeats=2)
    assert r["ratio"] == pytest.approx(np.mean(np.array(n_test) / np.array(n_train)))


def test_corrected_t_zero_variance_cases():
    assert S.corrected_resampled_t([0, 0, 0, 0], 3, 1, 4, 1) | {} == {
        "statistic": 0.0, "p": 1.0, "df": 3.0, "mean": 0.0, "se": 0.0, "ratio": 1 / 3}
    r = S.corrected_resampled_t([-0.01] * 4, 3, 1, 4, 1)
    assert r["statistic"] == -math.inf and r["p"] == 0.0
    # 0.1 * 3 is not exact in floating point; equal differences are still detected exactly
    r = S.corrected_resampled_t([0.1, 0.1, 0.1], 3, 1, 3, 1)
    assert r["statistic"] == math.inf and r["se"] == 0.0
    assert S.bayesian_correlated_t([0.1, 0.1, 0.1], 0.2)["p_better"] == 1.0


def test_corrected_t_input_errors():
    with pytest.raises(ValueError, match="expected folds\\*repeats = 10"):
        S.corrected_resampled_t([0.1] * 9, 8, 2, 5, 2)
    assert S.corrected_resampled_t([0.1, 0.2] * 4 + [0.3], 8, 2, 5, 2, allow_missing=True)["df"] == 8
    with pytest.raises(ValueError, match="n_train: give one number or one per run"):
        S.corrected_resampled_t([0.1, 0.2, 0.3], [8, 8], 2, 3, 1)
    with pytest.raises(ValueError, match="positive"):
        S.corrected_resampled_t([0.1, 0.2, 0.3], 0, 2, 3, 1)
    with pytest.raises(ValueError, match="at least 2"):
        S.corrected_resampled_t([0.1], 8, 2, 2, 1, allow_missing=True)
    with pytest.raises(ValueError, match="diffs: 1 non-finite"):
        S.corrected_resampled_t([0.1, np.nan, 0.2], 8, 2, 3, 1)


# ---------------------------------------------------------------- Wilcoxon


@pytest.mark.parametrize("zero_method", ["pratt", "wilcox", "zsplit"])
def test_wilcoxon_matches_scipy(zero_method):
    a, b = _scores(1, n=9)
    b[3] = a[3]  # one zero difference: scipy uses its exhaustive permutation null (n <= 13)
    r = S.wilcoxon_signed_rank(a, b, zero_method=zero_method)
    ref = sps.wilcoxon(a, b, zero_method=zero_method)
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert r["n_nonzero"] == 8


def test_wilcoxon_all_zero_and_errors():
    assert S.wilcoxon_signed_rank([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])["p"] == 1.0
    with pytest.raises(ValueError, match="length mismatch \\(a=3, b=2\\)"):
        S.wilcoxon_signed_rank([0.5, 0.6, 0.7], [0.5, 0.6])
    with pytest.raises(ValueError, match="zero_method"):
        S.wilcoxon_signed_rank([0.5, 0.6], [0.4, 0.6], zero_method="drop")


# ---------------------------------------------------------------- Bayesian correlated t


@pytest.mark.parametrize("seed,shift,rope,folds,runs", [
    (0, 0.01, 0.01, 5, 2), (1, 0.0, 0.01, 10, 10), (2, -0.02, 0.005, 5, 3), (3, 0.03, 0.0, 4, 1)])
def test_bayesian_correlated_t_matches_baycomp(seed, shift, rope, folds, runs):
    baycomp = pytest.importorskip("baycomp")
    arm, base = _scores(seed, n=folds * runs, shift=shift)
    r = S.bayesian_correlated_t(arm - base, rho=1.0 / folds, rope=rope)
    # baycomp: differences are y - x, probabilities (left, rope, right) = (worse, rope, better)
    ref = baycomp.CorrelatedTTest.probs(base, arm, rope=rope, runs=runs)
    if rope == 0:
        assert (r["p_worse"], r["p_better"]) == pytest.approx(ref, abs=1e-6)
        assert r["p_rope"] == pytest.approx(0.0, abs=1e-12)
    else:
        assert (r["p_worse"], r["p_rope"], r["p_better"]) == pytest.approx(ref, abs=1e-6)
    assert r["p_worse"] + r["p_rope"] + r["p_better"] == pytest.approx(1.0)


def test_bayesian_orientation_and_degenerate():
    r = S.bayesian_correlated_t([0.05, 0.06, 0.04, 0.05, 0.055], rho=0.2, rope=0.01)
    assert r["p_better"] > 0.95 and r["p_worse"] < 0.01
    assert S.bayesian_correlated_t([0.005] * 4, 0.2, 0.01)["p_rope"] == 1.0
    assert S.bayesian_correlated_t([-0.02] * 4, 0.2, 0.01)["p_worse"] == 1.0
    with pytest.raises(ValueError, match="rho"):
        S.bayesian_correlated_t([0.1, 0.2], rho=1.0)
    with pytest.raises(ValueError, match="rope"):
        S.bayesian_correlated_t([0.1, 0.2], rho=0.2, rope=-0.1)


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize("exact", [True, False, None])
def test_mcnemar_matches_statsmodels(exact):
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400)
    pa = np.where(rng.random(400) < 0.85, y, 1 - y)
    pb = np.where(rng.random(400) < 0.80, y, 1 - y)
    r = S.mcnemar(y, pa, pb, exact=exact)
    ca, cb = pa == y, pb == y
    table = [[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]]
    use_exact = (table[0][1] + table[1][0] < 25) if exact is None else exact
    ref = sm_mcnemar(table, exact=use_exact, correction=True)
    assert (r["b"], r["c"]) == (table[0][1], table[1][0]) and r["exact"] == use_exact
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)


def test_mcnemar_small_table_is_exact_and_identical_decisions():
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    y = np.array([1] * 10 + [0] * 10)
    pa = y.copy()
    pb = y.copy()
    pb[:6] = 0  # A right, B wrong: b = 6
    pa[12] = 1  # A wrong, B right: c = 1
    pa[13] = pb[13] = 1  # both wrong: counts in neither
    r = S.mcnemar(y, pa, pb)
    assert r["exact"] and (r["b"], r["c"]) == (6, 1)
    assert r["p"] == pytest.approx(sm_mcnemar([[0, 6], [1, 0]], exact=True).pvalue)
    assert S.mcnemar(y, y, y)["p"] == 1.0
    with pytest.raises(ValueError, match="pred_a: labels must be 0 or 1"):
        S.mcnemar(y, y * 2, y)


# ---------------------------------------------------------------- Holm


def test_holm_matches_multipletests_and_keeps_nan():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.20, 0.005]
    assert S.holm(p) == pytest.approx(multipletests(p, method="holm")[1].tolist())
    out = S.holm([0.01, math.nan, 0.04])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
    assert S.holm([]) == []
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        S.holm([0.5, 1.2])


# ---------------------------------------------------------------- compare_to_baseline / verdict


def test_compare_to_baseline_combines_the_tests():
    arm, base = _scores(7, n=10)
    c = S.compare_to_baseline(arm, base, n_train=80, n_test=20, folds=5, repeats=2, n_boot=1000)
    d = arm - base
    assert c["mean_difference"] == pytest.approx(d.mean()) and c["n_runs"] == 10
    ct = S.corrected_resampled_t(d, 80, 20, 5, 2)
    assert c["tests"]["corrected_t"]["p"] == ct["p"]
    assert c["tests"]["wilcoxon"]["p"] == pytest.approx(sps.wilcoxon(arm, base, zero_method="pratt").pvalue)
    # rho = ratio/(1+ratio) = 0.2 = 1/k, so the Bayesian scale equals the corrected SE
    assert c["tests"]["bayes_correlated_t"]["rho"] == pytest.approx(0.2)
    assert c["tests"]["bayes_correlated_t"]["scale"] == pytest.approx(ct["se"])
    assert c["cohens_dz"] == pytest.approx(S.cohens_dz(d))
    assert c["ci95"] == pytest.approx(S.mean_difference(d, ratio=0.25, n_boot=1000)["ci95_corrected"])


def test_compare_to_baseline_pairs_mappings_by_key():
    arm, base = _scores(8, n=6)
    keys = [(r, f) for r in range(2) for f in range(3)]
    seq = S.compare_to_baseline(arm, base, 40, 20, folds=3, repeats=2, n_boot=500)
    shuffled = dict(reversed(list(zip(keys, base))))
    mapped = S.compare_to_baseline(dict(zip(keys, arm)), shuffled,
                                   dict.fromkeys(keys, 40), 20, folds=3, repeats=2, n_boot=500)
    assert mapped["tests"] == seq["tests"]
    del shuffled[(1, 2)]
    with pytest.raises(ValueError, match="keys differ"):
        S.compare_to_baseline(dict(zip(keys, arm)), shuffled, 40, 20, 3, 2)
    part = S.compare_to_baseline(dict(zip(keys, arm)), shuffled, 40, 20, 3, 2, n_boot=500,
                                 allow_missing=True)
    assert part["n_runs"] == 5
    with pytest.raises(ValueError, match="both as sequences or both as mappings"):
        S.compare_to_baseline(dict(zip(keys, arm)), base, 40, 20, 3, 2)


def _comparison(p, pw, pr, pb, md=0.01, rope=0.01):
    return {"mean_difference": md, "rope": rope,
            "tests": {"corrected_t": {"p": p}, "bayes_correlated_t": {
                "p_worse": pw, "p_rope": pr, "p_better": pb, "rope": rope}}}


def test_verdict_wording():
    assert S.verdict(_comparison(0.41, 0.08, 0.72, 0.20)).startswith(
        "no detectable difference (corrected t p = 0.41; P(better) = 0.20, "
        "P(equivalent within ±0.01) = 0.72, P(worse) = 0.08")
    assert S.verdict(_comparison(0.004, 0.0, 0.03, 0.97, md=0.03)).startswith(
        "better with probability 0.97 (mean difference +0.03, corrected t p = 0.004")
    assert S.verdict(_comparison(0.01, 0.96, 0.04, 0.0, md=-0.03)).startswith("worse with probability 0.96")
    assert S.verdict(_comparison(0.8, 0.01, 0.98, 0.01, md=0.001)).startswith("practically equivalent")
    assert S.verdict(_comparison(0.03, 0.0, 0.3, 0.7, md=0.015)).startswith("detectably higher")
    c = _comparison(0.03, 0.0, 0.3, 0.7, md=0.015)
    c["tests"]["corrected_t"]["p_holm"] = 0.09
    assert S.verdict(c).startswith("no detectable difference (Holm-adjusted corrected t p = 0.09")
    with pytest.raises(ValueError, match="compare_to_baseline"):
        S.verdict({"tests": {}})


def test_verdict_on_a_real_comparison():
    arm, base = _scores(9, n=15, shift=0.04)
    c = S.compare_to_baseline(arm, base, 80, 20, 5, 3, n_boot=500)
    assert S.verdict(c).startswith("better with probability")


def test_clustered_mcnemar_durkalski():
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 300)
    pa = np.where(rng.random(300) < 0.85, y, 1 - y)
    pb = np.where(rng.random(300) < 0.78, y, 1 - y)
    # one sample per cluster: the uncorrected McNemar statistic
    single = S.mcnemar(y, pa, pb, clusters=np.arange(300))
    ref = sm_mcnemar([[0, single["b"]], [single["c"], 0]], exact=False, correction=False)
    assert single["clustered"] and not single["exact"]
    assert single["statistic"] == pytest.approx(ref.statistic) and single["p"] == pytest.approx(ref.pvalue)
    # hand computation on 3 clusters
    y3 = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    a3 = np.array([1, 1, 0, 0, 0, 1, 1, 0])  # cluster 0: a right twice where b wrong
    b3 = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    cl = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    # per cluster (b_k - c_k): c0: 2 - 0 = 2; c1: a wrong at 5 (b right), b wrong at 4 -> 1 - 1 = 0;
    # c2: b wrong at 7 -> 1 - 0 = 1.  X^2 = (2 + 0 + 1)^2 / (4 + 0 + 1) = 9 / 5
    r = S.mcnemar(y3, a3, b3, clusters=cl)
    assert r["statistic"] == pytest.approx(9 / 5) and r["p"] == pytest.approx(sps.chi2.sf(1.8, 1))
    with pytest.raises(ValueError, match="no exact form"):
        S.mcnemar(y3, a3, b3, exact=True, clusters=cl)


def test_combine_repeats_is_conservative_and_exact_for_one():
    one = {"statistic": 5.2, "p": 0.02, "b": 30, "c": 14}
    r = S.combine_repeats([one])
    assert r["p"] == pytest.approx(0.02) and r["statistic"] > 0
    # the same test repeated (perfectly correlated repeats) gives the same p, not a smaller one
    assert S.combine_repeats([one, one, one])["p"] == pytest.approx(0.02)
    # opposite directions cancel
    flip = {"statistic": 5.2, "p": 0.02, "b": 14, "c": 30}
    assert S.combine_repeats([one, flip])["p"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="results\\[0\\]"):
        S.combine_repeats([{"b": 1}])


def test_compare_to_baseline_lower_is_better_flips_only_the_bayesian_orientation():
    arm, base = _scores(13, n=10, shift=-0.05)  # the arm's metric is clearly lower
    hi = S.compare_to_baseline(arm, base, 80, 20, 5, 2, n_boot=500)
    lo = S.compare_to_baseline(arm, base, 80, 20, 5, 2, n_boot=500, higher_is_better=False)
    assert hi["tests"]["bayes_correlated_t"]["p_worse"] > 0.95
    assert lo["tests"]["bayes_correlated_t"]["p_better"] == pytest.approx(
        hi["tests"]["bayes_correlated_t"]["p_worse"])
    assert lo["mean_difference"] == hi["mean_difference"] < 0
    assert lo["tests"]["corrected_t"] == hi["tests"]["corrected_t"]
    assert S.verdict(lo).startswith("better with probability")


def test_docstring_examples():
    import doctest

    assert doctest.testmod(S, optionflags=doctest.ELLIPSIS).failed == 0
