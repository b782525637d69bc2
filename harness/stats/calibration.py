"""Null experiments that check the calibration of the paired tests.

Two arms with *no* true difference are compared over repeated k-fold cross-validation many
times; a calibrated test at level alpha rejects in about alpha of the experiments. Two
generators of per-run differences (rows = experiments, columns = the k·r runs):

- :func:`correlated_null_diffs` — the Nadeau & Bengio (2003) model: runs share a component
  with correlation ``rho = 1/k`` (``d = sqrt(rho)·e_shared + sqrt(1-rho)·e_run``).
- :func:`learner_null_diffs` — real overlapping training sets: on each synthetic data set two
  nearest-centroid classifiers, each using one half of exchangeable features (so their expected
  accuracies are equal by symmetry), are trained and tested on the same repeated k-fold splits.
  The correlation between runs comes from the data, not from a formula.

:func:`rejection_rates` applies the corrected resampled t-test and the naive paired t-test to
every experiment, vectorized. (The Bayesian correlated t-test with rope = 0 has the same
posterior scale as the corrected t-test, so its "P(better) > 1 - alpha/2" rule rejects in exactly
the same experiments.) ``python -m harness.stats.calibration`` prints the table quoted
in docs/statistics.md.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats as sps

__all__ = ["correlated_null_diffs", "learner_null_diffs", "rejection_rates"]


def correlated_null_diffs(
    n_experiments: int, folds: int, repeats: int, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Per-run null differences with the correlation rho = 1/k between all runs.

    Returns ``(diffs (n_experiments, folds*repeats), ratio n_test/n_train = 1/(k-1))``.
    """
    rng = np.random.default_rng(seed)
    rho = 1.0 / folds
    shared = rng.standard_normal((n_experiments, 1))
    own = rng.standard_normal((n_experiments, folds * repeats))
    return np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * own, 1.0 / (folds - 1)


def learner_null_diffs(
    n_experiments: int,
    folds: int,
    repeats: int,
    n_samples: int = 60,
    n_features: int = 8,
    signal: float = 0.35,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Accuracy differences of two equally good nearest-centroid classifiers under repeated CV.

    Each experiment draws its own data set: balanced labels, ``n_features`` features each
    ``signal · (2y - 1) + N(0, 1)``; arm A uses the first half of the features, arm B the second.
    Every (repeat, fold) uses the same split for both arms (paired design). Returns
    ``(diffs (n_experiments, folds*repeats), ratio n_test/n_train)``.
    """
    if n_features % 2 or n_samples % folds:
        raise ValueError("n_features must be even and n_samples divisible by folds")
    rng = np.random.default_rng(seed)
    e, n, half = n_experiments, n_samples, n_features // 2
    y = np.tile(np.arange(n) % 2, (e, 1)).astype(np.float64)            # (E, N)
    x = signal * (2 * y - 1)[..., None] + rng.standard_normal((e, n, n_features))
    sign = 2 * y - 1
    diffs = np.empty((e, folds * repeats))
    order = np.tile(np.arange(n), (e, 1))
    for r in range(repeats):
        perm = rng.permuted(order, axis=1)
        fold_of = np.empty_like(perm)
        np.put_along_axis(fold_of, perm, np.arange(n) % folds, axis=1)
        for f in range(folds):
            test = fold_of == f
            train = ~test
            w1 = (train & (y == 1)).astype(np.float64)
            w0 = (train & (y == 0)).astype(np.float64)
            mu1 = np.einsum("en,enp->ep", w1, x) / w1.sum(1, keepdims=True)
            mu0 = np.einsum("en,enp->ep", w0, x) / w0.sum(1, keepdims=True)
            accs = []
            for cols in (slice(0, half), slice(half, n_features)):
                w = (mu1 - mu0)[:, cols]
                b = 0.5 * np.einsum("ep,ep->e", w, (mu1 + mu0)[:, cols])
                score = np.einsum("enp,ep->en", x[:, :, cols], w) - b[:, None]
                correct = (np.sign(score) == sign) & test
                accs.append(correct.sum(1) / test.sum(1))
            diffs[:, r * folds + f] = accs[0] - accs[1]
    return diffs, 1.0 / (folds - 1)


def rejection_rates(diffs: np.ndarray, ratio: float, alpha: float = 0.05) -> dict[str, float]:
    """Fraction of experiments (rows) in which each test rejects 'no difference' at alpha.

    Rows whose differences are all equal (var = 0) count as non-rejections when their mean is 0
    and as rejections otherwise, as in :func:`harness.stats.paired.corrected_resampled_t`.
    """
    n = diffs.shape[1]
    mean = diffs.mean(1)
    var = diffs.var(1, ddof=1)
    crit = sps.t.ppf(1 - alpha / 2, n - 1)
    out = {}
    for name, factor in (("corrected_t", 1.0 / n + ratio), ("naive_t", 1.0 / n)):
        se = np.sqrt(factor * var)
        with np.errstate(divide="ignore", invalid="ignore"):
            reject = np.where(se > 0, np.abs(mean) > crit * se, mean != 0)
        out[name] = float(reject.mean())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{'generator':<12} {'k':>3} {'r':>3} {'corrected_t':>12} {'naive_t':>8}")
    for k, r in ((5, 1), (5, 3), (10, 10)):
        for name, gen in (("correlated", correlated_null_diffs), ("learner", learner_null_diffs)):
            d, ratio = gen(args.experiments, k, r, seed=args.seed)
            rates = rejection_rates(d, ratio)
            ct, nt = rates["corrected_t"], rates["naive_t"]
            print(f"{name:<12} {k:>3} {r:>3} {ct:>12.3f} {nt:>8.3f}")


if __name__ == "__main__":
    main()
