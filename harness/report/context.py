"""The template context of the HTML page, written from the :class:`~harness.report.analysis.Analysis`.

The template (``templates/report.html``) reads plain dicts and lists; every number here comes
from the analysis, so the page says what ``summary.json`` says.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pandas as pd

from harness.report.analysis import Analysis, Verdict
from harness.report.comparisons import LOWER_IS_BETTER, Comparison
from harness.report.figure_specs import FigureData, draw_all, strata_figure
from harness.report.inputs import LEVEL_TITLES
from harness.report.methods import environment, methods, reproduce_command
from harness.report.strata import StrataTable
from harness.report.timing import TIMING_COLUMNS, timing_cell
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
        "methods": methods(inputs, sizes.ratio, sizes.n_train, sizes.n_test),
        "metric_tables": metric_tables(analysis),
        "comparison_rows": sorted(analysis.comparisons, key=lambda c: c.metric != st.primary),
        "comparison_rows_other": [c for c in analysis.other_levels if c.metric == st.primary],
        "comparison_rows_other_all": analysis.other_levels,
        "lower_is_better": list(LOWER_IS_BETTER),
        **_prediction_tests(analysis),
        "friedman": analysis.ranking.as_dict(),
        "strata": strata,
        "figures": draw_all(data),
        "timing": _timing(analysis),
        "tuning": tuning_context(analysis),
        "leakage": analysis.leakage,
        "failed_runs": analysis.failed_runs,
        "skipped": inputs.skipped,
        "notes": analysis.notes,
        "environment": environment(inputs.meta),
        "command": reproduce_command(inputs),
        "store_path": str(inputs.store_path),
    }


def _verdict(v: Verdict) -> dict[str, Any]:
    c: Comparison = v.comparison
    b = c.tests["bayes_correlated_t"]
    return {
        "arm": v.arm,
        "text": v.text,
        "headline": v.headline,
        "detail": v.detail,
        "kind": v.kind,
        "mean_arm": c.mean_arm,
        "mean_baseline": c.mean_baseline,
        "mean_difference": c.mean_difference,
        "ci95": c.ci95,
        "p_worse": b["p_worse"],
        "p_rope": b["p_rope"],
        "p_better": b["p_better"],
        "p_corrected": c.tests["corrected_t"]["p"],
        "p_holm": c.tests["corrected_t"]["p_holm"],
    }


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
        empty = {"mean": None, "std": None, "ci95": None}
        rows = [
            {"metric": m, "cells": [by_arm[a][m].as_dict() if m in by_arm[a] else empty for a in arms]}
            for m in names
        ]
        tables.append(
            {
                "title": LEVEL_TITLES.get((level, agg), f"{level} ({agg})"),
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
    device = ", ".join(sorted({str(d) for d in done.get("device", []) if d})) if len(done) else ""
    return {"columns": [{"key": k, "label": label} for k, label, _ in TIMING_COLUMNS], "rows": rows, "device": device}
