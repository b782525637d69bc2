"""Assemble the report from a results store: summaries, paired comparisons, strata, timing.

``build_report(out_dir)`` reads ``out_dir/results.sqlite`` through :class:`harness.store.ResultsStore`
(read API only; the report never trains), computes every number with
:mod:`harness.stats`, draws the figures (:mod:`harness.report.figures`) and writes three
files side by side: ``report.html`` (self-contained), ``summary.json`` (the numbers, NaN -> null)
and ``metrics.csv`` (every per-run metric, long format).

Conventions:
- the unit of analysis is one run (repeat x fold); arms are paired with the baseline by
  (repeat, fold); metrics are never pooled across folds;
- ``mean_difference`` is always ``arm - baseline``; for metrics where lower is better
  (``LOWER_IS_BETTER``) the Bayesian probabilities are oriented so that "better" means lower;
- Holm's correction runs across arms within one (test, level, metric) family.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.metrics import binary_metrics
from harness import stats
from harness.report import figures, html, samples
from harness.report._json import jsonable
from harness.report.methods import environment, failed_runs, leakage, methods, reproduce_command

LOWER_IS_BETTER = ("brier", "log_loss")
QUESTION = (
    "Does anisotropic diffusion, as preprocessing of the frames or as a layer of the network, change how "
    "well an EfficientNet-B0 detects B-lines in lung ultrasound?"
)
LEVEL_TITLES = {
    ("frame", "none"): "Frame level",
    ("video", "mean"): "Video level (mean of the frame probabilities)",
    ("video", "max"): "Video level (maximum frame probability)",
    ("patient", "mean"): "Patient level (mean of the frame probabilities)",
    ("patient", "max"): "Patient level (maximum frame probability)",
}
TIMING_COLUMNS = (
    # (key in the summary, label, unit digits)
    ("preprocessing_seconds", "preprocessing (s)", 2),
    ("train_seconds", "training (s / run)", 1),
    ("inference_ms_per_image", "inference (ms / image)", 3),
    ("peak_rss_mb", "peak memory (MB)", 0),
)
THRESHOLD = 0.5  # decision threshold of the McNemar test (as for the store's threshold metrics)


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Everything the report reads from the store, plus the rebuilt suite."""

    out_dir: Path
    store_path: Path
    meta: dict[str, Any]
    suite_dict: dict[str, Any]
    suite: Any  # harness.suite.Suite or None when the stored config no longer validates
    runs: pd.DataFrame
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    epochs: pd.DataFrame
    splits: pd.DataFrame
    preprocessing: pd.DataFrame
    skipped: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)
    unpaired: dict[str, int] = field(default_factory=dict)  # arm -> runs left out of some pairing

    @property
    def arms(self) -> list[str]:
        """Arms in suite order, then any arm only the store knows (e.g. from an older suite)."""
        order = [a["name"] for a in self.suite_dict.get("arms", [])]
        extra = sorted(set(self.runs["arm"]) - set(order)) if len(self.runs) else []
        return order + extra

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]


def read_store(out_dir: Path) -> Inputs:
    """Read the results store of ``out_dir`` (or a path to the ``.sqlite`` file itself)."""
    from harness.store import ResultsStore

    store = ResultsStore(out_dir, readonly=True)
    try:
        meta = store.meta()
        suite_dict = store.suite_config()
        inputs = Inputs(
            out_dir=store.path.parent,
            store_path=store.path,
            meta=meta,
            suite_dict=suite_dict,
            suite=None,
            runs=store.runs(),
            metrics=store.metrics(),
            predictions=store.predictions(),
            epochs=store.epochs(),
            splits=store.splits(),
            preprocessing=store.preprocessing(),
            skipped=store.skipped(),
        )
    finally:
        store.close()
    try:
        from harness.suite import Suite

        inputs.suite = Suite.model_validate(suite_dict)
    except Exception as exc:  # an old store read by newer code: still report the numbers
        inputs.notes.append(
            f"The stored suite no longer validates ({type(exc).__name__}: {_first_line(exc)}); "
            "methods and figures that need it are limited."
        )
    return inputs


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- small helpers


def _nan() -> float:
    return float("nan")


def scores_by_run(
    metrics: pd.DataFrame, arm: str, level: str, aggregation: str, metric: str
) -> dict[tuple[int, int], float]:
    """``{(repeat, fold): value}`` of one arm / level / metric, finite values only."""
    return dict(_score_index(metrics).get((arm, level, aggregation, metric), {}))


_INDEX: dict[int, tuple[pd.DataFrame, dict[tuple[str, str, str, str], dict[tuple[int, int], float]]]] = {}


def _score_index(metrics: pd.DataFrame) -> dict[tuple[str, str, str, str], dict[tuple[int, int], float]]:
    """All finite per-run scores keyed by (arm, level, aggregation, metric), built once per frame."""
    cached = _INDEX.get(id(metrics))
    if cached is not None and cached[0] is metrics:
        return cached[1]
    index: dict[tuple[str, str, str, str], dict[tuple[int, int], float]] = {}
    cols = ["arm", "level", "aggregation", "metric", "repeat", "fold", "value"]
    for arm, level, agg, metric, r, f, v in metrics[cols].itertuples(index=False, name=None):
        if v is not None and np.isfinite(float(v)):
            index.setdefault((str(arm), str(level), str(agg), str(metric)), {})[(int(r), int(f))] = float(v)
    _INDEX.clear()  # one store at a time; keeps memory bounded
    _INDEX[id(metrics)] = (metrics, index)
    return index


def _levels(metrics: pd.DataFrame) -> list[tuple[str, str]]:
    present = {(str(lv), str(a)) for lv, a in zip(metrics["level"], metrics["aggregation"])} if len(metrics) else set()
    known = [k for k in LEVEL_TITLES if k in present]
    return known + sorted(present - set(known))


def _metric_names(metrics: pd.DataFrame) -> list[str]:
    try:
        from harness.suite import METRIC_NAMES
    except Exception:  # pragma: no cover - the schema module is part of the package
        METRIC_NAMES = ()
    present = set(metrics["metric"]) if len(metrics) else set()
    return [m for m in METRIC_NAMES if m in present] + sorted(present - set(METRIC_NAMES))


def _split_sizes(inputs: Inputs) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    """Outer training size (train + inner validation) and test size per (repeat, fold).

    The splits are shared by all arms; the first done run of each (repeat, fold) gives them.
    """
    n_train: dict[tuple[int, int], float] = {}
    n_test: dict[tuple[int, int], float] = {}
    for row in inputs.done.itertuples(index=False):
        key = (int(row.repeat), int(row.fold))
        if key in n_train or row.n_train is None or row.n_test is None or pd.isna(row.n_train) or pd.isna(row.n_test):
            continue
        n_val = 0 if row.n_val is None or pd.isna(row.n_val) else row.n_val
        n_train[key] = float(row.n_train) + float(n_val)
        n_test[key] = float(row.n_test)
    return n_train, n_test


# --------------------------------------------------------------------------- summaries


def summarise_arms(inputs: Inputs, metric_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per arm, level and metric: mean, std, t and bootstrap CIs and the per-run values."""
    out: dict[str, dict[str, Any]] = {}
    for arm in inputs.arms:
        levels: dict[str, dict[str, Any]] = {}
        for level, agg in _levels(inputs.metrics):
            block = {}
            for metric in metric_names:
                values = scores_by_run(inputs.metrics, arm, level, agg, metric)
                if not values:
                    continue
                keys = sorted(values)
                s = stats.summarize([values[k] for k in keys])
                block[metric] = {
                    "mean": s["mean"],
                    "std": s["std"],
                    "ci95": s["ci95_t"],
                    "ci95_bootstrap": s["ci95_bootstrap"],
                    "n": s["n"],
                    "per_run": [{"repeat": r, "fold": f, "value": values[(r, f)]} for r, f in keys],
                }
            if block:
                levels[f"{level}/{agg}"] = block
        out[arm] = {"metrics": levels.get("frame/none", {}), "levels": levels}
    return out


def _orient(comparison: dict[str, Any], metric: str) -> dict[str, Any]:
    """Make the Bayesian "better" mean lower for lower-is-better metrics (mu -> -mu is exact)."""
    if metric in LOWER_IS_BETTER:
        b = comparison["tests"]["bayes_correlated_t"]
        b["p_worse"], b["p_better"] = b["p_better"], b["p_worse"]
        b["oriented"] = "lower is better"
    return comparison


def compare_arms(
    inputs: Inputs,
    baseline: str,
    metric_names: Sequence[str],
    rope: float,
    level: str = "frame",
    aggregation: str = "none",
) -> list[dict[str, Any]]:
    """Every arm against the baseline on every metric of one level, Holm-adjusted across arms."""
    ev = inputs.suite_dict.get("evaluation", {})
    folds, repeats = int(ev.get("folds", 0) or 0), int(ev.get("repeats", 1) or 1)
    n_train, n_test = _split_sizes(inputs)
    out: list[dict[str, Any]] = []
    for metric in metric_names:
        base = scores_by_run(inputs.metrics, baseline, level, aggregation, metric)
        family = []
        for arm in inputs.arms:
            if arm == baseline:
                continue
            scores = scores_by_run(inputs.metrics, arm, level, aggregation, metric)
            keys = sorted(set(scores) & set(base) & set(n_train))
            if len(keys) < 2:
                if scores:
                    inputs.notes.append(
                        f"{arm} vs {baseline}, {level} {metric}: fewer than 2 paired runs; not compared."
                    )
                continue
            missing = set(scores) ^ set(base)
            try:
                c = stats.compare_to_baseline(
                    {k: scores[k] for k in keys},
                    {k: base[k] for k in keys},
                    {k: n_train[k] for k in keys},
                    {k: n_test[k] for k in keys},
                    folds=folds,
                    repeats=repeats,
                    rope=rope,
                    allow_missing=len(keys) < folds * repeats,
                )
            except ValueError as exc:
                inputs.notes.append(f"{arm} vs {baseline}, {level} {metric}: not compared ({_first_line(exc)}).")
                continue
            if missing:  # one note per arm, written by assemble()
                inputs.unpaired[arm] = max(inputs.unpaired.get(arm, 0), len(missing))
            c = _orient(c, metric)
            c.update({"arm": arm, "versus": baseline, "metric": metric, "level": level, "aggregation": aggregation})
            family.append(c)
        for test in ("corrected_t", "wilcoxon"):
            adjusted = stats.holm([_p(c["tests"][test].get("p")) for c in family])
            for c, p in zip(family, adjusted):
                c["tests"][test]["p_holm"] = p
        out.extend(family)
    return out


def _p(value: Any) -> float:
    return _nan() if value is None else float(value)


# --------------------------------------------------------------------------- prediction-level tests


def _paired_predictions(pred: pd.DataFrame, arm: str, baseline: str) -> pd.DataFrame:
    """Predictions of ``arm`` and ``baseline`` joined on (repeat, fold, sample_id)."""
    cols = ["repeat", "fold", "sample_id", "group_id", "label", "prob"]
    a = pred.loc[pred["arm"] == arm, cols]
    b = pred.loc[pred["arm"] == baseline, ["repeat", "fold", "sample_id", "prob"]]
    return a.merge(b, on=["repeat", "fold", "sample_id"], suffixes=("_arm", "_base"))


def prediction_tests(inputs: Inputs, baseline: str) -> list[dict[str, Any]]:
    """DeLong (clustered by patient, per fold, combined) and McNemar per arm vs the baseline.

    McNemar needs independent samples: within one repeat each sample is tested exactly once,
    so the test runs per repeat; the headline is the first repeat, the others are listed.
    """
    pred = inputs.predictions
    out: list[dict[str, Any]] = []
    for arm in inputs.arms:
        if arm == baseline or not len(pred):
            continue
        pairs = _paired_predictions(pred, arm, baseline)
        if not len(pairs):
            continue
        entry: dict[str, Any] = {"arm": arm, "versus": baseline}
        entry["delong"] = _delong(pairs)
        entry["mcnemar"] = _mcnemar(pairs)
        out.append(entry)
    for test in ("delong", "mcnemar"):
        adjusted = stats.holm([_p(e[test].get("p")) for e in out])
        for e, p in zip(out, adjusted):
            e[test]["p_holm"] = p
    return out


def _delong(pairs: pd.DataFrame) -> dict[str, Any]:
    """Clustered DeLong per test fold (patients as clusters), combined across folds and repeats."""
    per_fold, skipped = [], []
    for (r, f), fold in pairs.groupby(["repeat", "fold"], sort=True):
        try:
            res = stats.delong_paired(
                fold["label"].to_numpy(),
                fold["prob_arm"].to_numpy(),
                fold["prob_base"].to_numpy(),
                clusters=fold["group_id"].to_numpy(),
            )
        except ValueError as exc:  # e.g. a fold with one class, or one patient of a class
            skipped.append(f"r{r}/f{f}: {_first_line(exc)}")
            continue
        res["repeat"] = int(r)
        per_fold.append(res)
    if not per_fold:
        return {
            "statistic": None,
            "p": None,
            "n_folds": 0,
            "note": "no test fold allows the test" + (f" ({skipped[0]})" if skipped else ""),
        }
    combined = dict(stats.combine_delong_folds(per_fold))
    # Mean of the per-fold AUCs (never an AUC of pooled folds).
    combined["auc_arm"] = float(np.mean([d["auc_a"] for d in per_fold]))
    combined["auc_baseline"] = float(np.mean([d["auc_b"] for d in per_fold]))
    if skipped:
        combined["folds_not_testable"] = skipped
    return combined


def _mcnemar(pairs: pd.DataFrame) -> dict[str, Any]:
    per_repeat = []
    for r, rep in pairs.groupby("repeat", sort=True):
        res = stats.mcnemar(
            rep["label"].to_numpy(),
            (rep["prob_base"].to_numpy() >= THRESHOLD).astype(int),
            (rep["prob_arm"].to_numpy() >= THRESHOLD).astype(int),
        )
        res["repeat"] = int(r)
        per_repeat.append(res)
    head = dict(per_repeat[0])
    head["form"] = ("exact binomial" if head["exact"] else "χ², continuity-corrected") + f", repeat {head['repeat']}"
    head["per_repeat"] = [{"repeat": x["repeat"], "statistic": x["statistic"], "p": x["p"]} for x in per_repeat]
    return head


# --------------------------------------------------------------------------- ranking over arms


def rank_arms(inputs: Inputs, baseline: str, metric: str, alpha: float) -> dict[str, Any]:
    """Friedman / Iman-Davenport over arms on ``metric``, Nemenyi CD, Holm vs the baseline."""
    arms = [a for a in inputs.arms if scores_by_run(inputs.metrics, a, "frame", "none", metric)]
    if len(arms) < 3:
        return {
            "available": False,
            "reason": f"The Friedman test ranks at least 3 arms; {len(arms)} have {metric} scores.",
        }
    per_arm = {a: scores_by_run(inputs.metrics, a, "frame", "none", metric) for a in arms}
    keys = sorted(set.intersection(*(set(v) for v in per_arm.values())))
    if len(keys) < 2:
        return {"available": False, "reason": "Fewer than 2 runs have a score for every arm."}
    higher = metric not in LOWER_IS_BETTER
    matrix = np.array([[per_arm[a][k] for a in arms] for k in keys])
    try:
        fr = stats.friedman(matrix, higher_is_better=higher)
        ne = stats.nemenyi(fr["mean_ranks"], n_blocks=len(keys), alpha=alpha)
        hv = (
            stats.holm_vs_control(matrix, control_index=arms.index(baseline), higher_is_better=higher)
            if baseline in arms
            else None
        )
    except ValueError as exc:
        return {"available": False, "reason": f"Ranking not computed: {_first_line(exc)}"}
    mean_ranks = [float(x) for x in fr["mean_ranks"]]
    versus = {c["index"]: c for c in (hv["comparisons"] if hv else [])}
    ranks = []
    for i, arm in enumerate(arms):
        row = {"arm": arm, "rank": mean_ranks[i], "p_nemenyi": None, "p_holm": None}
        if i in versus:
            row["p_holm"] = float(versus[i]["p_holm"])
            row["p_nemenyi"] = float(ne["pairwise_p"][i][arms.index(baseline)])
        ranks.append(row)
    return {
        "available": True,
        "metric": metric,
        "n_blocks": len(keys),
        "n_arms": len(arms),
        "statistic": fr["statistic"],
        "p": fr["p"],
        "id_statistic": fr["iman_davenport_F"],
        "id_p": fr["iman_davenport_p"],
        "cd": ne["cd"],
        "ranks": ranks,
        "mean_ranks": dict(zip(arms, mean_ranks)),
    }


# --------------------------------------------------------------------------- strata


# Shown in the HTML table (summary.json holds every metric): the ones that stay meaningful in a
# stratum holding one class only (e.g. frames without B-lines: specificity; with: recall).
PREDICTION_COLUMNS = ("run_id", "arm", "repeat", "fold", "sample_id", "group_id", "video_id", "label", "prob")
STRATUM_METRICS = ("accuracy", "recall", "specificity", "roc_auc", "brier")


def stratum_labels(values: pd.Series, max_levels: int = 8) -> pd.Series:
    """Stratum of each row: the value itself for a few levels, else quartile bins of a number."""
    v = values
    numeric = pd.to_numeric(v, errors="coerce")
    if v.nunique(dropna=True) <= max_levels or numeric.isna().mean() > 0.5:
        return v.astype("string").fillna("missing")
    bins = pd.qcut(numeric, q=4, duplicates="drop")
    return bins.astype("string").fillna("missing")


def stratify(
    inputs: Inputs, columns: Sequence[str], arms: Sequence[str], primary: str, colors: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Per metadata column: metrics per stratum computed per run, summarised over runs."""
    pred = inputs.predictions
    out: list[dict[str, Any]] = []
    for column in columns:
        if column not in pred.columns:
            available = sorted(set(pred.columns) - set(PREDICTION_COLUMNS))
            out.append(
                {
                    "column": column,
                    "note": f"column {column!r} is not in the stored predictions' metadata "
                    f"(available: {', '.join(available) or 'none'}).",
                    "rows": [],
                    "metrics": [],
                    "figure": None,
                    "metric": primary,
                }
            )
            continue
        labels = stratum_labels(pred[column])
        strata = sorted(labels.unique(), key=_natural_key)
        per: dict[str, dict[str, dict[str, list[float]]]] = {}
        sizes: dict[str, list[int]] = {}
        positives: dict[str, list[float]] = {}
        for (arm, _run), run_pred in pred.assign(_stratum=labels).groupby(["arm", "run_id"], sort=True):
            for stratum, part in run_pred.groupby("_stratum", sort=False):
                scores = binary_metrics(part["label"].to_numpy().astype(int), part["prob"].to_numpy(dtype=float))
                for metric, value in scores.items():
                    per.setdefault(arm, {}).setdefault(stratum, {}).setdefault(metric, []).append(value)
                if arm == arms[0]:
                    sizes.setdefault(stratum, []).append(len(part))
                    positives.setdefault(stratum, []).append(float(part["label"].mean()))
        all_metrics = sorted(
            {m for d in per.values() for st in d.values() for m in st}, key=lambda m: (m not in STRATUM_METRICS, m)
        )
        rows = []
        for stratum in strata:
            for arm in arms:
                cells = {}
                for metric in all_metrics:
                    vals = np.array(per.get(arm, {}).get(stratum, {}).get(metric, []), dtype=float)
                    vals = vals[np.isfinite(vals)]
                    if vals.size:
                        s = stats.summarize(vals, n_boot=100)  # only the t-interval is shown
                        cells[metric] = {"mean": s["mean"], "ci95": s["ci95_t"], "n_runs": s["n"]}
                    else:
                        cells[metric] = {"mean": None, "ci95": None, "n_runs": 0}
                rows.append(
                    {
                        "stratum": stratum,
                        "arm": arm,
                        "n": float(np.mean(sizes.get(stratum, [np.nan]))),
                        "positive_rate": float(np.mean(positives.get(stratum, [np.nan]))),
                        "cells": [cells[m] for m in STRATUM_METRICS if m in cells],
                        "metrics": cells,
                    }
                )
        # The figure shows the primary metric when it is defined in several strata; else accuracy,
        # which is the detection rate (recall) in a B-lines-only stratum and the specificity in a clear one.
        defined = {r["stratum"] for r in rows if r["metrics"].get(primary, {}).get("mean") is not None}
        fig_metric = primary if len(defined) >= 2 else "accuracy"
        table: dict[str, dict[str, tuple[float, float, float]]] = {}
        for r in rows:
            cell = r["metrics"].get(fig_metric, {})
            if cell.get("mean") is None:
                continue
            ci = cell["ci95"] if cell["ci95"] and all(np.isfinite(cell["ci95"])) else [cell["mean"]] * 2
            table.setdefault(r["arm"], {})[r["stratum"]] = (cell["mean"], ci[0], ci[1])
        figure = (
            figures.strata_lines(table, strata, column, fig_metric, colors, bounded=fig_metric not in ("log_loss",))
            if table
            else None
        )
        # The compact view: one row per stratum, one column per arm, the figure's metric.
        pivot = []
        for stratum in strata:
            mine = {r["arm"]: r for r in rows if r["stratum"] == stratum}
            first = next(iter(mine.values()))
            pivot.append(
                {
                    "stratum": stratum,
                    "n": first["n"],
                    "positive_rate": first["positive_rate"],
                    "cells": [mine[a]["metrics"].get(fig_metric, {"mean": None, "ci95": None}) for a in arms],
                }
            )
        out.append(
            {
                "column": column,
                "metric": fig_metric,
                "metrics": [m for m in STRATUM_METRICS if m in all_metrics],
                "rows": rows,
                "pivot": pivot,
                "arms": list(arms),
                "figure": figure,
                "note": None,
            }
        )
    return out


def _natural_key(text: str) -> tuple:
    try:
        return (0, float(str(text).strip("([]) ").split(",")[0]), str(text))
    except ValueError:
        return (1, 0.0, str(text))


# --------------------------------------------------------------------------- timing


def timing(inputs: Inputs, arms: Sequence[str], baseline: str) -> dict[str, dict[str, float]]:
    """Mean cost per arm: preprocessing (store), training and inference (run timings), memory."""
    out: dict[str, dict[str, float]] = {key: {} for key, _, _ in TIMING_COLUMNS}
    pre = inputs.preprocessing
    for arm in arms:
        runs = inputs.done[inputs.done["arm"] == arm]
        if len(pre) and arm in set(pre["arm"]):
            out["preprocessing_seconds"][arm] = float(pre.loc[pre["arm"] == arm, "seconds"].sum())
        elif not _arm_preprocess(inputs, arm):
            out["preprocessing_seconds"][arm] = 0.0  # nothing to filter
        else:
            out["preprocessing_seconds"][arm] = _nan()
        for key in ("train_seconds", "inference_ms_per_image", "peak_rss_mb"):
            vals = [t.get(key) for t in runs["timings"] if isinstance(t, Mapping)]
            vals = [float(v) for v in vals if v is not None and np.isfinite(float(v))]
            out[key][arm] = float(np.mean(vals)) if vals else _nan()
    return out


def _arm_preprocess(inputs: Inputs, arm: str) -> list[dict[str, Any]]:
    for a in inputs.suite_dict.get("arms", []):
        if a.get("name") == arm:
            return list(a.get("preprocess") or [])
    return []


# --------------------------------------------------------------------------- learned parameters


def param_kind(name: str) -> str:
    """``"conv_stem.kappa"`` -> ``"kappa"``: parameters of one kind are pooled over layers in figures."""
    return name.rsplit(".", 1)[-1]


def learned_parameters(
    inputs: Inputs, by: Any = param_kind
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Learned diffusion parameters at the end of training and per epoch, grouped by ``by(name)``.

    Returns ``final[arm][group]``: every value of the group at the end of training (all layers,
    all runs) and ``traj[arm][group]``: (epochs, runs) array of the group's mean per epoch.
    ``by=lambda n: n`` keeps each layer's parameter apart (the summary does).
    """
    final: dict[str, dict[str, list[np.ndarray]]] = {}
    for row in inputs.done.itertuples(index=False):
        params = row.learned_params if isinstance(row.learned_params, Mapping) else {}
        for name, values in params.items():
            arr = _flat(values)
            if arr.size:
                final.setdefault(row.arm, {}).setdefault(by(name), []).append(arr)
    final_arr = {a: {n: np.concatenate(v) for n, v in d.items()} for a, d in final.items()}
    traj_runs: dict[str, dict[str, list[list[float]]]] = {}
    ep = inputs.epochs
    if len(ep) and "learned_params" in ep.columns:
        for (arm, _run), run_ep in ep.sort_values("epoch").groupby(["arm", "run_id"], sort=True):
            series: dict[str, list[float]] = {}
            for params in run_ep["learned_params"]:
                if not isinstance(params, Mapping):
                    continue
                per_epoch: dict[str, list[np.ndarray]] = {}
                for name, values in params.items():
                    per_epoch.setdefault(by(name), []).append(_flat(values))
                for group, arrays in per_epoch.items():
                    arr = np.concatenate(arrays)
                    series.setdefault(group, []).append(float(arr.mean()) if arr.size else _nan())
            for group, values in series.items():
                traj_runs.setdefault(arm, {}).setdefault(group, []).append(values)
    traj = {a: {n: _pad(runs) for n, runs in d.items()} for a, d in traj_runs.items()}
    return final_arr, traj


def learned_summary(inputs: Inputs) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm and parameter (each layer apart): mean, sd, min, max and count at the end of training."""
    final, _ = learned_parameters(inputs, by=lambda n: n)
    return {
        arm: {
            name: {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "min": float(v.min()),
                "max": float(v.max()),
                "n": int(v.size),
            }
            for name, v in params.items()
        }
        for arm, params in final.items()
    }


def _flat(values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return np.empty(0)
    return arr[np.isfinite(arr)]


def _pad(runs: list[list[float]]) -> np.ndarray:
    """Runs of different lengths (early stopping) as an (epochs, runs) array padded with NaN."""
    n = max(len(r) for r in runs)
    out = np.full((n, len(runs)), np.nan)
    for j, r in enumerate(runs):
        out[: len(r), j] = r
    return out


# --------------------------------------------------------------------------- the report


def _verdicts(comparisons: list[dict[str, Any]], primary: str, alpha: float) -> list[dict[str, Any]]:
    out = []
    for c in comparisons:
        if c["metric"] != primary:
            continue
        text = stats.verdict(c, alpha=alpha)
        head, _, detail = text.partition(" (")
        kind = (
            "better"
            if text.startswith("better")
            else "worse"
            if text.startswith("worse")
            else "equivalent"
            if text.startswith("practically")
            else "undecided"
            if text.startswith("detectably")
            else "no-difference"
        )
        b = c["tests"]["bayes_correlated_t"]
        out.append(
            {
                "arm": c["arm"],
                "text": text,
                "headline": head,
                "detail": ("(" + detail) if detail else "",
                "kind": kind,
                "mean_arm": c["mean_arm"],
                "mean_baseline": c["mean_baseline"],
                "mean_difference": c["mean_difference"],
                "ci95": c["ci95"],
                "p_worse": b["p_worse"],
                "p_rope": b["p_rope"],
                "p_better": b["p_better"],
                "p_corrected": c["tests"]["corrected_t"]["p"],
                "p_holm": c["tests"]["corrected_t"]["p_holm"],
            }
        )
    return out


def _summary_comparison(c: dict[str, Any], pred_tests: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One comparison in the summary.json form (issue 6 §3) plus the extra numbers."""
    t = c["tests"]
    pt = pred_tests.get(c["arm"], {})
    delong = pt.get("delong", {})
    mcn = pt.get("mcnemar", {})
    return {
        "arm": c["arm"],
        "versus": c["versus"],
        "metric": c["metric"],
        "level": c["level"],
        "aggregation": c["aggregation"],
        "n_runs": c["n_runs"],
        "mean_arm": c["mean_arm"],
        "mean_baseline": c["mean_baseline"],
        "mean_difference": c["mean_difference"],
        "ci95": c["ci95"],
        "ci95_bootstrap": c["ci95_bootstrap"],
        "cohens_dz": c["cohens_dz"],
        "test_train_ratio": c["ratio"],
        "tests": {
            "corrected_t": {k: t["corrected_t"].get(k) for k in ("statistic", "p", "p_holm", "df")},
            "wilcoxon": {k: t["wilcoxon"].get(k) for k in ("statistic", "p", "p_holm")},
            "bayes_correlated_t": {
                k: t["bayes_correlated_t"].get(k) for k in ("p_worse", "p_rope", "p_better", "rope", "rho")
            },
            # DeLong / McNemar test the arm's predictions, not this metric: the same values on every metric.
            "delong": {k: delong.get(k) for k in ("statistic", "p", "p_holm", "n_folds")},
            "mcnemar": {k: mcn.get(k) for k in ("statistic", "p", "p_holm", "b", "c", "exact")},
        },
    }


def build_report(out_dir: Path | str, output: Path | str | None = None) -> Path:
    """Write ``report.html``, ``summary.json`` and ``metrics.csv`` for the results in ``out_dir``.

    ``output`` is the HTML path (default ``out_dir/report.html``); the JSON and CSV go beside it.
    Returns the HTML path.  Raises :class:`harness.store.StoreError` if there is no store.
    """
    inputs = read_store(Path(out_dir))
    html_path = Path(output) if output is not None else inputs.out_dir / "report.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    # statsmodels' Holm calls gc.collect() on every use (~0.4 s each with torch loaded, ~90 calls
    # per report); freezing the long-lived objects makes each collection cheap.
    gc.freeze()
    try:
        summary, context = assemble(inputs)
    finally:
        gc.unfreeze()
    (html_path.parent / "summary.json").write_text(
        json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    write_metrics_csv(inputs.metrics, html_path.parent / "metrics.csv")
    html_path.write_text(html.render(context), encoding="utf-8")
    return html_path


METRICS_CSV_COLUMNS = ["run_id", "arm", "repeat", "fold", "level", "aggregation", "metric", "value"]


def write_metrics_csv(metrics: pd.DataFrame, path: Path) -> None:
    """Every per-run metric, one row each (long format), sorted for stable diffs."""
    df = metrics.reindex(columns=METRICS_CSV_COLUMNS)
    df = df.sort_values(["arm", "repeat", "fold", "level", "aggregation", "metric"], kind="stable")
    df.to_csv(path, index=False, float_format="%.10g")


def assemble(inputs: Inputs) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compute every number and figure; returns (summary.json content, template context)."""
    s = inputs.suite_dict
    rep = s.get("report", {}) or {}
    arms = inputs.arms
    baseline = rep.get("baseline") or (arms[0] if arms else "")
    primary = (s.get("evaluation", {}) or {}).get("primary_metric", "roc_auc")
    rope, alpha = float(rep.get("rope", 0.01)), float(rep.get("alpha", 0.05))
    strata_cols = list(inputs.suite.strata) if inputs.suite is not None else list(rep.get("strata") or [])
    colors = figures.arm_colors(arms)
    metric_names = _metric_names(inputs.metrics)

    arm_summaries = summarise_arms(inputs, metric_names)
    comparisons = compare_arms(inputs, baseline, metric_names, rope)
    other_levels = [
        c
        for level, agg in _levels(inputs.metrics)
        if (level, agg) != ("frame", "none")
        for c in compare_arms(inputs, baseline, metric_names, rope, level, agg)
    ]
    pred_tests = prediction_tests(inputs, baseline)
    pred_by_arm = {p["arm"]: p for p in pred_tests}
    ranking = rank_arms(inputs, baseline, primary, alpha)
    n_train, n_test = _split_sizes(inputs)
    ratio = float(np.mean([n_test[k] / n_train[k] for k in n_train])) if n_train else _nan()
    for arm, n in inputs.unpaired.items():
        inputs.notes.append(
            f"{arm}: up to {n} run(s) had no finite score in this arm or in {baseline} (a failed run, or a metric "
            "undefined on a fold); its comparisons use the runs both arms have."
        )
    verdicts = _verdicts(comparisons, primary, alpha)
    for v in verdicts:
        arm_summaries[v["arm"]]["verdict"] = v["text"]
    ran = [a for a in arms if a in set(inputs.done["arm"])]
    cost = timing(inputs, ran, baseline)
    strata = (
        stratify(inputs, strata_cols, [a for a in arms if a in set(inputs.predictions.get("arm", []))], primary, colors)
        if len(inputs.predictions) and strata_cols
        else []
    )
    figs = build_figures(inputs, ran, baseline, primary, colors, ranking, cost)

    summary = {
        "suite": {
            "name": s.get("name"),
            "description": s.get("description", ""),
            "hash": inputs.meta.get("suite_hash"),
            "config": s,
        },
        "baseline": baseline,
        "primary_metric": primary,
        "alpha": alpha,
        "rope": rope,
        "arms": {
            a: {**arm_summaries.get(a, {}), "timing": {k: cost[k].get(a) for k in cost} if a in ran else None}
            for a in arms
        },
        "comparisons": [_summary_comparison(c, pred_by_arm) for c in comparisons],
        "comparisons_other_levels": [_summary_comparison(c, {}) for c in other_levels],
        "prediction_tests": pred_tests,
        "friedman": {k: v for k, v in ranking.items() if k != "ranks"},
        "learned_parameters": learned_summary(inputs),
        "strata": [
            {
                "column": st["column"],
                "note": st["note"],
                "rows": [
                    {
                        "stratum": r["stratum"],
                        "arm": r["arm"],
                        "n": r["n"],
                        "positive_rate": r["positive_rate"],
                        "metrics": r["metrics"],
                    }
                    for r in st["rows"]
                ],
            }
            for st in strata
        ],
        "leakage": leakage(inputs),
        "failed_runs": failed_runs(inputs),
        "skipped": inputs.skipped,
        "notes": inputs.notes,
    }

    n_done = inputs.done.groupby("arm").size() if len(inputs.done) else pd.Series(dtype=int)
    # Metric tables: one row per metric, one column per arm (readable with 10 metrics).
    metric_tables = []
    for level, agg in _levels(inputs.metrics):
        key = f"{level}/{agg}"
        table_arms = [a for a in arms if arm_summaries[a]["levels"].get(key)]
        names = [m for m in metric_names if any(m in arm_summaries[a]["levels"].get(key, {}) for a in table_arms)]
        names.sort(key=lambda m: m != primary)
        rows = [
            {
                "metric": m,
                "cells": [
                    arm_summaries[a]["levels"][key].get(m, {"mean": None, "std": None, "ci95": None})
                    for a in table_arms
                ],
            }
            for m in names
        ]
        metric_tables.append(
            {
                "title": LEVEL_TITLES.get((level, agg), f"{level} ({agg})"),
                "arms": table_arms,
                "runs": [int(n_done.get(a, 0)) for a in table_arms],
                "rows": rows,
            }
        )
    by_primary = sorted(comparisons, key=lambda c: c["metric"] != primary)
    ev = s.get("evaluation", {})
    context = {
        "suite": {"name": s.get("name", ""), "description": s.get("description", "")},
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "question": QUESTION,
        "baseline": baseline,
        "primary_metric": primary,
        "alpha": alpha,
        "rope": rope,
        "n_runs_text": f"{ev.get('repeats', '?')} × {ev.get('folds', '?')}",
        "verdicts": verdicts,
        "methods": methods(inputs, ratio, n_train, n_test),
        "metric_tables": metric_tables,
        "comparison_rows": by_primary,
        "comparison_rows_other": [c for c in other_levels if c["metric"] == primary],
        "comparison_rows_other_all": other_levels,
        "lower_is_better": list(LOWER_IS_BETTER),
        "prediction_tests": [
            {"arm": p["arm"], "delong": p["delong"], "mcnemar": {"form": "", **p["mcnemar"]}} for p in pred_tests
        ],
        "prediction_notes": [
            f"{p['arm']}: DeLong not computed ({p['delong']['note']})." for p in pred_tests if p["delong"].get("note")
        ],
        "friedman": ranking,
        "strata": strata,
        "figures": figs,
        "timing": {
            "columns": [{"key": k, "label": label} for k, label, _ in TIMING_COLUMNS],
            "rows": [
                {"arm": a, "cells": [_timing_cell(cost[k], a, baseline, d) for k, _, d in TIMING_COLUMNS]} for a in ran
            ],
            "device": ", ".join(sorted({str(d) for d in inputs.done.get("device", []) if d}))
            if len(inputs.done)
            else "",
        },
        "leakage": summary["leakage"],
        "failed_runs": summary["failed_runs"],
        "skipped": inputs.skipped,
        "notes": inputs.notes,
        "environment": environment(inputs.meta),
        "command": reproduce_command(inputs),
        "store_path": str(inputs.store_path),
    }
    return summary, context


def _timing_cell(values: Mapping[str, float], arm: str, baseline: str, digits: int) -> dict[str, Any]:
    v = values.get(arm, _nan())
    b = values.get(baseline, _nan())
    ratio = v / b if np.isfinite(v) and np.isfinite(b) and b > 0 else None
    return {"value": v, "ratio": ratio, "digits": digits}


def build_figures(
    inputs: Inputs,
    arms: list[str],
    baseline: str,
    primary: str,
    colors: Mapping[str, str],
    ranking: Mapping[str, Any],
    cost: Mapping[str, Mapping[str, float]],
) -> list[dict[str, Any]]:
    """Every figure as ``{id, title, caption, uri, note}``; a figure that cannot be drawn gets a note."""
    figs: list[dict[str, Any]] = []

    def add(fid: str, title: str, caption: str, make: Any) -> None:
        try:
            uri, note = make()
        except Exception as exc:  # one broken figure must not take the report down
            uri, note = None, f"Figure not drawn: {type(exc).__name__}: {_first_line(exc)}"
        figs.append({"id": fid, "title": title, "caption": caption, "uri": uri, "note": note})

    frames = samples.SampleFrames.prepare(inputs, arms)
    add(
        "frames",
        "The same frames after each arm's preprocessing",
        "Rows: arms; columns: frames of each class from the test fold of the saved models, each shown with its "
        "own contrast. Arms that diffuse inside the network show their raw input here.",
        lambda: (figures.sample_frames(frames.processed, frames.titles) if frames.ok else None, frames.note),
    )

    pred = inputs.predictions

    def roc():
        folds = {}
        for arm in arms:
            p = pred[pred["arm"] == arm]
            if len(p):
                folds[arm] = [(g["label"].to_numpy(), g["prob"].to_numpy()) for _, g in p.groupby("run_id", sort=True)]
        return (figures.roc_curves(folds, colors), None) if folds else (None, "No stored predictions.")

    add(
        "roc",
        "ROC curves per arm",
        "Thin lines: the test fold of each run; thick: their vertical average "
        "(band: ± 1 s.d.). Curves are never pooled across folds.",
        roc,
    )

    def paired():
        scores = {a: scores_by_run(inputs.metrics, a, "frame", "none", primary) for a in arms}
        scores = {a: v for a, v in scores.items() if v}
        if baseline not in scores or len(scores) < 2:
            return None, "Needs the baseline and another arm with scores."
        return figures.paired_scores(scores, baseline, primary, colors), None

    add(
        "paired",
        f"Per-run {primary}, paired with {baseline}",
        "Each line joins the baseline and the arm on the same (repeat, fold); coloured when the arm scored higher. "
        "Black: means.",
        paired,
    )

    def cd():
        if not ranking.get("available"):
            return None, ranking.get("reason")
        alpha = float((inputs.suite_dict.get("report") or {}).get("alpha", 0.05))
        return figures.critical_difference(
            ranking["mean_ranks"],
            float(ranking["cd"]),
            f"{primary}: mean ranks, Nemenyi critical difference at α = {alpha:g}",
        ), None

    add(
        "cd",
        "Critical-difference diagram",
        "Mean rank of each arm over runs (1 = best). Arms joined by a thick "
        "bar are not significantly different (Nemenyi); the bar at the top is the critical difference.",
        cd,
    )

    labels = {k: label for k, label, _ in TIMING_COLUMNS if k != "peak_rss_mb"}
    add(
        "timing",
        "Timing cost",
        f"Mean over runs; labels give the ratio to {baseline}.",
        lambda: (figures.timing_bars({k: dict(cost[k]) for k in labels}, baseline, colors, labels), None),
    )

    final, traj = learned_parameters(inputs)
    if final or traj:
        add(
            "learned",
            "Learned diffusion parameters",
            "Left: the values each learnable arm ended with, pooled over its layers and runs. Right: their mean per "
            "epoch (thin: each run). summary.json lists every layer's parameters.",
            lambda: (figures.learned_parameters(final, traj, colors), None),
        )

    gradcam_on = bool((inputs.suite_dict.get("report") or {}).get("gradcam", True))
    if gradcam_on:

        def cams():
            if not frames.ok:
                return None, frames.note
            result = samples.gradcams(inputs, frames)
            return (figures.gradcam_grid(frames.raw, result.cams, frames.titles) if result.cams else None), result.note

        add(
            "gradcam",
            "Grad-CAM: where each arm's network looks",
            "Grad-CAM (Selvaraju et al. 2017) of the B-lines class on the same frames, recomputed from each arm's "
            "saved model (one fold), over the arm's input frame; it explains the deepest feature map of at least "
            "7 × 7 pixels (EfficientNet's conv_head at 224 px, an earlier stage for small frames). Red: regions that "
            "raise the B-line score most; each map is scaled to its own maximum.",
            cams,
        )
    return figs
