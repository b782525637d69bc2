"""The machine-readable outputs: ``summary.json`` (every number, NaN -> null) and ``metrics.csv``.

The keys of ``summary.json`` are a published format (docs/usage.md); change them only on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from harness.jsonable import jsonable
from harness.report.analysis import Analysis, ArmSummary
from harness.report.comparisons import Comparison, PredictionTest
from harness.report.equivalence import Contrast
from harness.report.ensembles import ensemble_spread
from harness.report.destinations import METRICS_CSV_COLUMNS, SUMMARY_FORMAT
from harness.report.external import summary as external_summary
from harness.report.learned import learned_record
from harness.report.strata import StrataTable
from harness.report.tuning import tuning



def metrics_csv(metrics: pd.DataFrame) -> str:
    """``metrics.csv``: every per-run metric, one row each (long format), sorted for stable diffs."""
    df = metrics.reindex(columns=METRICS_CSV_COLUMNS)
    df = df.sort_values(["arm", "repeat", "fold", "level", "aggregation", "metric"], kind="stable")
    return str(df.to_csv(index=False, float_format="%.10g", lineterminator="\n"))


def summary_json(analysis: Analysis) -> str:
    """``summary.json``: strict JSON (NaN/inf as null)."""
    return json.dumps(jsonable(summary(analysis)), indent=2, allow_nan=False) + "\n"


def summary(analysis: Analysis) -> dict[str, Any]:
    """The content of ``summary.json``."""
    inputs, st = analysis.inputs, analysis.settings
    s = inputs.suite_dict
    pred_by_arm = {p.arm: p for p in analysis.prediction_tests}
    learned = learned_record(analysis.changes)
    return {
        "format": SUMMARY_FORMAT,  # how an earlier summary of ours is recognised before it is replaced
        "suite": {
            "name": s.get("name"),
            "description": s.get("description", ""),
            "hash": inputs.meta.get("suite_hash"),
            "config": s,
        },
        "code": analysis.code.as_dict(),
        "baseline": st.baseline,
        "primary_metric": st.primary,
        "primary_level": st.primary_level,
        "levels": {lv: c.as_dict() for lv, c in analysis.levels.items()},
        "chance_check": analysis.chance.as_dict() if analysis.chance is not None else None,
        "noise_floor": _noise_floor(analysis),
        "fit_problems": analysis.fit_problems,
        "alpha": st.alpha,
        "rope": st.rope,
        "arms": {a: _arm(analysis, a, learned.get(a)) for a in analysis.arms},
        "comparisons": [_comparison(c, pred_by_arm) for c in analysis.comparisons],
        "comparisons_other_levels": [_comparison(c, {}) for c in analysis.other_levels],
        "prediction_tests": [p.as_dict() for p in analysis.prediction_tests],
        "friedman": analysis.ranking.as_dict(with_ranks=False),
        "learned_parameters": analysis.learned,
        "strata": [_strata(t) for t in analysis.strata],
        "leakage": analysis.leakage,
        "failed_runs": analysis.failed_runs,
        "skipped": inputs.skipped,
        "notes": analysis.notes,
        "tuning_effect": [e.as_dict() for e in analysis.tuning_effect],
        **({"external": external} if (external := external_summary(analysis)) else {}),
        # issue 26 §3: written only where the suite asks for them (a summary without them keeps its bytes)
        **({"equivalence_margin": st.margin} if st.margin is not None else {}),
        **({"contrasts": [_contrast(c) for c in analysis.contrasts]} if st.contrasts else {}),
        **({"sensitivity": [s.as_dict() for s in analysis.sensitivity]} if analysis.sensitivity else {}),
        # issue 26 §1: per arm, did its filter or its learnable layers act (absent where no arm has either)
        **({"manipulation": analysis.manipulation.as_dict()} if analysis.manipulation.rows else {}),
    }


def _arm(analysis: Analysis, arm: str, learned: dict[str, Any] | None = None) -> dict[str, Any]:
    summary_ = analysis.arm_summaries.get(arm, ArmSummary({}))
    levels = {key: {m: v.as_dict() for m, v in block.items()} for key, block in summary_.levels.items()}
    out: dict[str, Any] = {"metrics": levels.get("frame/none", {}), "levels": levels}
    if summary_.verdict is not None:
        out["verdict"] = summary_.verdict
    v = next((v for v in analysis.verdicts if v.arm == arm), None)
    if v is not None:
        out["verdict_level"] = v.level
        out["verdicts"] = {v.level: v.text, **({v.co_primary["level"]: v.co_primary["text"]} if v.co_primary else {})}
        out["verdict_caveats"] = v.caveats
        if analysis.settings.margin is not None:  # better | worse | equivalent | undecided | not-compared
            out["decision"] = v.kind
        if v.noise_floor:
            out["exceeds_noise_floor"] = v.noise_floor["exceeds"]
    counts = analysis.run_counts.get(arm)
    if counts is not None:
        out["runs"] = counts.as_dict()
        out["fit"] = counts.fit
    cost = analysis.cost
    out["timing"] = {k: cost[k].get(arm) for k in cost} if arm in analysis.ran else None
    if learned:
        out["learned"] = learned  # per diffusion parameter: initial, final mean/sd per channel, every run
    members = ensemble_spread(analysis.inputs, arm)
    if members is not None:  # training.seeds > 1: networks per run and their scores' spread inside a run
        out["ensemble"] = members
    tuned = tuning(analysis.inputs).get(arm)
    if tuned is not None:  # nested search: budget, chosen params per run, inner best, seconds
        out["search"] = tuned.summary()
    return out


def _comparison(c: Comparison, pred_tests: Mapping[str, PredictionTest]) -> dict[str, Any]:
    """One comparison with its tests; the prediction-level tests are the arm's, repeated on every metric."""
    t = c.tests
    pt = pred_tests.get(c.arm)
    delong = pt.delong if pt else {}
    mcn = pt.mcnemar if pt else {}
    return {
        "arm": c.arm,
        "versus": c.versus,
        "metric": c.metric,
        "level": c.level,
        "aggregation": c.aggregation,
        "n_runs": c.n_runs,
        "mean_arm": c.mean_arm,
        "mean_baseline": c.mean_baseline,
        "mean_difference": c.mean_difference,
        "ci95": c.ci95,
        "ci95_bootstrap": c.ci95_bootstrap,
        "cohens_dz": c.cohens_dz,
        "test_train_ratio": c.ratio,
        "mde": c.mde or None,
        "failed_runs": c.failed_runs or None,
        "tests": {
            "corrected_t": {k: t["corrected_t"].get(k) for k in ("statistic", "p", "p_holm", "df")},
            "wilcoxon": {k: t["wilcoxon"].get(k) for k in ("statistic", "p", "p_holm")},
            "bayes_correlated_t": {
                k: t["bayes_correlated_t"].get(k) for k in ("p_worse", "p_rope", "p_better", "rope", "rho")
            },
            # DeLong / McNemar test the arm's predictions, not this metric: the same values on every metric.
            "delong": {k: delong.get(k) for k in ("statistic", "p", "p_holm", "n_folds")},
            "mcnemar": {k: mcn.get(k) for k in ("statistic", "p", "p_holm", "b", "c", "exact", "clustered", "form")},
        },
        **({"equivalence": c.equivalence} if c.equivalence else {}),
    }


def _contrast(x: Contrast) -> dict[str, Any]:
    """One named pair (difference first − second), its tests and its verdict."""
    out: dict[str, Any] = {"first": x.first, "second": x.second, "level": x.level, "aggregation": x.aggregation,
                           "metric": x.metric, "kind": x.kind, "verdict": x.text}
    if x.comparison is not None:
        body = _comparison(x.comparison, {})
        for key in ("arm", "versus", "metric", "level", "aggregation"):
            body.pop(key)
        del body["tests"]["delong"], body["tests"]["mcnemar"]  # the prediction-level tests are against the baseline
        out.update(body)
        if x.comparison.decision is not None:
            out["decision"] = x.comparison.decision
    return out


def _noise_floor(analysis: Analysis) -> dict[str, Any] | None:
    """The seed-noise reference arm and its difference from the baseline at each compared level."""
    arm = analysis.noise_floor
    if not arm:
        return None
    primary = analysis.settings.primary
    diffs = {
        f"{c.level}/{c.aggregation}": {"mean_difference": c.mean_difference, "ci95": c.ci95, "mde": c.mde.get("value")}
        for c in [*analysis.comparisons, *analysis.other_levels]
        if c.arm == arm and c.metric == primary
    }
    out = {"arm": arm, "metric": primary, "differences": diffs}
    tested = [c for c in [*analysis.comparisons, *analysis.other_levels]
              if c.arm == arm and c.metric == primary and c.equivalence]
    if tested:  # the defined test of the noise floor (a margin stated): the seeds alone within ±margin?
        out["test"] = {
            f"{c.level}/{c.aggregation}": {"margin": c.equivalence["margin"],
                                           "within_margin": c.equivalence["decision"] == "equivalent",
                                           "p_tost_holm": c.equivalence["p_tost_holm"], "ci90": c.equivalence["ci90"]}
            for c in tested}
    return out


def _strata(table: StrataTable) -> dict[str, Any]:
    rows = [
        {k: r[k] for k in ("stratum", "arm", "n", "positive_rate", "metrics")} for r in table.rows
    ]
    return {"column": table.column, "note": table.note, "rows": rows}
