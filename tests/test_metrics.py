"""Metrics against values computed by hand (threshold 0.5) and the aggregation levels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.metrics import aggregate, binary_metrics, run_metrics
from harness.suite import METRIC_NAMES

Y = np.array([0, 0, 1, 1, 1])
P = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def test_binary_metrics_by_hand():
    m = binary_metrics(Y, P)
    # decisions [0,1,0,1,1]: TP=2 FP=1 TN=1 FN=1
    expected = {
        "accuracy": 3 / 5,
        "balanced_accuracy": (2 / 3 + 1 / 2) / 2,
        "precision": 2 / 3,
        "recall": 2 / 3,
        "specificity": 1 / 2,
        "f1": 2 / 3,
        "roc_auc": 5 / 6,  # 5 of the 6 (positive, negative) pairs ordered correctly
        "pr_auc": (1 + 1 + 3 / 4) / 3,  # precision at each positive in descending order
        "brier": (0.01 + 0.36 + 0.36 + 0.04 + 0.01) / 5,
        "log_loss": -(2 * math.log(0.9) + 2 * math.log(0.4) + math.log(0.8)) / 5,
    }
    assert tuple(m) == METRIC_NAMES
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k


def test_threshold_is_inclusive_and_single_class_is_nan():
    m = binary_metrics(np.array([1, 0]), np.array([0.5, 0.49]))
    assert m["accuracy"] == 1.0
    m = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["specificity"])
    assert m["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(np.array([0, 1]), np.array([np.nan, 0.2]))


def test_aggregation_levels():
    labels = np.array([1, 1, 0, 0, 1, 0])
    probs = np.array([0.2, 0.8, 0.3, 0.1, 0.6, 0.7])
    videos = np.array(["a", "a", "b", "b", "c", "d"])
    groups = np.array(["p1", "p1", "p1", "p1", "p2", "p2"])
    keys, y, p = aggregate(labels, probs, videos, "mean")
    assert keys.tolist() == ["a", "b", "c", "d"] and y.tolist() == [1, 0, 1, 0]
    assert p == pytest.approx([0.5, 0.2, 0.6, 0.7])
    _, _, pmax = aggregate(labels, probs, videos, "max")
    assert pmax == pytest.approx([0.8, 0.3, 0.6, 0.7])
    rows = run_metrics(labels, probs, videos, groups)
    levels = {(r["level"], r["aggregation"]) for r in rows}
    assert levels == {("frame", "none"), ("video", "mean"), ("video", "max"), ("patient", "mean"),
                      ("patient", "max")}
    auc = {(r["level"], r["aggregation"]): r["value"] for r in rows if r["metric"] == "roc_auc"}
    # video mean: positives {0.5, 0.6} vs negatives {0.2, 0.7} -> 2 of 4 pairs
    assert auc[("video", "mean")] == pytest.approx(0.5)
    # one frame per video: no video level
    rows = run_metrics(labels, probs, np.arange(6).astype(str), groups)
    assert {r["level"] for r in rows} == {"frame", "patient"}
    with pytest.raises(ValueError, match="accepted: mean, max"):
        aggregate(labels, probs, videos, "median")
