"""The intervals the report shows for a metric's mean over runs: inside the metric's range.

One arm's mean score over its runs (the metric tables, the external sets' tables, the chance check in
the verdicts and ``summary.json``) has ONE interval, :func:`mean_interval`: the corrected t interval
of the mean (Nadeau-Bengio variance, the one the comparisons use), intersected with the metric's
range (:data:`harness.metrics.METRIC_RANGES`) and flagged ``clipped`` where that cut it. Why this one:

- the runs of one arm share training data, so an interval that treats them as independent (the
  plain t or the percentile bootstrap over runs) is too narrow: it would call an arm "above chance"
  on evidence the runs do not carry; the corrected variance ``(1/n + n_test/n_train) s²`` is the
  same correction the paired comparisons use;
- the true mean lies in the metric's range, so cutting an interval at the range never drops the
  true value when the interval held it: the coverage stays at least 95 %, and the chance check's
  answer (is the lower end above 0.5?) cannot change, since clipping moves only an end that lies
  outside [0, 1];
- a logit-scale interval would also stay inside [0, 1], but it is not defined for runs that score
  exactly 0 or 1 (a perfect fold is common with few test patients) and it is an interval of another
  centre than the arithmetic mean the tables print.

The per-stratum tables (:mod:`harness.report.strata`) keep :func:`bounded_ci` (percentile bootstrap
over runs for bounded metrics, a t-interval for the unbounded ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness import stats
from harness.metrics import METRIC_RANGES, range_text

#: Metrics without an upper bound (a t-interval in :func:`bounded_ci`).
UNBOUNDED_METRICS = tuple(m for m, (_, hi) in METRIC_RANGES.items() if not math.isfinite(hi))
BOUNDED_METHOD = "95 % percentile bootstrap over runs (stays within the runs' range, so within [0, 1])"
UNBOUNDED_METHOD = "95 % t-interval over runs"
MEAN_METHOD = "95 % corrected t interval of the mean over runs (Nadeau-Bengio variance)"


def mean_method(metric: str) -> str:
    """The label of :func:`mean_interval`'s interval for ``metric``."""
    if metric not in METRIC_RANGES:
        return MEAN_METHOD
    return f"{MEAN_METHOD}, clipped to the metric's range {range_text(metric)}"


def clipped_note(metric: str) -> str:
    """The words after an interval that :func:`mean_interval` clipped (for sentences)."""
    return f"clipped to {range_text(metric)}"


def mean_interval(values: Sequence[float] | np.ndarray, metric: str, ratio: float) -> tuple[list[float], bool]:
    """``([low, high], clipped)``: the interval of one arm's mean ``metric`` over its runs (see the module).

    ``ratio`` is the mean n_test / n_train of the splits (:attr:`harness.report.inputs.SplitSizes.ratio`;
    not finite, when the store has no split sizes: 0, the plain t interval). Fewer than 2 values: NaN.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return [math.nan, math.nan], False
    lo, hi = stats.corrected_mean_interval(x, ratio if math.isfinite(ratio) else 0.0)
    low, high = METRIC_RANGES.get(metric, (-math.inf, math.inf))
    clipped = lo < low or hi > high
    return [max(lo, low), min(hi, high)], bool(clipped)


def bounded_ci(summary: dict[str, Any], metric: str) -> tuple[list[float], str]:
    """``(interval, method)`` of :func:`harness.stats.summarize`'s ``summary`` for ``metric`` (the strata)."""
    if metric in UNBOUNDED_METRICS:
        return summary["ci95_t"], UNBOUNDED_METHOD
    return summary["ci95_bootstrap"], BOUNDED_METHOD


__all__ = ["BOUNDED_METHOD", "MEAN_METHOD", "UNBOUNDED_METHOD", "UNBOUNDED_METRICS", "bounded_ci", "clipped_note",
           "mean_interval", "mean_method"]
