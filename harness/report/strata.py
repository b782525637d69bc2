"""Metrics per stratum of a metadata column (severity, probe, ...), computed per run, summarised over runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness import stats
from harness.metrics import binary_metrics
from harness.report.intervals import bounded_ci

PREDICTION_COLUMNS = ("run_id", "arm", "repeat", "fold", "sample_id", "group_id", "video_id", "label", "prob")
# Shown in the HTML table (summary.json holds every metric): the ones that stay meaningful in a
# stratum holding one class only (e.g. frames without B-lines: specificity; with: recall).
STRATUM_METRICS = ("accuracy", "recall", "specificity", "roc_auc", "brier")

# per arm, stratum and metric: one value per run
PerRun = dict[str, dict[str, dict[str, list[float]]]]


@dataclass
class StrataTable:
    """One metadata column: ``rows`` per (stratum, arm) with every metric; ``pivot`` per stratum
    with one cell per arm of ``metric`` (the one the figure shows)."""

    column: str
    note: str | None
    metric: str
    metrics: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    pivot: list[dict[str, Any]] = field(default_factory=list)
    arms: list[str] = field(default_factory=list)
    strata: list[str] = field(default_factory=list)

    def figure_table(self) -> dict[str, dict[str, tuple[float, float, float]]]:
        """``{arm: {stratum: (mean, ci_low, ci_high)}}`` of :attr:`metric` (a point without a CI
        where the CI is not finite)."""
        table: dict[str, dict[str, tuple[float, float, float]]] = {}
        for r in self.rows:
            cell = r["metrics"].get(self.metric, {})
            if cell.get("mean") is None:
                continue
            ci = cell["ci95"] if cell["ci95"] and all(np.isfinite(cell["ci95"])) else [cell["mean"]] * 2
            table.setdefault(r["arm"], {})[r["stratum"]] = (cell["mean"], ci[0], ci[1])
        return table


def stratum_labels(values: pd.Series, max_levels: int = 8) -> pd.Series:
    """Stratum of each row: the value itself for a few levels, else quartile bins of a number."""
    numeric = pd.to_numeric(values, errors="coerce")
    if values.nunique(dropna=True) <= max_levels or numeric.isna().mean() > 0.5:
        return values.astype("string").fillna("missing")
    bins = pd.qcut(numeric, q=4, duplicates="drop")
    return bins.astype("string").fillna("missing")


def stratify(pred: pd.DataFrame, columns: Sequence[str], arms: Sequence[str], primary: str) -> list[StrataTable]:
    """One :class:`StrataTable` per metadata column of the stored predictions."""
    out = []
    for column in columns:
        if column not in pred.columns:
            available = sorted(set(pred.columns) - set(PREDICTION_COLUMNS))
            note = (
                f"column {column!r} is not in the stored predictions' metadata "
                f"(available: {', '.join(available) or 'none'})."
            )
            out.append(StrataTable(column, note, primary))
        else:
            out.append(_stratum_table(pred, column, arms, primary))
    return out


def _stratum_table(pred: pd.DataFrame, column: str, arms: Sequence[str], primary: str) -> StrataTable:
    labels = stratum_labels(pred[column])
    strata = sorted(labels.unique(), key=_natural_key)
    per, sizes, positives = _per_run(pred.assign(_stratum=labels), arms[0])
    all_metrics = sorted(
        {m for d in per.values() for st in d.values() for m in st}, key=lambda m: (m not in STRATUM_METRICS, m)
    )
    rows = [
        {
            "stratum": stratum,
            "arm": arm,
            "n": float(np.mean(sizes.get(stratum, [np.nan]))),
            "positive_rate": float(np.mean(positives.get(stratum, [np.nan]))),
            **_cells(per.get(arm, {}).get(stratum, {}), all_metrics),
        }
        for stratum in strata
        for arm in arms
    ]
    # The figure shows the primary metric when it is defined in several strata; else accuracy,
    # which is the detection rate (recall) in a B-lines-only stratum and the specificity in a clear one.
    defined = {r["stratum"] for r in rows if r["metrics"].get(primary, {}).get("mean") is not None}
    metric = primary if len(defined) >= 2 else "accuracy"
    return StrataTable(
        column=column,
        note=None,
        metric=metric,
        metrics=[m for m in STRATUM_METRICS if m in all_metrics],
        rows=rows,
        pivot=_pivot(rows, strata, arms, metric),
        arms=list(arms),
        strata=list(strata),
    )


def _per_run(pred: pd.DataFrame, first_arm: str) -> tuple[PerRun, dict[str, list[int]], dict[str, list[float]]]:
    """Every metric per arm, stratum and run; stratum sizes and positive rates per run (of one arm:
    the test folds are the same for all)."""
    per: PerRun = {}
    sizes: dict[str, list[int]] = {}
    positives: dict[str, list[float]] = {}
    for (arm, _run), run_pred in pred.groupby(["arm", "run_id"], sort=True):
        for stratum, part in run_pred.groupby("_stratum", sort=False):
            scores = binary_metrics(part["label"].to_numpy().astype(int), part["prob"].to_numpy(dtype=float))
            for metric, value in scores.items():
                per.setdefault(arm, {}).setdefault(stratum, {}).setdefault(metric, []).append(value)
            if arm == first_arm:
                sizes.setdefault(stratum, []).append(len(part))
                positives.setdefault(stratum, []).append(float(part["label"].mean()))
    return per, sizes, positives


def _cells(values: dict[str, list[float]], metrics: Sequence[str]) -> dict[str, Any]:
    """``cells`` (the table's metrics) and ``metrics`` (all) of one (stratum, arm): mean and CI over runs,
    inside the metric's range (:func:`harness.report.intervals.bounded_ci`: the percentile bootstrap over runs)."""
    cells: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        vals = np.array(values.get(metric, []), dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            s = stats.summarize(vals, n_boot=2000)
            cells[metric] = {"mean": s["mean"], "ci95": bounded_ci(s, metric)[0], "n_runs": s["n"]}
        else:
            cells[metric] = {"mean": None, "ci95": None, "n_runs": 0}
    return {"cells": [cells[m] for m in STRATUM_METRICS if m in cells], "metrics": cells}


def _pivot(rows: list[dict[str, Any]], strata: Sequence[str], arms: Sequence[str], metric: str) -> list[dict[str, Any]]:
    """The compact view: one row per stratum, one column per arm, one metric."""
    pivot = []
    for stratum in strata:
        mine = {r["arm"]: r for r in rows if r["stratum"] == stratum}
        first = next(iter(mine.values()))
        pivot.append(
            {
                "stratum": stratum,
                "n": first["n"],
                "positive_rate": first["positive_rate"],
                "cells": [mine[a]["metrics"].get(metric, {"mean": None, "ci95": None}) for a in arms],
            }
        )
    return pivot


def _natural_key(text: str) -> tuple:
    try:
        return (0, float(str(text).strip("([]) ").split(",")[0]), str(text))
    except ValueError:
        return (1, 0.0, str(text))
