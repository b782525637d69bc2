"""Calibration of the paired tests on null experiments (the tests of the tests).

Two arms with no true difference are compared by repeated k-fold CV many times. The corrected
resampled t-test must reject 'no difference' in at most about alpha = 5 % of the experiments
(asserted <= 7 %, several binomial standard errors above 5 %), while the naive paired t-test,
which treats the overlapping runs as independent, must be visibly inflated (> 10 %).
"""

from __future__ import annotations

import numpy as np
import pytest

import harness.stats as S
from harness.stats.calibration import (
    correlated_null_diffs,
    learner_null_diffs,
    rejection_rates,
)


@pytest.mark.parametrize("folds,repeats", [(5, 3), (10, 10)])
def test_corrected_t_is_calibrated_under_the_cv_correlation_model(folds, repeats):
    diffs, ratio = correlated_null_diffs(20_000, folds, repeats, seed=1)
    rates = rejection_rates(diffs, ratio, alpha=0.05)
    assert 0.04 <= rates["corrected_t"] <= 0.06  # exact t distribution in this model
    assert rates["naive_t"] > 0.10


@pytest.mark.parametrize("folds,repeats", [(5, 3), (10, 10)])
def test_corrected_t_is_calibrated_with_real_overlapping_training_sets(folds, repeats):
    diffs, ratio = learner_null_diffs(2000, folds, repeats, n_samples=60, seed=2)
    # sanity: a null (mean difference ~ 0) whose runs really are correlated, as CV makes them
    # (mean between-run correlation 0.14 for 5x3 and 0.09 for 10x10, near rho = 1/k)
    corr = np.corrcoef(diffs.T)
    n = corr.shape[0]
    assert (corr.sum() - n) / (n * n - n) > 0.05
    assert diffs.mean() == pytest.approx(0.0, abs=0.005)
    rates = rejection_rates(diffs, ratio, alpha=0.05)
    assert rates["corrected_t"] <= 0.07
    assert rates["naive_t"] > 0.10


def test_vectorized_rates_agree_with_the_public_function():
    diffs, ratio = learner_null_diffs(60, 5, 3, seed=3)
    folds, repeats = 5, 3
    n_train = 48  # 60 samples, 5 folds: 12 test, 48 train -> ratio 1/4
    assert ratio == pytest.approx(12 / n_train)
    rejected = [S.corrected_resampled_t(d, n_train, 12, folds, repeats)["p"] < 0.05 for d in diffs]
    assert rejection_rates(diffs, ratio)["corrected_t"] == pytest.approx(np.mean(rejected))
