"""Every number of the report, computed once from the store's inputs into one typed result.

``analyse(inputs)`` returns an :class:`Analysis`; ``summary.json`` (:mod:`harness.report.outputs`)
and the HTML page (:mod:`harness.report.context`) are both written from it, so the two never
disagree. The statistics themselves are :mod:`harness.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness import stats
from harness.report.comparisons import (
    Comparison,
    PairingLog,
    PredictionTest,
    Ranking,
    compare_arms,
    prediction_tests,
    rank_arms,
)
from harness.report.inputs import Inputs
from harness.report.learned import learned_summary
from harness.report.methods import failed_runs, leakage
from harness.report.strata import StrataTable, stratify
from harness.report.timing import Cost, timing


@dataclass(frozen=True)
class Settings:
    """The report section of the stored suite, with its defaults."""

    baseline: str
    primary: str
    alpha: float
    rope: float
    strata_columns: list[str]

    @classmethod
    def from_inputs(cls, inputs: Inputs) -> Settings:
        s = inputs.suite_dict
        rep = s.get("report", {}) or {}
        arms = inputs.arms
        # The validated suite knows the strata its data offers; a stale one has only its list.
        strata = list(inputs.suite.strata) if inputs.suite is not None else list(rep.get("strata") or [])
        return cls(
            baseline=rep.get("baseline") or (arms[0] if arms else ""),
            primary=(s.get("evaluation", {}) or {}).get("primary_metric", "roc_auc"),
            alpha=float(rep.get("alpha", 0.05)),
            rope=float(rep.get("rope", 0.01)),
            strata_columns=strata,
        )


@dataclass
class MetricSummary:
    """One arm's metric at one level over its runs."""

    mean: float
    std: float
    ci95: list[float]  # t interval
    ci95_bootstrap: list[float]
    n: int
    per_run: list[dict[str, Any]]  # {"repeat", "fold", "value"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "ci95": self.ci95,
            "ci95_bootstrap": self.ci95_bootstrap,
            "n": self.n,
            "per_run": self.per_run,
        }


@dataclass
class ArmSummary:
    """``levels["frame/none"][metric]``: the arm's summaries by level and metric; its verdict."""

    levels: dict[str, dict[str, MetricSummary]]
    verdict: str | None = None

    @property
    def metrics(self) -> dict[str, MetricSummary]:
        """The frame-level summaries (the headline level)."""
        return self.levels.get("frame/none", {})


@dataclass
class Verdict:
    """The plain-language answer for one arm on the primary metric, with the numbers behind it."""

    arm: str
    text: str
    headline: str
    detail: str
    kind: str  # better | worse | equivalent | undecided | no-difference (a CSS class too)
    comparison: Comparison

    @classmethod
    def from_comparison(cls, c: Comparison, alpha: float) -> Verdict:
        text = stats.verdict(c.as_mapping(), alpha=alpha)
        head, _, detail = text.partition(" (")
        return cls(c.arm, text, head, ("(" + detail) if detail else "", _verdict_kind(text), c)


def _verdict_kind(text: str) -> str:
    for start, kind in (
        ("better", "better"),
        ("worse", "worse"),
        ("practically", "equivalent"),
        ("detectably", "undecided"),
    ):
        if text.startswith(start):
            return kind
    return "no-difference"


@dataclass
class Analysis:
    """Everything the report says, computed from :class:`~harness.report.inputs.Inputs`."""

    inputs: Inputs
    settings: Settings
    arms: list[str]  # suite order, then arms only the store knows
    ran: list[str]  # arms with at least one done run
    arm_summaries: dict[str, ArmSummary]
    comparisons: list[Comparison]  # frame level
    other_levels: list[Comparison]  # video / patient levels
    prediction_tests: list[PredictionTest]
    ranking: Ranking
    verdicts: list[Verdict]
    cost: Cost
    strata: list[StrataTable]
    learned: dict[str, dict[str, dict[str, Any]]]  # arm -> parameter -> mean, std, min, max, n
    leakage: dict[str, Any]
    failed_runs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def test_train_ratio(self) -> float:
        return self.inputs.split_sizes.ratio


def summarise_arms(inputs: Inputs) -> dict[str, ArmSummary]:
    """Per arm, level and metric: mean, std, t and bootstrap CIs and the per-run values."""
    out: dict[str, ArmSummary] = {}
    for arm in inputs.arms:
        levels: dict[str, dict[str, MetricSummary]] = {}
        for level, agg in inputs.levels:
            block = {}
            for metric in inputs.metric_names:
                values = inputs.scores.get(arm, level, agg, metric)
                if values:
                    block[metric] = _metric_summary(values)
            if block:
                levels[f"{level}/{agg}"] = block
        out[arm] = ArmSummary(levels)
    return out


def _metric_summary(values: dict[tuple[int, int], float]) -> MetricSummary:
    keys = sorted(values)
    s = stats.summarize([values[k] for k in keys])
    per_run = [{"repeat": r, "fold": f, "value": values[(r, f)]} for r, f in keys]
    return MetricSummary(s["mean"], s["std"], s["ci95_t"], s["ci95_bootstrap"], s["n"], per_run)


def _unpaired_notes(unpaired: dict[str, int], baseline: str) -> list[str]:
    return [
        f"{arm}: up to {n} run(s) had no finite score in this arm or in {baseline} (a failed run, or a metric "
        "undefined on a fold); its comparisons use the runs both arms have."
        for arm, n in unpaired.items()
    ]


def analyse(inputs: Inputs) -> Analysis:
    """Compute every number of the report (no figures: they are drawn from the result)."""
    settings = Settings.from_inputs(inputs)
    baseline, primary = settings.baseline, settings.primary
    log = PairingLog()
    arm_summaries = summarise_arms(inputs)
    comparisons = compare_arms(inputs, baseline, settings.rope, log)
    other_levels = [
        c for level in inputs.levels if level != ("frame", "none")
        for c in compare_arms(inputs, baseline, settings.rope, log, level)
    ]
    verdicts = [Verdict.from_comparison(c, settings.alpha) for c in comparisons if c.metric == primary]
    for v in verdicts:
        arm_summaries[v.arm].verdict = v.text
    ran = [a for a in inputs.arms if a in set(inputs.done["arm"])]
    predicted = set(inputs.predictions.get("arm", []))
    has_strata = len(inputs.predictions) and settings.strata_columns
    return Analysis(
        inputs=inputs,
        settings=settings,
        arms=inputs.arms,
        ran=ran,
        arm_summaries=arm_summaries,
        comparisons=comparisons,
        other_levels=other_levels,
        prediction_tests=prediction_tests(inputs, baseline),
        ranking=rank_arms(inputs, baseline, primary, settings.alpha),
        verdicts=verdicts,
        cost=timing(inputs, ran),
        strata=stratify(
            inputs.predictions, settings.strata_columns, [a for a in inputs.arms if a in predicted], primary
        )
        if has_strata
        else [],
        learned=learned_summary(inputs.done, inputs.epochs),
        leakage=leakage(inputs),
        failed_runs=failed_runs(inputs),
        notes=[*inputs.notes, *log.notes, *_unpaired_notes(log.unpaired, baseline)],
    )
