"""Label sensitivity: every verdict again with named test samples left out (``report.sensitivity``).

A rule (:class:`harness.exclusions.Exclusion`, e.g. ``{name: ambiguous-labels, exclude: {severity: [2, 3],
label: 0}}``) names test samples whose label is doubtful. For each rule the report drops those rows from
the stored per-sample predictions, recomputes every run's primary metric on the samples kept with the
same function the runs used (:func:`harness.metrics.run_metrics`), and compares each arm with the
baseline again exactly as the main verdicts do (corrected t, Holm across arms, the TOST where a margin is
set). Nothing is retrained: the models, their splits and the correction's split sizes are the runs' own;
only the scoring changes. A verdict that changes when a few ambiguous videos are left out rests on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.exclusions import Exclusion, column_problems, parse_exclusions
from harness.metrics import run_metrics
from harness.report.comparisons import PairingLog, compare_arms
from harness.report.equivalence import add_equivalence
from harness.report.inputs import Inputs
from harness.report.strata import PREDICTION_COLUMNS
from harness.store import StoreError

if TYPE_CHECKING:
    from harness.report.analysis import Settings, Verdict

METRIC_COLUMNS = ["run_id", "arm", "repeat", "fold", "level", "aggregation", "metric", "value"]


class SensitivityError(StoreError):
    """``report.sensitivity`` names a column the stored samples do not have (or is malformed): the report
    refuses it in one line before it writes anything (``harness report`` exits with 2)."""


def rules_of(inputs: Inputs) -> list[Exclusion]:
    """The stored suite's rules, parsed by the one parser (:func:`harness.exclusions.parse_exclusions`)."""
    raw = (inputs.suite_dict.get("report") or {}).get("sensitivity")
    try:
        return parse_exclusions(raw or None)
    except ValueError as exc:
        raise SensitivityError(f"{inputs.store_path}: report.sensitivity: {exc}") from None


def check_columns(inputs: Inputs, rules: list[Exclusion]) -> None:
    """Refuse, in one line, a rule on a column the store's samples do not carry (where the store holds them)."""
    if not rules:
        return
    table = inputs.predictions if len(inputs.predictions) else inputs.samples
    if not len(table):
        return  # nothing stored to leave out; the analysis says so in a note
    columns = [c for c in table.columns if c not in PREDICTION_COLUMNS]
    problems = column_problems(rules, columns)
    if problems:
        raise SensitivityError(f"{inputs.store_path}: {'; '.join(problems)}")


@dataclass
class SensitivityRow:
    """One arm's verdict with all the test samples, and without the rule's."""

    arm: str
    full: Verdict
    without: Verdict

    @property
    def changed(self) -> bool:
        return self.full.kind != self.without.kind


@dataclass
class Sensitivity:
    """The verdicts again without one rule's samples, at the primary level."""

    rule: Exclusion
    level: str
    aggregation: str
    metric: str
    n_samples: int  # distinct test samples in the stored predictions
    n_excluded: int  # of them, left out by the rule
    n_excluded_positive: int
    rows: list[SensitivityRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        def side(v: Verdict) -> dict[str, Any]:
            c = v.comparison
            if c is None:
                return {"kind": v.kind, "decision": v.kind, "text": v.text, "n_runs": None, "mean_difference": None,
                        "ci95": None, "p_holm": None, "equivalence": None}
            return {"kind": v.kind, "decision": v.kind, "text": v.text, "n_runs": c.n_runs,
                    "mean_arm": c.mean_arm, "mean_baseline": c.mean_baseline,
                    "mean_difference": c.mean_difference, "ci95": list(c.ci95) if c.ci95 else None,
                    "p": c.tests["corrected_t"].get("p"), "p_holm": c.tests["corrected_t"].get("p_holm"),
                    "equivalence": c.equivalence or None}

        return {**self.rule.as_dict(), "level": self.level, "aggregation": self.aggregation, "metric": self.metric,
                "n_samples": self.n_samples, "n_excluded": self.n_excluded,
                "n_excluded_positive": self.n_excluded_positive, "notes": self.notes,
                "rows": [{"arm": r.arm, "changed": r.changed, "all_samples": side(r.full), "without": side(r.without)}
                         for r in self.rows]}


def recompute_metrics(predictions: pd.DataFrame, metric: str, levels: list[tuple[str, str]]) -> pd.DataFrame:
    """Each run's ``metric`` at ``levels`` from its stored predictions (the runs' own :func:`run_metrics`)."""
    rows = []
    wanted = set(levels)
    for (run_id, arm, r, f), run in predictions.groupby(["run_id", "arm", "repeat", "fold"], sort=True):
        if not len(run):
            continue
        for m in run_metrics(run["label"].to_numpy().astype(int), run["prob"].to_numpy(dtype=float),
                             run["video_id"].astype(str).to_numpy(), run["group_id"].astype(str).to_numpy(),
                             levels=wanted):
            if m["metric"] == metric and (m["level"], m["aggregation"]) in wanted:
                rows.append({"run_id": run_id, "arm": arm, "repeat": int(r), "fold": int(f), **m})
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def sensitivities(inputs: Inputs, settings: Settings, rules: list[Exclusion], verdicts: list[Verdict]) -> list[Sensitivity]:
    """Per rule, each arm's verdict at the primary level again without the rule's test samples."""
    from harness.report.analysis import Verdict, find_comparison

    if not rules:
        return []
    level = settings.headline_levels[0]
    primary, baseline, alpha = settings.primary, settings.baseline, settings.alpha
    pred = inputs.predictions
    out = []
    for rule in rules:
        if not len(pred):
            out.append(Sensitivity(rule, *level, primary, 0, 0, 0,
                                   notes=["The store holds no per-sample predictions: nothing to leave out."]))
            continue
        excluded = rule.mask(pred)
        kept = pred[~excluded].reset_index(drop=True)
        dropped = pred[excluded].drop_duplicates("sample_id")
        result = Sensitivity(rule, *level, primary, n_samples=int(pred["sample_id"].nunique()),
                             n_excluded=len(dropped), n_excluded_positive=int((dropped["label"] == 1).sum()))
        metrics = recompute_metrics(kept, primary, [level])
        sub = dataclasses.replace(inputs, metrics=metrics, predictions=kept, notes=[])
        log = PairingLog()
        comparisons = compare_arms(sub, baseline, settings.rope, log, level, alpha=alpha) if len(metrics) else []
        if settings.margin is not None:
            add_equivalence(comparisons, settings.margin, alpha)
        for v in verdicts:
            c = find_comparison(comparisons, v.arm, level, primary)
            without = Verdict.from_comparison(c, alpha) if c is not None else Verdict.not_compared(
                v.arm, f"not compared without {rule.name}: fewer than 2 runs have a {level[0]}-level {primary} "
                "score in both this arm and the baseline", level[0])
            result.rows.append(SensitivityRow(v.arm, v, without))
        if result.n_excluded == 0:
            result.notes.append(f"{rule.name}: the rule matches no stored test sample; the verdicts are the main ones.")
        result.notes += log.notes
        out.append(result)
    return out
