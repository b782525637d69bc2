"""The report's view of training: per-run curves with the fit diagnosis, and how far the
diffusion parameters moved from their initial values (figures and summary.json's ``learned``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.report import figures
from harness.report.curves import fit_counts, run_curves, tail_spread
from harness.report.learned import learned_record, parameter_changes


def _done() -> pd.DataFrame:
    return pd.DataFrame([
        {"run_id": "a/r0/f0", "arm": "a", "repeat": 0, "fold": 0, "best_epoch": 2,
         "fit": {"status": "ok", "chance_loss": 0.69}, "learned_params": {"stem.kappa": [0.2, 0.4]},
         "initial_params": {"stem.kappa": [0.1, 0.5]}},
        {"run_id": "a/r0/f1", "arm": "a", "repeat": 0, "fold": 1, "best_epoch": 1,
         "fit": {"status": "did_not_fit", "chance_loss": 0.69}, "learned_params": {"stem.kappa": [0.3, 0.5]},
         "initial_params": {"stem.kappa": [0.1, 0.5]}},
        {"run_id": "b/r0/f0", "arm": "b", "repeat": 0, "fold": 0, "best_epoch": 3, "fit": None,
         "learned_params": {}, "initial_params": None},
    ])


def _epochs() -> pd.DataFrame:
    rows = []
    for run_id, arm, losses, aucs in (("a/r0/f0", "a", [0.9, 0.5, 0.3], [0.6, 0.7, 0.72]),
                                      ("a/r0/f1", "a", [2.0, 1.5, 1.1], [0.5, 0.9, 0.4]),
                                      ("b/r0/f0", "b", [0.8, 0.6, 0.5], [0.6, 0.6, 0.6])):
        for e, (loss, auc) in enumerate(zip(losses, aucs, strict=True), start=1):
            rows.append({"run_id": run_id, "arm": arm, "epoch": e, "train_loss": loss, "val_loss": loss + 0.1,
                         "val_roc_auc": auc})
    return pd.DataFrame(rows)


def test_curves_carry_the_diagnosis_and_counts_are_per_arm() -> None:
    curves = run_curves(_done(), _epochs())
    assert [c.status for c in curves["a"]] == ["ok", "did_not_fit"]
    assert curves["b"][0].status == "unknown" and curves["b"][0].best_epoch == 3
    np.testing.assert_allclose(curves["a"][1].train_loss, [2.0, 1.5, 1.1])
    assert fit_counts(_done()) == {"a": {"ok": 1, "did_not_fit": 1, "diverged": 0, "unknown": 0},
                                   "b": {"ok": 0, "did_not_fit": 0, "diverged": 0, "unknown": 1}}
    # median over runs of (max - min) of the last 3 validation AUCs: 0.12 and 0.5
    assert tail_spread(curves["a"]) == pytest.approx(0.31)


def test_parameter_changes_and_summary_record() -> None:
    changes = parameter_changes(_done())
    assert set(changes.final) == {"a"}  # b has no diffusion parameters
    np.testing.assert_allclose(changes.drift()["a"]["stem.kappa"], [[0.1, -0.1], [0.2, 0.0]])
    record = learned_record(changes)["a"]["stem.kappa"]
    assert record["initial"] == [0.1, 0.5]
    np.testing.assert_allclose(record["final_mean"], [0.25, 0.45])
    np.testing.assert_allclose(record["final_std"], [0.05, 0.05])
    assert [r["run_id"] for r in record["per_run"]] == ["a/r0/f0", "a/r0/f1"]


def test_older_store_without_initial_values_gives_nothing() -> None:
    assert parameter_changes(_done().drop(columns=["initial_params"])).final == {}


def test_training_figures_render() -> None:
    colors = figures.arm_colors(["a", "b"])
    assert figures.training_curves(run_curves(_done(), _epochs()), colors).startswith("data:image/png;base64,")
    changes = parameter_changes(_done())
    assert figures.parameter_drift(changes.drift(), changes.initial).startswith("data:image/png;base64,")
