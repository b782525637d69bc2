"""The interval the report shows for a metric's mean over runs: inside the metric's range.

Every score but the log-loss lies in [0, 1]; a t-interval over a few runs can leave that range
(a per-stratum ROC-AUC of [-1.53, 2.70] from two runs), so bounded metrics get the percentile
bootstrap over runs, which stays within the runs' own range. Used by the arm summaries
(:mod:`harness.report.analysis`) and the per-stratum tables (:mod:`harness.report.strata`).
"""

from __future__ import annotations

from typing import Any

UNBOUNDED_METRICS = ("log_loss",)
BOUNDED_METHOD = "95 % percentile bootstrap over runs (stays within the runs' range, so within [0, 1])"
UNBOUNDED_METHOD = "95 % t-interval over runs"


def bounded_ci(summary: dict[str, Any], metric: str) -> tuple[list[float], str]:
    """``(interval, method)`` of :func:`harness.stats.summarize`'s ``summary`` for ``metric``."""
    if metric in UNBOUNDED_METRICS:
        return summary["ci95_t"], UNBOUNDED_METHOD
    return summary["ci95_bootstrap"], BOUNDED_METHOD


__all__ = ["BOUNDED_METHOD", "UNBOUNDED_METHOD", "UNBOUNDED_METRICS", "bounded_ci"]
