"""External validation: every outer-fold model scored on each ``evaluation.external`` set.

The runs never trained, selected or tuned on these frames (harness.execute scores them after
training), so a gain that holds here is not a property of the study's own data. Per set:

- per arm, level and metric: mean and interval over the runs (the same summaries as the main
  tables, :func:`harness.report.analysis.summarise_arms`);
- every arm against the baseline, runs paired by (repeat, fold), with the same per-run tests as
  the main comparisons (:func:`harness.report.comparisons.compare_arms`: corrected resampled t,
  Wilcoxon, Bayesian correlated t, Holm across arms). The corrected t uses the study's own split
  sizes: every run scores the SAME external frames, which correlates the runs more than the
  correction assumes, so its p-values lean optimistic — read them with the DeLong test;
- a clustered DeLong test per run on the external frames (patients of the external set as
  clusters), combined over runs as perfectly correlated (mean difference, mean standard error:
  :func:`harness.stats.combine_delong_folds` with one "repeat" per run — conservative), Holm across arms.

Reads only the store (``external_metrics``, ``external_predictions`` and ``external_samples``
through :class:`harness.store.ResultsStore`, the meta ``external``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness import stats
from harness.report.analysis import Analysis, ArmSummary, summarise_arms
from harness.report.comparisons import Comparison, PairingLog, compare_arms
from harness.report.inputs import LEVEL_TITLES, check_metric_values, check_prediction_values, first_line

CORRECTION_NOTE = (
    "Every run scores the same external frames: the corrected t-test (with the study's split sizes) does not model "
    "that extra correlation, so its p-values lean optimistic; the DeLong test treats the runs as perfectly "
    "correlated (conservative)."
)


@dataclass
class ExternalSet:
    """The analysis of one external validation set."""

    name: str
    description: str
    n_samples: int
    n_groups: int
    n_positive: int
    levels: list[tuple[str, str]]
    metric_names: list[str]
    arm_summaries: dict[str, ArmSummary]
    comparisons: list[Comparison]
    delong: dict[str, dict[str, Any]]
    verdicts: dict[str, str]  # arm -> verdict on the primary metric at the primary level
    notes: list[str] = field(default_factory=list)


def external_sets(analysis: Analysis) -> list[ExternalSet]:
    """Every external set of the store, analysed once per :class:`Analysis` (kept on it)."""
    cached = getattr(analysis, "_external_sets", None)
    if cached is None:
        cached = _analyse(analysis)
        analysis._external_sets = cached  # type: ignore[attr-defined]
    return cached


def _read(analysis: Analysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    from harness.store import ResultsStore

    with ResultsStore(analysis.inputs.store_path, readonly=True) as store:
        metrics, predictions = store.external_metrics(), store.external_predictions()
    # The same refusal as the main tables' (harness.report.inputs.read_store); the analysis reads these
    # before the report writes anything.
    check_metric_values(metrics, analysis.inputs.store_path)
    check_prediction_values(predictions, analysis.inputs.store_path)
    return metrics, predictions


def _analyse(analysis: Analysis) -> list[ExternalSet]:
    inputs, st = analysis.inputs, analysis.settings
    meta = inputs.meta.get("external") or {}
    if not meta and not (inputs.suite_dict.get("evaluation", {}) or {}).get("external"):
        return []
    metrics, preds = _read(analysis)
    names = list(meta) + sorted(set(metrics["dataset"]) - set(meta)) if len(metrics) else list(meta)
    out = []
    for name in names:
        m = metrics[metrics["dataset"] == name].drop(columns="dataset")
        p = preds[preds["dataset"] == name].drop(columns="dataset")
        sub = dataclasses.replace(inputs, metrics=m.reset_index(drop=True), predictions=p.reset_index(drop=True),
                                  notes=[])
        info = meta.get(name) or {}
        log = PairingLog()
        comparisons = [c for level in sub.levels
                       for c in compare_arms(sub, st.baseline, st.rope, log, level, alpha=st.alpha)]
        head = next((lv for lv in st.headline_levels if lv in sub.levels), ("frame", "none"))
        verdicts = {c.arm: stats.verdict(c.as_mapping(), alpha=st.alpha) for c in comparisons
                    if (c.level, c.aggregation) == head and c.metric == st.primary}
        first = p[p["run_id"] == p["run_id"].iloc[0]] if len(p) else p
        out.append(ExternalSet(
            name=name, description=str(info.get("description") or ""),
            n_samples=int(info.get("n_samples") or len(first)),
            n_groups=int(info.get("n_groups") or (first["group_id"].nunique() if len(first) else 0)),
            n_positive=int(first["label"].sum()) if len(first) else 0,
            levels=sub.levels, metric_names=sub.metric_names, arm_summaries=summarise_arms(sub),
            comparisons=comparisons, delong=_delong(p, inputs.arms, st.baseline), verdicts=verdicts,
            notes=[*log.notes, *([] if not comparisons else [CORRECTION_NOTE])]))
    return out


def _delong(pred: pd.DataFrame, arms: list[str], baseline: str) -> dict[str, dict[str, Any]]:
    """Clustered DeLong per run on the external frames, combined over runs as perfectly correlated."""
    out: dict[str, dict[str, Any]] = {}
    if not len(pred):
        return out
    base = pred.loc[pred["arm"] == baseline, ["repeat", "fold", "sample_id", "prob"]]
    for arm in arms:
        if arm == baseline:
            continue
        mine = pred.loc[pred["arm"] == arm, ["repeat", "fold", "sample_id", "group_id", "label", "prob"]]
        pairs = mine.merge(base, on=["repeat", "fold", "sample_id"], suffixes=("_arm", "_base"))
        if not len(pairs):
            continue
        per_run, skipped = [], []
        for i, ((r, f), run) in enumerate(pairs.groupby(["repeat", "fold"], sort=True)):
            try:
                res = stats.delong_paired(run["label"].to_numpy(), run["prob_arm"].to_numpy(),
                                          run["prob_base"].to_numpy(), clusters=run["group_id"].astype(str).to_numpy())
            except ValueError as exc:
                skipped.append(f"r{r}/f{f}: {first_line(exc)}")
                continue
            res["repeat"] = i  # one "repeat" per run: the same frames every time, combined as perfectly correlated
            per_run.append(res)
        if not per_run:
            out[arm] = {"statistic": None, "p": None, "n_runs": 0,
                        "note": "no run allows the test" + (f" ({skipped[0]})" if skipped else "")}
            continue
        combined = dict(stats.combine_delong_folds(per_run))
        combined.update(auc_arm=float(np.mean([d["auc_a"] for d in per_run])),
                        auc_baseline=float(np.mean([d["auc_b"] for d in per_run])), n_runs=len(per_run),
                        method="clustered DeLong per run (external patients as clusters); runs combined as perfectly "
                               "correlated: mean difference, mean SE (conservative)")
        if skipped:
            combined["runs_not_testable"] = skipped
        out[arm] = combined
    ps = [out[a].get("p") for a in out]
    adjusted = stats.holm([float("nan") if p is None else float(p) for p in ps])
    for arm, p in zip(out, adjusted):
        out[arm]["p_holm"] = p
    return out


# --------------------------------------------------------------------------- outputs


def summary(analysis: Analysis) -> dict[str, Any]:
    """``summary.json["external"]``: ``{name: {description, n_*, arms: {arm: {metrics, levels}}, comparisons,
    delong, verdicts, notes}}``."""
    out = {}
    for s in external_sets(analysis):
        arms = {}
        for arm, summ in s.arm_summaries.items():
            levels = {key: {m: v.as_dict() for m, v in block.items()} for key, block in summ.levels.items()}
            if levels:
                arms[arm] = {"metrics": levels.get("frame/none", {}), "levels": levels}
        out[s.name] = {
            "description": s.description, "n_samples": s.n_samples, "n_groups": s.n_groups,
            "n_positive": s.n_positive, "arms": arms,
            "comparisons": [_comparison(c) for c in s.comparisons], "delong": s.delong, "verdicts": s.verdicts,
            "notes": s.notes,
        }
    return out


def _comparison(c: Comparison) -> dict[str, Any]:
    t = c.tests
    return {
        "arm": c.arm, "versus": c.versus, "metric": c.metric, "level": c.level, "aggregation": c.aggregation,
        "n_runs": c.n_runs, "mean_arm": c.mean_arm, "mean_baseline": c.mean_baseline,
        "mean_difference": c.mean_difference, "ci95": c.ci95,
        "tests": {
            "corrected_t": {k: t["corrected_t"].get(k) for k in ("statistic", "p", "p_holm", "df")},
            "wilcoxon": {k: t["wilcoxon"].get(k) for k in ("statistic", "p", "p_holm")},
            "bayes_correlated_t": {k: t["bayes_correlated_t"].get(k) for k in ("p_worse", "p_rope", "p_better")},
        },
    }


def context(analysis: Analysis) -> list[dict[str, Any]]:
    """What the page's External validation section shows."""
    st = analysis.settings
    empty = {"mean": None, "ci95_bounded": None, "ci95_clipped": False}
    out = []
    for s in external_sets(analysis):
        tables = []
        for level, agg in s.levels:
            key = f"{level}/{agg}"
            arms = [a for a in analysis.arms if s.arm_summaries.get(a) and s.arm_summaries[a].levels.get(key)]
            names = sorted(s.metric_names, key=lambda m: m != st.primary)
            rows = [{"metric": m, "cells": [s.arm_summaries[a].levels[key][m].as_dict()
                                             if m in s.arm_summaries[a].levels[key] else empty for a in arms]}
                    for m in names]
            tables.append({"title": LEVEL_TITLES.get((level, agg), f"{level} ({agg})"), "arms": arms, "rows": rows})
        comps = [{"arm": c.arm, "level": LEVEL_TITLES.get((c.level, c.aggregation), c.level),
                  "mean_arm": c.mean_arm, "mean_baseline": c.mean_baseline, "mean_difference": c.mean_difference,
                  "ci95": c.ci95, "p": c.tests["corrected_t"].get("p"), "p_holm": c.tests["corrected_t"].get("p_holm"),
                  "p_better": c.tests["bayes_correlated_t"].get("p_better"),
                  "p_rope": c.tests["bayes_correlated_t"].get("p_rope"),
                  "p_worse": c.tests["bayes_correlated_t"].get("p_worse")}
                 for c in s.comparisons if c.metric == st.primary]
        delong = [{"arm": a, **d} for a, d in s.delong.items()]
        out.append({"name": s.name, "description": s.description, "n_samples": s.n_samples, "n_groups": s.n_groups,
                    "n_positive": s.n_positive, "tables": tables, "comparisons": comps, "delong": delong,
                    "verdicts": s.verdicts, "notes": s.notes})
    return out


__all__ = ["ExternalSet", "context", "external_sets", "summary"]
