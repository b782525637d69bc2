"""Did each run train? Its per-epoch curves and the store's fit diagnosis, read for the report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

FIT_STATUSES = ("ok", "did_not_fit", "diverged")


@dataclass(frozen=True)
class RunCurve:
    """One run's training history: losses and validation ROC-AUC per epoch, and its diagnosis
    (``status`` ok | did_not_fit | diverged | unknown for stores written before diagnoses)."""

    run_id: str
    arm: str
    epochs: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_auc: np.ndarray
    best_epoch: int | None
    status: str
    chance_loss: float | None


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)


def _fit(row: pd.Series) -> Mapping:
    value = row.get("fit")
    return value if isinstance(value, Mapping) else {}


def run_curves(done: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, list[RunCurve]]:
    """Per arm (in the order of ``done``), the curves of its done runs."""
    out: dict[str, list[RunCurve]] = {}
    by_run = {rid: g.sort_values("epoch") for rid, g in epochs.groupby("run_id")} if len(epochs) else {}
    for _, row in done.sort_values(["repeat", "fold"]).iterrows():
        hist = by_run.get(row["run_id"])
        if hist is None or not len(hist):
            continue
        fit = _fit(row)
        best = row.get("best_epoch")
        out.setdefault(str(row["arm"]), []).append(RunCurve(
            run_id=str(row["run_id"]), arm=str(row["arm"]), epochs=_column(hist, "epoch"),
            train_loss=_column(hist, "train_loss"), val_loss=_column(hist, "val_loss"),
            val_auc=_column(hist, "val_roc_auc"), best_epoch=int(best) if pd.notna(best) else None,
            status=str(fit.get("status", "unknown")), chance_loss=fit.get("chance_loss")))
    return out


def fit_counts(done: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per arm: how many done runs were diagnosed ok, did_not_fit, diverged, or unknown."""
    counts: dict[str, dict[str, int]] = {}
    for _, row in done.iterrows():
        status = str(_fit(row).get("status", "unknown"))
        arm = counts.setdefault(str(row["arm"]), dict.fromkeys((*FIT_STATUSES, "unknown"), 0))
        arm[status if status in arm else "unknown"] += 1
    return counts


def tail_spread(curves: list[RunCurve], tail: int = 3) -> float | None:
    """Median over runs of the validation ROC-AUC range over each run's last ``tail`` epochs:
    how much the selected epoch could have changed by noise alone."""
    spreads = []
    for c in curves:
        auc = c.val_auc[np.isfinite(c.val_auc)][-tail:]
        if len(auc) >= 2:
            spreads.append(float(auc.max() - auc.min()))
    return float(np.median(spreads)) if spreads else None


__all__ = ["FIT_STATUSES", "RunCurve", "fit_counts", "run_curves", "tail_spread"]
