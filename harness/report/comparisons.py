"""Every arm against the baseline: per-run paired tests, prediction-level tests, ranks over all arms.

Conventions:
- the unit of analysis is one run (repeat x fold); arms are paired with the baseline by
  (repeat, fold); metrics are never pooled across folds;
- ``mean_difference`` is always ``arm - baseline``; for metrics where lower is better
  (:data:`LOWER_IS_BETTER`) the Bayesian probabilities are oriented so that "better" means lower;
- Holm's correction runs across arms within one (test, level, metric) family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import math

import numpy as np
import pandas as pd
import scipy.stats as sps

from harness import stats
from harness.metrics import LOWER_IS_BETTER, THRESHOLD  # McNemar's threshold is the metrics' own
from harness.report.checks import CHANCE
from harness.report.inputs import Inputs, RunKey, first_line

MDE_POWER = 0.8  # power at which the minimal detectable difference is stated


def p_or_nan(value: Any) -> float:
    """A stored p-value for Holm: NaN where none was computed (statsmodels keeps NaN out of the family)."""
    return float("nan") if value is None else float(value)


# --------------------------------------------------------------------------- per-run paired tests


@dataclass
class Comparison:
    """One arm against the baseline on one (level, metric): :func:`harness.stats.compare_to_baseline`
    plus Holm-adjusted p-values (``tests[test]["p_holm"]``)."""

    arm: str
    versus: str
    metric: str
    level: str
    aggregation: str
    n_runs: int
    mean_arm: float
    mean_baseline: float
    mean_difference: float
    ci95: list[float]
    ci95_bootstrap: list[float]
    cohens_dz: float
    ratio: float  # mean n_test / n_train of the paired runs
    rope: float
    tests: dict[str, dict[str, Any]]  # corrected_t, wilcoxon, bayes_correlated_t
    sd_difference: float = float("nan")  # std (ddof 1) of the per-run differences
    mde: dict[str, Any] = field(default_factory=dict)  # minimal detectable difference (see :func:`add_mde`)
    failed_runs: dict[str, Any] = field(default_factory=dict)  # runs without a score, and the sensitivity lines
    differences: list[float] = field(default_factory=list)  # the per-run paired differences, (repeat, fold) order
    # With report.equivalence_margin, on the primary metric (harness.report.equivalence.add_equivalence): the
    # corrected TOST against the margin, Holm across the family, and the four-way decision.
    equivalence: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None  # better | worse | equivalent | undecided

    @classmethod
    def from_stats(cls, result: Mapping[str, Any], **where: str) -> Comparison:
        keys = ("n_runs", "mean_arm", "mean_baseline", "mean_difference", "ci95", "ci95_bootstrap")
        return cls(
            **where,
            **{k: result[k] for k in keys},
            cohens_dz=result["cohens_dz"],
            ratio=result["ratio"],
            rope=result["rope"],
            tests=result["tests"],
        )

    def as_mapping(self) -> dict[str, Any]:
        """The form :func:`harness.stats.verdict` reads."""
        return {
            "tests": self.tests,
            "mean_difference": self.mean_difference,
            "rope": self.rope,
            "mde": self.mde.get("value"),
        }


@dataclass
class PairingLog:
    """What the comparisons could not pair; the analysis turns it into notes."""

    notes: list[str] = field(default_factory=list)
    unpaired: dict[str, int] = field(default_factory=dict)  # arm -> runs left out of some pairing


def _orient(result: dict[str, Any], metric: str) -> dict[str, Any]:
    """Make the Bayesian "better" mean lower for lower-is-better metrics (mu -> -mu is exact)."""
    if metric in LOWER_IS_BETTER:
        b = result["tests"]["bayes_correlated_t"]
        b["p_worse"], b["p_better"] = b["p_better"], b["p_worse"]
        b["oriented"] = "lower is better"
    return result


def compare_one(
    inputs: Inputs, arm: str, baseline: str, level: tuple[str, str], metric: str, rope: float, log: PairingLog
) -> Comparison | None:
    """``arm`` against ``baseline`` on the runs both have, or None (with a note) when impossible."""
    ev = inputs.suite_dict.get("evaluation", {})
    folds, repeats = int(ev.get("folds", 0) or 0), int(ev.get("repeats", 1) or 1)
    sizes = inputs.split_sizes
    base = inputs.scores.get(baseline, *level, metric)
    scores = inputs.scores.get(arm, *level, metric)
    keys = sorted(set(scores) & set(base) & set(sizes.n_train))
    where = f"{arm} vs {baseline}, {level[0]} {metric}"
    if len(keys) < 2:
        if scores:
            log.notes.append(f"{where}: fewer than 2 paired runs; not compared.")
        return None
    try:
        result = stats.compare_to_baseline(
            {k: scores[k] for k in keys},
            {k: base[k] for k in keys},
            {k: sizes.n_train[k] for k in keys},
            {k: sizes.n_test[k] for k in keys},
            folds=folds,
            repeats=repeats,
            rope=rope,
            allow_missing=len(keys) < folds * repeats,
        )
    except ValueError as exc:
        log.notes.append(f"{where}: not compared ({first_line(exc)}).")
        return None
    missing = set(scores) ^ set(base)
    if missing:  # one note per arm, written by the analysis
        log.unpaired[arm] = max(log.unpaired.get(arm, 0), len(missing))
    result = _orient(result, metric)
    c = Comparison.from_stats(result, arm=arm, versus=baseline, metric=metric, level=level[0], aggregation=level[1])
    c.differences = [float(scores[k] - base[k]) for k in keys]
    c.sd_difference = float(np.std(c.differences, ddof=1))
    c.failed_runs = failed_runs(inputs, arm, baseline, scores, base, metric, c.ratio, folds, repeats)
    return c


def _done_keys(inputs: Inputs, arm: str) -> set[RunKey]:
    d = inputs.done
    d = d[d["arm"] == arm]
    return {(int(r), int(f)) for r, f in zip(d["repeat"], d["fold"])}


def failed_runs(
    inputs: Inputs,
    arm: str,
    baseline: str,
    scores: dict[RunKey, float],
    base: dict[RunKey, float],
    metric: str,
    ratio: float,
    folds: int,
    repeats: int,
) -> dict[str, Any]:
    """Planned runs without a completed run (``failed``) or without a finite score (``undefined``) per side,
    and the comparison again with each such run scored as chance and as that arm's worst run.

    Leaving such runs out treats them as missing at random; an arm that fails on hard folds would then
    look better than it is. The sensitivity lines impute every planned run that either side lacks.
    """
    planned = set(inputs.planned_runs) or (set(scores) | set(base))
    out: dict[str, Any] = {}
    for side, name, values in (("arm", arm, scores), ("baseline", baseline, base)):
        done = _done_keys(inputs, name)
        out[side] = len(planned - done)  # failed, interrupted or never run
        out[f"{side}_undefined"] = len((planned & done) - set(values))  # done, metric undefined
    keys = sorted(k for k in planned if k in scores or k in base)
    out["sensitivity"] = {}
    if not (out["arm"] or out["baseline"] or out["arm_undefined"] or out["baseline_undefined"]) or len(keys) < 2:
        return out
    lower = metric in LOWER_IS_BETTER
    fills: dict[str, tuple[float, float] | None] = {
        "chance": (CHANCE[metric], CHANCE[metric]) if metric in CHANCE else None,
        "worst": (
            (max if lower else min)(scores.values()) if scores else float("nan"),
            (max if lower else min)(base.values()) if base else float("nan"),
        ),
    }
    for how, fill in fills.items():
        if fill is None or not all(math.isfinite(x) for x in fill):
            continue
        d = np.array([scores.get(k, fill[0]) - base.get(k, fill[1]) for k in keys])
        try:
            ct = stats.corrected_resampled_t(d, 1.0, ratio, folds, repeats, allow_missing=len(d) < folds * repeats)
        except ValueError:
            continue
        half = float(sps.t.ppf(0.975, ct["df"])) * ct["se"]
        out["sensitivity"][how] = {
            "filled_with": {"arm": fill[0], "baseline": fill[1]},
            "n_runs": int(d.size),
            "mean_difference": float(d.mean()),
            "ci95": [float(d.mean() - half), float(d.mean() + half)],
            "p": ct["p"],
        }
    return out


def add_mde(family: Sequence[Comparison], alpha: float, power: float = MDE_POWER) -> None:
    """Each comparison's minimal detectable difference: corrected t, alpha after Holm (alpha / m), ``power``."""
    m = len(family)
    if not m:
        return
    level = stats.holm_alpha(alpha, m)
    for c in family:
        try:
            value = stats.minimal_detectable_difference(c.sd_difference, c.n_runs, c.ratio, level, power)
        except ValueError:
            value = float("nan")
        c.mde = {
            "value": value,
            "alpha": level,
            "power": power,
            "n_hypotheses": m,
            "sd_difference": c.sd_difference,
            "n_runs": c.n_runs,
            "method": "corrected resampled t (Nadeau-Bengio variance), noncentral t, two-sided, alpha / m (Holm's "
            "strictest step)",
        }


def compare_arms(
    inputs: Inputs,
    baseline: str,
    rope: float,
    log: PairingLog,
    level: tuple[str, str] = ("frame", "none"),
    alpha: float = 0.05,
) -> list[Comparison]:
    """Every arm against the baseline on every metric of one level, Holm-adjusted across arms, each with
    its minimal detectable difference."""
    out: list[Comparison] = []
    for metric in inputs.metric_names:
        family = [
            c
            for arm in inputs.arms
            if arm != baseline
            for c in [compare_one(inputs, arm, baseline, level, metric, rope, log)]
            if c is not None
        ]
        for test in ("corrected_t", "wilcoxon"):
            adjusted = stats.holm([p_or_nan(c.tests[test].get("p")) for c in family])
            for c, p in zip(family, adjusted):
                c.tests[test]["p_holm"] = p
        add_mde(family, alpha)
        out.extend(family)
    return out


# --------------------------------------------------------------------------- prediction-level tests


@dataclass
class PredictionTest:
    """DeLong (clustered by patient, combined over folds) and McNemar of one arm vs the baseline."""

    arm: str
    versus: str
    delong: dict[str, Any]
    mcnemar: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "versus": self.versus, "delong": self.delong, "mcnemar": self.mcnemar}


def _paired_predictions(pred: pd.DataFrame, arm: str, baseline: str) -> pd.DataFrame:
    """Predictions of ``arm`` and ``baseline`` joined on (repeat, fold, sample_id)."""
    cols = ["repeat", "fold", "sample_id", "group_id", "label", "prob"]
    a = pred.loc[pred["arm"] == arm, cols]
    b = pred.loc[pred["arm"] == baseline, ["repeat", "fold", "sample_id", "prob"]]
    return a.merge(b, on=["repeat", "fold", "sample_id"], suffixes=("_arm", "_base"))


def prediction_tests(inputs: Inputs, baseline: str) -> list[PredictionTest]:
    """DeLong and McNemar per arm vs the baseline, Holm-adjusted across arms.

    McNemar needs independent samples: within one repeat each sample is tested exactly once,
    so the test runs per repeat; the headline is the first repeat, the others are listed.
    """
    pred = inputs.predictions
    out: list[PredictionTest] = []
    for arm in inputs.arms:
        if arm == baseline or not len(pred):
            continue
        pairs = _paired_predictions(pred, arm, baseline)
        if len(pairs):
            out.append(PredictionTest(arm, baseline, _delong(pairs), _mcnemar(pairs)))
    for test in ("delong", "mcnemar"):
        adjusted = stats.holm([p_or_nan(getattr(e, test).get("p")) for e in out])
        for e, p in zip(out, adjusted):
            getattr(e, test)["p_holm"] = p
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
            skipped.append(f"r{r}/f{f}: {first_line(exc)}")
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
    """McNemar per repeat; clustered by patient (Durkalski et al. 2003) wherever a patient has several samples."""
    per_repeat = []
    for r, rep in pairs.groupby("repeat", sort=True):
        groups = rep["group_id"].astype(str).to_numpy()
        clustered = len(np.unique(groups)) < len(groups)
        res = stats.mcnemar(
            rep["label"].to_numpy(),
            (rep["prob_base"].to_numpy() >= THRESHOLD).astype(int),
            (rep["prob_arm"].to_numpy() >= THRESHOLD).astype(int),
            clusters=groups if clustered else None,
        )
        res["repeat"] = int(r)
        res["n_clusters"] = int(len(np.unique(groups)))
        per_repeat.append(res)
    head = dict(per_repeat[0])
    if head["clustered"]:
        form = f"clustered by patient (Durkalski et al. 2003; {head['n_clusters']} patients), χ² 1 df"
        if head["n_clusters"] < 20:
            form += "; fewer than 20 patients: approximate"
    else:
        form = "exact binomial" if head["exact"] else "χ², continuity-corrected"
    head["form"] = form + f", repeat {head['repeat']}"
    head["per_repeat"] = [{"repeat": x["repeat"], "statistic": x["statistic"], "p": x["p"]} for x in per_repeat]
    return head


# --------------------------------------------------------------------------- ranking over arms


@dataclass
class Ranking:
    """Friedman / Iman-Davenport over arms, Nemenyi CD, Holm vs the baseline; or why not."""

    available: bool
    reason: str | None = None
    metric: str = ""
    n_blocks: int = 0
    n_arms: int = 0
    statistic: float = float("nan")
    p: float = float("nan")
    id_statistic: float = float("nan")
    id_p: float = float("nan")
    cd: float = float("nan")
    ranks: list[dict[str, Any]] = field(default_factory=list)  # per arm: rank, p_nemenyi, p_holm
    mean_ranks: dict[str, float] = field(default_factory=dict)

    def as_dict(self, with_ranks: bool = True) -> dict[str, Any]:
        if not self.available:
            return {"available": False, "reason": self.reason}
        keys = ("metric", "n_blocks", "n_arms", "statistic", "p", "id_statistic", "id_p", "cd")
        out: dict[str, Any] = {"available": True, **{k: getattr(self, k) for k in keys}}
        if with_ranks:
            out["ranks"] = self.ranks
        out["mean_ranks"] = self.mean_ranks
        return out


def rank_arms(inputs: Inputs, baseline: str, metric: str, alpha: float) -> Ranking:
    """Rank all arms with a ``metric`` score on the runs every one of them has."""
    per_arm = {a: inputs.scores.get(a, "frame", "none", metric) for a in inputs.arms}
    per_arm = {a: v for a, v in per_arm.items() if v}
    arms = list(per_arm)
    if len(arms) < 3:
        return Ranking(False, f"The Friedman test ranks at least 3 arms; {len(arms)} have {metric} scores.")
    keys: list[RunKey] = sorted(set.intersection(*(set(v) for v in per_arm.values())))
    if len(keys) < 2:
        return Ranking(False, "Fewer than 2 runs have a score for every arm.")
    matrix = np.array([[per_arm[a][k] for a in arms] for k in keys])
    try:
        return _ranking(matrix, arms, baseline, metric, alpha)
    except ValueError as exc:
        return Ranking(False, f"Ranking not computed: {first_line(exc)}")


def _ranking(matrix: np.ndarray, arms: Sequence[str], baseline: str, metric: str, alpha: float) -> Ranking:
    higher = metric not in LOWER_IS_BETTER
    fr = stats.friedman(matrix, higher_is_better=higher)
    ne = stats.nemenyi(fr["mean_ranks"], n_blocks=len(matrix), alpha=alpha)
    hv = (
        stats.holm_vs_control(matrix, control_index=arms.index(baseline), higher_is_better=higher)
        if baseline in arms
        else None
    )
    mean_ranks = [float(x) for x in fr["mean_ranks"]]
    versus = {c["index"]: c for c in (hv["comparisons"] if hv else [])}
    ranks = []
    for i, arm in enumerate(arms):
        row = {"arm": arm, "rank": mean_ranks[i], "p_nemenyi": None, "p_holm": None}
        if i in versus:
            row["p_holm"] = float(versus[i]["p_holm"])
            row["p_nemenyi"] = float(ne["pairwise_p"][i][arms.index(baseline)])
        ranks.append(row)
    return Ranking(
        available=True,
        metric=metric,
        n_blocks=len(matrix),
        n_arms=len(arms),
        statistic=fr["statistic"],
        p=fr["p"],
        id_statistic=fr["iman_davenport_F"],
        id_p=fr["iman_davenport_p"],
        cd=ne["cd"],
        ranks=ranks,
        mean_ranks=dict(zip(arms, mean_ranks)),
    )
