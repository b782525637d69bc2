"""The template context of the HTML page, written from the :class:`~harness.report.analysis.Analysis`.

The template (``templates/report.html``) reads plain dicts and lists; every number here comes
from the analysis, so the page says what ``summary.json`` says.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pandas as pd

from harness.metrics import LOWER_IS_BETTER
from harness.report.analysis import Analysis, Verdict
from harness.report.comparisons import Comparison
from harness.report.equivalence import Contrast
from harness.report.external import context as external_context
from harness.report.figure_specs import FigureData, draw_all, strata_figure
from harness.report.inputs import LEVEL_TITLES
from harness.report.manipulation import context as manipulation_context
from harness.report.methods import environment, methods, reproduce_command
from harness.report.sensitivity import Sensitivity
from harness.report.strata import StrataTable
from harness.report.ensembles import ensemble_line
from harness.report.timing import TIMING_COLUMNS, devices, timing_cell
from harness.report.tuning import context as tuning_context

QUESTION = (
    "Does anisotropic diffusion, as preprocessing of the frames or as a layer of the network, change how "
    "well an EfficientNet-B0 detects B-lines in lung ultrasound?"
)


def template_context(analysis: Analysis) -> dict[str, Any]:
    """Everything ``report.html`` shows, figures drawn."""
    inputs, st = analysis.inputs, analysis.settings
    s = inputs.suite_dict
    ev = s.get("evaluation", {})
    data = FigureData.of(analysis)
    strata = [_strata(t, data.colors) for t in analysis.strata]
    sizes = inputs.split_sizes
    return {
        "suite": {"name": s.get("name", ""), "description": s.get("description", "")},
        "generated_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "question": QUESTION,
        "baseline": st.baseline,
        "primary_metric": st.primary,
        "alpha": st.alpha,
        "rope": st.rope,
        "n_runs_text": f"{ev.get('repeats', '?')} × {ev.get('folds', '?')}",
        "verdicts": [_verdict(v) for v in analysis.verdicts],
        "tuning_effect": [{**e.as_dict(), "untuned_verdict": _verdict(e.untuned), "tuned_verdict": _verdict(e.tuned)}
                          for e in analysis.tuning_effect],
        "primary_level": st.primary_level,
        "chance": analysis.chance.as_dict() if analysis.chance is not None else None,
        "code_check": "" if analysis.code.is_current else f"Code version {analysis.code.describe()}.",
        "verdict_intro": _verdict_intro(analysis),
        "levels": {lv: c.as_dict() for lv, c in analysis.levels.items()},
        "run_counts": [
            {"arm": a, **c.as_dict(), "fit": c.fit} for a, c in analysis.run_counts.items()
        ],
        "fit_problems": analysis.fit_problems,
        "noise_floor": analysis.noise_floor,
        "rope_justification": rope_justification(analysis),
        "methods": methods(inputs, sizes.ratio, sizes.n_train, sizes.n_test),
        "metric_tables": metric_tables(analysis),
        "comparison_rows": sorted(analysis.comparisons, key=lambda c: c.metric != st.primary),
        "comparison_rows_other": [c for c in analysis.other_levels if c.metric == st.primary],
        "comparison_rows_other_all": analysis.other_levels,
        "lower_is_better": list(LOWER_IS_BETTER),
        **_prediction_tests(analysis),
        "friedman": analysis.ranking.as_dict(),
        "strata": strata,
        **_figures(data),
        "timing": _timing(analysis),
        "tuning": tuning_context(analysis),
        "external": external_context(analysis),
        "leakage": analysis.leakage,
        "failed_runs": analysis.failed_runs,
        "skipped": inputs.skipped,
        "notes": analysis.notes,
        "environment": environment(inputs.meta, analysis.code),
        "command": reproduce_command(inputs),
        "store_path": str(inputs.store_path),
        # issue 26 §3: the equivalence margin, the contrasts and the label sensitivity (empty without them)
        "margin": st.margin,
        "contrasts": [_contrast(x) for x in analysis.contrasts],
        "sensitivity": [_sensitivity(s) for s in analysis.sensitivity],
        "manipulation": manipulation_context(analysis.manipulation),  # issue 26 §1 (None: nothing to check)
    }


def _contrast(x: Contrast) -> dict[str, Any]:
    c = x.comparison
    out: dict[str, Any] = {"first": x.first, "second": x.second, "level": x.level, "kind": x.kind, "text": x.text,
                           "headline": x.headline, "compared": c is not None}
    if c is not None:
        out.update(mean_first=c.mean_arm, mean_second=c.mean_baseline, mean_difference=c.mean_difference,
                   ci95=c.ci95, n_runs=c.n_runs, p_holm=c.tests["corrected_t"].get("p_holm"),
                   p_corrected=c.tests["corrected_t"].get("p"), equivalence=c.equivalence or None)
    return out


def _sensitivity(s: Sensitivity) -> dict[str, Any]:
    def side(v: Verdict) -> dict[str, Any]:
        c = v.comparison
        return {"kind": v.kind, "headline": v.headline, "compared": c is not None,
                "mean_difference": c.mean_difference if c is not None else None,
                "ci95": c.ci95 if c is not None else None,
                "p_holm": c.tests["corrected_t"].get("p_holm") if c is not None else None,
                "p_tost_holm": (c.equivalence or {}).get("p_tost_holm") if c is not None else None}

    return {"name": s.rule.name, "description": s.rule.description, "rule": s.rule.describe(), "level": s.level,
            "metric": s.metric, "n_samples": s.n_samples, "n_excluded": s.n_excluded,
            "n_excluded_positive": s.n_excluded_positive, "notes": s.notes,
            "rows": [{"arm": r.arm, "changed": r.changed, "full": side(r.full), "without": side(r.without)}
                     for r in s.rows]}


def _verdict(v: Verdict) -> dict[str, Any]:
    c: Comparison | None = v.comparison
    out = {
        "arm": v.arm,
        "text": v.text,
        "headline": v.headline,
        "detail": v.detail,
        "kind": v.kind,
        "level": v.level,
        "co_primary": v.co_primary,
        "caveats": v.caveats,
        "compared": c is not None,
        "equivalence": None,
    }
    if c is None:
        return out
    b = c.tests["bayes_correlated_t"]
    return {
        **out,
        "mde": c.mde.get("value"),
        "mean_arm": c.mean_arm,
        "mean_baseline": c.mean_baseline,
        "mean_difference": c.mean_difference,
        "ci95": c.ci95,
        "p_worse": b["p_worse"],
        "p_rope": b["p_rope"],
        "p_better": b["p_better"],
        "p_corrected": c.tests["corrected_t"]["p"],
        "p_holm": c.tests["corrected_t"]["p_holm"],
        "equivalence": c.equivalence or None,
    }


def _figures(data: FigureData) -> dict[str, Any]:
    """The forest plot goes to the top of the page; every other figure to the figures section."""
    drawn = draw_all(data)
    forest = next((f for f in drawn if f["id"] == "forest"), None)
    return {"forest": forest, "figures": [f for f in drawn if f["id"] != "forest"]}


def _verdict_intro(analysis: Analysis) -> str | None:
    """What to say instead of the verdicts when no arm could be compared, arm by arm."""
    st = analysis.settings
    counts = analysis.run_counts
    base = counts.get(st.baseline)
    others = [a for a in analysis.arms if a != st.baseline]
    if not others:
        return f"The suite has no arm besides the baseline {st.baseline}: there is nothing to compare."
    if base is not None and base.done == 0:
        err = f" (first error: {base.first_error})" if base.first_error else ""
        done = ", ".join(f"{a}: {counts[a].done} of {counts[a].planned} runs completed" for a in others if a in counts)
        return (
            f"The baseline {st.baseline} has no completed run ({base.failed} of {base.planned} failed{err}), "
            f"so no arm can be compared with it. Other arms: {done}."
        )
    if all(v.comparison is None for v in analysis.verdicts):
        return "No arm could be compared with the baseline; each arm below says why."
    return None


def rope_justification(analysis: Analysis) -> str:
    """The ROPE set against the minimal detectable differences of the primary comparisons."""
    st = analysis.settings
    mdes = [
        c.mde.get("value")
        for c in [*analysis.comparisons, *analysis.other_levels]
        if c.metric == st.primary and (c.level, c.aggregation) in st.headline_levels and c.mde
    ]
    mdes = [m for m in mdes if m is not None and m == m]
    if not mdes:
        return (
            f"The region of practical equivalence is ±{st.rope:g} in {st.primary}; no comparison was possible, so "
            "the smallest difference these runs can detect is not known."
        )
    lo, hi = min(mdes), max(mdes)
    span = f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f}–{hi:.3f}"
    text = (
        f"The region of practical equivalence is ±{st.rope:g} in {st.primary}. At the variance the runs achieved, "
        f"the smallest difference the corrected t-test detects with power 0.8 after Holm (α/m) is {span} "
        f"(per comparison in the tables). "
    )
    if st.rope < lo:
        text += (
            "The ROPE is narrower than that, so 'practically equivalent' can only be reached when the per-run "
            "differences hardly vary; read 'no difference larger than X detected' with X the detectable difference, "
            "not as equivalence."
        )
    else:
        text += "The ROPE is at least that wide, so these runs can support practical equivalence."
    return text


def metric_tables(analysis: Analysis) -> list[dict[str, Any]]:
    """One table per level: a row per metric (primary first), a column per arm that has the level."""
    inputs, primary = analysis.inputs, analysis.settings.primary
    done = inputs.done
    n_done = done.groupby("arm").size() if len(done) else pd.Series(dtype=int)
    tables = []
    for level, agg in inputs.levels:
        key = f"{level}/{agg}"
        by_arm = {a: analysis.arm_summaries[a].levels.get(key, {}) for a in analysis.arms}
        arms = [a for a in analysis.arms if by_arm[a]]
        names = [m for m in inputs.metric_names if any(m in by_arm[a] for a in arms)]
        names.sort(key=lambda m: m != primary)
        empty = {"mean": None, "std": None, "ci95": None, "ci95_bounded": None, "ci95_clipped": False}
        check = analysis.levels.get(level)
        rows = [
            {"metric": m, "cells": [by_arm[a][m].as_dict() if m in by_arm[a] else empty for a in arms]}
            for m in names
        ]
        tables.append(
            {
                "title": LEVEL_TITLES.get((level, agg), f"{level} ({agg})"),
                "estimable": check is None or check.estimable,
                "reason": None if check is None else check.reason,
                "arms": arms,
                "runs": [int(n_done.get(a, 0)) for a in arms],
                "rows": rows,
            }
        )
    return tables


def _prediction_tests(analysis: Analysis) -> dict[str, Any]:
    tests = analysis.prediction_tests
    return {
        "prediction_tests": [
            {"arm": p.arm, "delong": p.delong, "mcnemar": {"form": "", **p.mcnemar}} for p in tests
        ],
        "prediction_notes": [
            f"{p.arm}: DeLong not computed ({p.delong['note']})." for p in tests if p.delong.get("note")
        ],
    }


def _strata(table: StrataTable, colors: dict[str, str]) -> dict[str, Any]:
    return {
        "column": table.column,
        "note": table.note,
        "metric": table.metric,
        "metrics": table.metrics,
        "rows": table.rows,
        "pivot": table.pivot,
        "arms": table.arms,
        "figure": strata_figure(table, colors) if table.rows else None,
    }


def _timing(analysis: Analysis) -> dict[str, Any]:
    cost, baseline, done = analysis.cost, analysis.settings.baseline, analysis.inputs.done
    rows = [
        {"arm": a, "cells": [timing_cell(cost[k], a, baseline, d) for k, _, d in TIMING_COLUMNS]}
        for a in analysis.ran
    ]
    device = devices(done, analysis.inputs.meta.get("execution"))
    st = analysis.settings
    level = "video/mean" if st.primary_level == "video" else "frame/none"
    return {"columns": [{"key": k, "label": label} for k, label, _ in TIMING_COLUMNS], "rows": rows, "device": device,
            "ensembles": ensemble_line(analysis.inputs, list(analysis.ran), f"{level}/{st.primary}")}
