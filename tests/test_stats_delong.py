"""DeLong (plain and clustered) against independent O(m·n) implementations and references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from harness.stats.delong import combine_delong_folds, delong_paired


def _psi(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mann-Whitney kernel matrix psi(X_i, Y_j) by brute force (positives x negatives)."""
    x, z = scores[y == 1], scores[y == 0]
    return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])


def _brute_delong(y, a, b):
    """DeLong et al. (1988) written directly from the kernel matrices: O(m·n)."""
    pa, pb = _psi(a, y), _psi(b, y)
    m, n = pa.shape
    v10 = np.stack([pa.mean(1), pb.mean(1)])  # components of the positives
    v01 = np.stack([pa.mean(0), pb.mean(0)])  # components of the negatives
    aucs = pa.mean(), pb.mean()
    s10 = sum(np.outer(v10[:, i] - aucs, v10[:, i] - aucs) for i in range(m)) / (m - 1)
    s01 = sum(np.outer(v01[:, j] - aucs, v01[:, j] - aucs) for j in range(n)) / (n - 1)
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    return aucs, var, s


def _brute_obuchowski(y, a, b, clusters):
    """Obuchowski (1997) clustered variance of AUC(a) - AUC(b), looping over clusters."""
    pa, pb = _psi(a, y), _psi(b, y)
    m, n = pa.shape
    theta = pa.mean() - pb.mean()
    c10 = pa.mean(1) - pb.mean(1)
    c01 = pa.mean(0) - pb.mean(0)
    cl_pos, cl_neg = clusters[y == 1], clusters[y == 0]
    ids = sorted(set(clusters.tolist()))
    s10 = s01 = s11 = 0.0
    i10 = i01 = 0
    for c in ids:
        mi, ni = int(np.sum(cl_pos == c)), int(np.sum(cl_neg == c))
        a_i = c10[cl_pos == c].sum() - mi * theta
        b_i = c01[cl_neg == c].sum() - ni * theta
        i10 += mi > 0
        i01 += ni > 0
        s10 += a_i * a_i
        s01 += b_i * b_i
        s11 += a_i * b_i
    big_i = len(ids)
    s10 *= i10 / ((i10 - 1) * m)
    s01 *= i01 / ((i01 - 1) * n)
    s11 *= big_i / (big_i - 1)
    return s10 / m + s01 / n + 2 * s11 / (m * n)


def _data(seed, n=120, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    a = rng.normal(0, 1, n) + 1.2 * y
    b = 0.6 * a + rng.normal(0, 0.8, n) + 0.3 * y
    if ties:
        a, b = np.round(a), np.round(b * 2) / 2
    return y, a, b


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, False), (3, True)])
def test_delong_matches_brute_force_and_sklearn(seed, ties):
    y, a, b = _data(seed, ties=ties)
    r = delong_paired(y, a, b)
    (auc_a, auc_b), var, s = _brute_delong(y, a, b)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert (r["auc_a"], r["auc_b"]) == pytest.approx((auc_a, auc_b), abs=1e-12)
    assert r["var"] == pytest.approx(var, rel=1e-10)
    assert (r["var_a"], r["var_b"], r["cov"]) == pytest.approx((s[0, 0], s[1, 1], s[0, 1]), rel=1e-10)
    z = (auc_a - auc_b) / math.sqrt(var)
    assert r["statistic"] == pytest.approx(z) and r["p"] == pytest.approx(2 * sps.norm.sf(abs(z)))


def test_hanley_mcneil_1982_ct_example():
    """The 109 CT images of Hanley & McNeil (1982, Table 1; reused by Hanley & Hajian-Tilaki 1997):
    five-point ratings, 58 normal (33, 6, 6, 11, 2) and 51 abnormal (3, 2, 2, 11, 33);
    published AUC 0.893. Its DeLong SE is checked against the brute-force implementation."""
    y = np.r_[np.zeros(58), np.ones(51)].astype(int)
    s = np.r_[np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2]),
              np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])].astype(float)
    worse = np.where(s >= 4, s - 1, s)  # a coarser reader on the same images
    r = delong_paired(y, s, worse)
    assert round(r["auc_a"], 3) == 0.893
    (_, _), _, sb = _brute_delong(y, s, worse)
    assert math.sqrt(r["var_a"]) == pytest.approx(math.sqrt(sb[0, 0]), rel=1e-12)


def test_clustered_with_one_sample_per_cluster_is_plain_delong():
    y, a, b = _data(4, ties=True)
    plain = delong_paired(y, a, b)
    clustered = delong_paired(y, a, b, clusters=[f"p{i}" for i in range(y.size)])
    for key in ("auc_a", "auc_b", "difference", "var", "statistic", "p", "var_a", "var_b", "cov"):
        assert clustered[key] == pytest.approx(plain[key], rel=1e-10, abs=1e-15), key
    assert clustered["n_clusters"] == y.size and plain["n_clusters"] is None


@pytest.mark.parametrize("seed", [5, 6])
def test_clustered_matches_independent_obuchowski(seed):
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(25), rng.integers(1, 8, 25))
    n = clusters.size
    y = (rng.random(n) < 0.45).astype(int)
    patient = rng.normal(0, 1, 25)[clusters]
    a = np.round(patient + rng.normal(0, 1, n) + y, 1)
    b = np.round(patient + rng.normal(0, 1, n) + 0.7 * y, 1)
    r = delong_paired(y, a, b, clusters=clusters)
    assert r["var"] == pytest.approx(_brute_obuchowski(y, a, b, clusters), rel=1e-10)
    assert r["var_a"] == pytest.approx(_brute_obuchowski(y, a, np.zeros(n), clusters), rel=1e-10)


def test_clustered_variance_is_calibrated_where_plain_is_not():
    """Null simulation: two equally good scorers, 60 patients x 6 frames with a strong patient
    effect in each scorer's errors. The clustered test keeps about its level (3-7 % over seeds
    0-3; Monte-Carlo SE ~1 %); the plain DeLong test, which counts frames as independent,
    rejects 15-20 % of the time."""
    rng = np.random.default_rng(0)
    n_pat, per, sims = 60, 6, 600
    clusters = np.repeat(np.arange(n_pat), per)
    reject_plain = reject_clustered = 0
    for _ in range(sims):
        y = np.repeat(rng.random(n_pat) < 0.5, per).astype(int)
        y[::per] = 1 - y[::per]  # each patient has both classes
        u_a = rng.normal(0, 1.5, n_pat)[clusters]
        u_b = rng.normal(0, 1.5, n_pat)[clusters]
        a = u_a + rng.normal(0, 1, clusters.size) + y
        b = u_b + rng.normal(0, 1, clusters.size) + y
        reject_plain += delong_paired(y, a, b)["p"] < 0.05
        reject_clustered += delong_paired(y, a, b, clusters=clusters)["p"] < 0.05
    assert reject_clustered / sims <= 0.08
    assert reject_plain / sims >= 0.12


def test_delong_degenerate_and_errors():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    same = delong_paired(y, s, s)
    assert same["statistic"] == 0.0 and same["p"] == 1.0 and same["difference"] == 0.0
    perfect = delong_paired(y, s, s * 2)  # both AUC 1: zero variance, no difference
    assert perfect["auc_a"] == perfect["auc_b"] == 1.0 and perfect["p"] == 1.0
    with pytest.raises(ValueError, match=">= 2 positives and >= 2 negatives"):
        delong_paired([0, 0, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="length mismatch"):
        delong_paired(y, s, s[:5])
    with pytest.raises(ValueError, match="p_a: 1 non-finite"):
        delong_paired(y, np.r_[s[:5], np.nan], s)
    with pytest.raises(ValueError, match="clusters: need >= 2 clusters with positives"):
        delong_paired(y, s, s[::-1], clusters=[0, 0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="clusters: expected one id per sample"):
        delong_paired(y, s, s[::-1], clusters=[0, 1])


def test_combine_folds_inverse_variance_and_conservative_repeats():
    folds = [{"difference": 0.02, "var": 1e-4, "repeat": 0},
             {"difference": 0.04, "var": 4e-4, "repeat": 0},
             {"difference": 0.01, "var": 2e-4, "repeat": 1},
             {"difference": 0.03, "var": 2e-4, "repeat": 1}]
    r = combine_delong_folds(folds)
    d0 = (0.02 / 1e-4 + 0.04 / 4e-4) / (1 / 1e-4 + 1 / 4e-4)
    se0 = math.sqrt(1 / (1 / 1e-4 + 1 / 4e-4))
    d1, se1 = 0.02, math.sqrt(1 / (2 / 2e-4))
    assert r["difference"] == pytest.approx((d0 + d1) / 2)
    assert r["se"] == pytest.approx((se0 + se1) / 2)
    assert r["statistic"] == pytest.approx(r["difference"] / r["se"])
    assert r["p"] == pytest.approx(2 * sps.norm.sf(r["statistic"]))
    assert (r["n_repeats"], r["n_folds"], r["n_folds_skipped"]) == (2, 4, 0)
    # one repeat: the ordinary fixed-effect meta-analysis z
    one = combine_delong_folds(folds[:2])
    assert one["statistic"] == pytest.approx(d0 / se0)
    # duplicating a repeat (perfectly correlated repeats) must not shrink the SE
    dup = combine_delong_folds(folds[:2] + [dict(f, repeat=1) for f in folds[:2]])
    assert dup["se"] == pytest.approx(se0) and dup["p"] == pytest.approx(one["p"])


def test_combine_folds_from_delong_results_and_edge_cases():
    res = []
    for f in range(3):
        y, a, b = _data(10 + f, n=60)
        res.append(delong_paired(y, a, b))
    r = combine_delong_folds(res)
    assert r["n_repeats"] == 1 and r["n_folds"] == 3 and 0 <= r["p"] <= 1
    zero = combine_delong_folds([{"difference": 0.0, "var": 0.0}, {"difference": 0.0, "var": 0.0}])
    assert zero["p"] == 1.0 and zero["n_folds_skipped"] == 2
    with pytest.raises(ValueError, match="results\\[1\\]: expected a mapping"):
        combine_delong_folds([{"difference": 0.0, "var": 1e-3}, {"diff": 0.1}])
    with pytest.raises(ValueError, match="at least one"):
        combine_delong_folds([])
