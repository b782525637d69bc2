"""Friedman / Iman-Davenport / Nemenyi / Holm-vs-control against scipy and Demšar (2006)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.stats import holm
from harness.stats.ranks import friedman, holm_vs_control, nemenyi, rank_scores


def _scores(seed=0, n=12, k=4, ties=False):
    rng = np.random.default_rng(seed)
    s = rng.normal(0.8, 0.02, (n, k)) + np.linspace(0, 0.02, k)
    return np.round(s, 2) if ties else s


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_friedman_matches_scipy(seed, ties):
    s = _scores(seed, ties=ties)
    r = friedman(s)
    ref = sps.friedmanchisquare(*s.T)
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    n, k = s.shape
    f = (n - 1) * ref.statistic / (n * (k - 1) - ref.statistic)
    assert r["iman_davenport_F"] == pytest.approx(f)
    assert r["iman_davenport_p"] == pytest.approx(sps.f.sf(f, k - 1, (k - 1) * (n - 1)))
    # rank 1 = best (highest); the ranks of one row sum to k(k+1)/2
    ranks = sps.rankdata(-s, axis=1)
    assert r["mean_ranks"] == pytest.approx(ranks.mean(0).tolist())
    assert sum(r["mean_ranks"]) == pytest.approx(k * (k + 1) / 2)


def test_friedman_direction_and_degenerate_cases():
    s = _scores(3)
    low = friedman(s, higher_is_better=False)
    high = friedman(s)
    assert low["statistic"] == pytest.approx(high["statistic"])
    assert low["mean_ranks"] == pytest.approx([5 - r for r in high["mean_ranks"]])
    perfect = friedman(np.tile([0.7, 0.8, 0.9], (5, 1)))
    assert perfect["iman_davenport_F"] == math.inf and perfect["iman_davenport_p"] == 0.0
    assert perfect["mean_ranks"] == [3.0, 2.0, 1.0]
    tied = friedman(np.full((4, 3), 0.5))
    assert tied["p"] == 1.0 and tied["statistic"] == 0.0
    with pytest.raises(ValueError, match=">= 3 arms"):
        friedman(s[:, :2])
    with pytest.raises(ValueError, match="non-finite value at \\(run, arm\\) \\(1, 2\\)"):
        bad = s.copy()
        bad[1, 2] = np.nan
        friedman(bad)
    with pytest.raises(ValueError, match="2-D"):
        friedman([0.1, 0.2, 0.3])


def test_nemenyi_critical_values_match_demsar_table():
    # Demšar (2006), Table 5(a): q_0.05 for k = 2..10 (printed to 3 decimals, some truncated)
    table = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]
    for k, q in zip(range(2, 11), table):
        assert nemenyi(np.arange(1, k + 1), n_blocks=10)["q_alpha"] == pytest.approx(q, abs=1e-3)
    # q_0.10 for k = 2, 5, 10 (Table 5(a), alpha = 0.10)
    for k, q in ((2, 1.645), (5, 2.459), (10, 2.920)):
        assert nemenyi(np.arange(1, k + 1), 10, alpha=0.10)["q_alpha"] == pytest.approx(q, abs=1e-3)


def test_nemenyi_cd_and_pairwise_p_are_consistent():
    mean_ranks = [1.2, 2.0, 3.1, 3.7]
    r = nemenyi(mean_ranks, n_blocks=20)
    assert r["cd"] == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 20)), abs=1e-3)
    p = np.array(r["pairwise_p"])
    assert np.allclose(p, p.T) and np.all(np.diag(p) == 1.0)
    diffs = np.abs(np.subtract.outer(mean_ranks, mean_ranks))
    iu = np.triu_indices(4, 1)
    # exactly the pairs farther apart than CD have p < alpha
    assert np.array_equal(diffs[iu] > r["cd"], p[iu] < 0.05)


def test_holm_vs_control():
    s = _scores(4, n=30, k=4)
    r = holm_vs_control(s, control_index=0)
    n, k = s.shape
    mr = rank_scores(s).mean(0)
    se = math.sqrt(k * (k + 1) / (6 * n))
    z = [(mr[j] - mr[0]) / se for j in (1, 2, 3)]
    p = [2 * sps.norm.sf(abs(v)) for v in z]
    assert [c["index"] for c in r["comparisons"]] == [1, 2, 3]
    assert [c["z"] for c in r["comparisons"]] == pytest.approx(z)
    assert [c["p_holm"] for c in r["comparisons"]] == pytest.approx(holm(p))
    with pytest.raises(ValueError, match="control_index"):
        holm_vs_control(s, 4)
