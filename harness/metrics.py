"""Test-fold metrics (scikit-learn) at frame, video and patient level.

Decisions use a fixed threshold of 0.5 on the predicted probability of the positive class
(B-lines present): the models are trained with a class-balanced loss, and a threshold tuned on
the test fold would bias every threshold-dependent metric. Threshold-free metrics (ROC-AUC,
PR-AUC = average precision, Brier score, log loss) use the probabilities themselves.

Video and patient levels aggregate frame probabilities by their ``mean`` and their ``max``; the
label of a video/patient is positive when any of its frames is (for COVID-BLUES every frame
carries its video's label, so this is the video label).

Undefined values (ROC-AUC / PR-AUC with a single class in the fold) are NaN, never a guess.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: The metrics of every run, in the order the report lists them.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
)

#: The metrics where lower is better (the report, the search's direction).
LOWER_IS_BETTER: tuple[str, ...] = ("brier", "log_loss")

#: The values each metric can take, ``(low, high)``, both ends included where finite; the one place
#: that knows them (the report refuses a stored value outside its range and keeps every interval
#: of a mean inside it). Any metric may also be NaN: undefined on that fold (a single class).
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 1.0),
    "balanced_accuracy": (0.0, 1.0),
    "precision": (0.0, 1.0),
    "recall": (0.0, 1.0),
    "specificity": (0.0, 1.0),
    "f1": (0.0, 1.0),
    "roc_auc": (0.0, 1.0),
    "pr_auc": (0.0, 1.0),
    "brier": (0.0, 1.0),  # mean squared error of a probability against a 0/1 label
    "log_loss": (0.0, math.inf),  # finite: scikit-learn clips the probabilities away from 0 and 1
}
assert tuple(METRIC_RANGES) == METRIC_NAMES
#: How far past an end of its range a value may lie and still be accepted: scikit-learn's sums round
#: (an average precision of 1 + 2e-16), which is no value outside the range.
RANGE_TOLERANCE = 1e-9


def range_text(metric: str) -> str:
    """The accepted values of ``metric`` in words: ``[0, 1]``, ``>= 0 (finite)``; ``any`` for a metric this
    code does not know (written by newer code)."""
    if metric not in METRIC_RANGES:
        return "any"
    lo, hi = METRIC_RANGES[metric]
    return f"[{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g} (finite)"


def in_range(metric: str, values: np.ndarray) -> np.ndarray:
    """Per value: NaN (undefined) or finite inside the range of ``metric`` (every value of an unknown metric)."""
    v = np.asarray(values, dtype=np.float64)
    if metric not in METRIC_RANGES:
        return np.ones(v.shape, dtype=bool)
    lo, hi = METRIC_RANGES[metric]
    with np.errstate(invalid="ignore"):
        return np.isnan(v) | (np.isfinite(v) & (v >= lo - RANGE_TOLERANCE) & (v <= hi + RANGE_TOLERANCE))

THRESHOLD = 0.5
AGGREGATIONS = ("mean", "max")


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """All :data:`METRIC_NAMES` for binary labels (0/1) and positive-class probabilities."""
    from sklearn import metrics as skm  # imported here: the schema imports METRIC_NAMES
    y = np.asarray(labels).astype(int)
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be equal-length, non-empty 1-D")
    if not np.all(np.isfinite(p)):
        raise ValueError("probabilities contain NaN or Inf")
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": (skm.balanced_accuracy_score(y, pred) if both else float("nan")),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "specificity": tn / (tn + fp) if (tn + fp) else float("nan"),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, p) if both else float("nan"),
        "pr_auc": skm.average_precision_score(y, p) if both else float("nan"),
        "brier": skm.brier_score_loss(y, p, pos_label=1),
        "log_loss": skm.log_loss(y, p, labels=[0, 1]),
    }
    if not (tp + fn):
        out["recall"] = float("nan")
    assert tuple(out) == METRIC_NAMES
    return {k: float(v) for k, v in out.items()}


def aggregate(labels: np.ndarray, probs: np.ndarray, keys: np.ndarray,
              how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-key label (max of frame labels) and probability (``mean`` or ``max``); returns (keys, y, p)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation {how!r}; accepted: {', '.join(AGGREGATIONS)}")
    df = pd.DataFrame({"k": np.asarray(keys).astype(str), "y": np.asarray(labels).astype(int),
                       "p": np.asarray(probs, dtype=np.float64)})
    g = df.groupby("k", sort=True)
    return g["y"].max().index.to_numpy(), g["y"].max().to_numpy(), g["p"].agg(how).to_numpy()


def run_metrics(labels: np.ndarray, probs: np.ndarray, videos: np.ndarray, groups: np.ndarray,
                levels: Any = None) -> list[dict[str, Any]]:
    """Rows ``{level, aggregation, metric, value}`` for the store.

    Frame level (aggregation ``none``); video level when some video has several frames;
    patient level when some patient has several frames. ``levels``: only these (level, aggregation)
    pairs (the report's label sensitivity recomputes the primary one from the stored predictions).
    """
    def wanted(level: str, how: str) -> bool:
        return levels is None or (level, how) in levels

    rows = [{"level": "frame", "aggregation": "none", "metric": k, "value": v}
            for k, v in binary_metrics(labels, probs).items()] if wanted("frame", "none") else []
    for level, keys in (("video", videos), ("patient", groups)):
        keys = np.asarray(keys).astype(str)
        if len(np.unique(keys)) == len(keys):
            continue  # one frame per unit: identical to frame level
        for how in AGGREGATIONS:
            if not wanted(level, how):
                continue
            _, y, p = aggregate(labels, probs, keys, how)
            rows += [{"level": level, "aggregation": how, "metric": k, "value": v}
                     for k, v in binary_metrics(y, p).items()]
    return rows
