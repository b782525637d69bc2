"""Statistics for comparing benchmark arms, as pure functions of arrays.

A library of its own: it imports numpy, scipy and statsmodels, never the rest of ``harness``,
so the tests can be checked (and reused) without the store, the models or the data.

Paired per-run tests (:mod:`harness.stats.paired`), on one score per (repeat, fold):

- :func:`summarize` — mean, std, n, t and bootstrap confidence intervals of per-run scores.
- :func:`mean_difference` — mean paired difference with naive, corrected and bootstrap CIs.
- :func:`cohens_dz` — standardized mean paired difference.
- :func:`corrected_resampled_t` — Nadeau-Bengio corrected repeated-CV t-test.
- :func:`wilcoxon_signed_rank` — Wilcoxon signed-rank test with documented zero handling.
- :func:`bayesian_correlated_t` — P(worse), P(equivalent), P(better) with a ROPE.
- :func:`compare_to_baseline` — all per-run paired tests of one arm against the baseline.
- :func:`verdict` — a plain-language sentence from a :func:`compare_to_baseline` result.

Prediction-level tests, on the predictions of one test fold:

- :func:`mcnemar` — McNemar's test on paired decisions (continuity-corrected, exact, clustered).
- :func:`combine_repeats` — conservative combination of one McNemar test per CV repeat.
- :func:`delong_paired` — DeLong's test of two correlated AUCs, optionally clustered by patient
  (:mod:`harness.stats.delong`).
- :func:`combine_delong_folds` — DeLong's test combined over test folds.

All arms at once (:mod:`harness.stats.ranks`) and multiplicity (:mod:`harness.stats.multiple`):

- :func:`friedman` — Friedman test with the Iman-Davenport F correction.
- :func:`nemenyi` — Nemenyi critical difference and pairwise p-values of mean ranks.
- :func:`holm_vs_control` — every arm against a control on mean ranks, Holm-corrected.
- :func:`rank_scores` — per-block ranks, 1 = best.
- :func:`holm` — Holm step-down adjusted p-values, NaN-tolerant.

Power and chance (:mod:`harness.stats.power`):

- :func:`minimal_detectable_difference` — smallest difference the corrected t-test detects
  (noncentral t, power 0.8 by default).
- :func:`holm_alpha` — the level of Holm's strictest step, alpha / m.
- :func:`corrected_mean_interval` — one arm's mean score with the Nadeau-Bengio correction.

Equivalence (:mod:`harness.stats.equivalence`):

- :func:`corrected_tost` — two one-sided tests (Schuirmann 1987) with the Nadeau-Bengio variance:
  is the mean difference within ``±margin``?
- :func:`decide` — better / worse / equivalent / undecided from the Holm-adjusted corrected t and TOST.

Null experiments that check the tests' calibration are in :mod:`harness.stats.calibration`
(``python -m harness.stats.calibration``). See docs/statistics.md for the methods.
"""

from __future__ import annotations

from harness.stats.delong import combine_delong_folds, delong_paired
from harness.stats.equivalence import TostResult, corrected_tost, decide
from harness.stats.multiple import holm
from harness.stats.paired import (
    bayesian_correlated_t,
    cohens_dz,
    combine_repeats,
    compare_to_baseline,
    corrected_resampled_t,
    mcnemar,
    mean_difference,
    summarize,
    verdict,
    wilcoxon_signed_rank,
)
from harness.stats.power import corrected_mean_interval, holm_alpha, minimal_detectable_difference
from harness.stats.ranks import friedman, holm_vs_control, nemenyi, rank_scores

__all__ = [
    "summarize",
    "mean_difference",
    "cohens_dz",
    "corrected_resampled_t",
    "wilcoxon_signed_rank",
    "bayesian_correlated_t",
    "compare_to_baseline",
    "verdict",
    "mcnemar",
    "combine_repeats",
    "delong_paired",
    "combine_delong_folds",
    "friedman",
    "nemenyi",
    "holm_vs_control",
    "rank_scores",
    "holm",
    "minimal_detectable_difference",
    "holm_alpha",
    "corrected_mean_interval",
    "corrected_tost",
    "TostResult",
    "decide",
]
