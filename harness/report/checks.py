"""What must hold before a comparison is read: levels that can be estimated, arms above chance,
runs that completed and fitted, and the seed-noise reference arm.

Each check is computed from the store's inputs only (splits, samples, runs, scores) and says in
words why it fails, so the page can print the reason instead of a number.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.report.inputs import Inputs, first_line
from harness.report.intervals import clipped_note, mean_interval, mean_method

#: Fewest units of each class (frames, videos, patients) every test fold must hold for a level.
MIN_PER_CLASS = 5
#: The column naming a level's unit in the samples table, and its plural for sentences.
LEVEL_UNITS: dict[str, tuple[str, str]] = {
    "frame": ("sample_id", "frames"),
    "video": ("video_id", "videos"),
    "patient": ("group_id", "patients"),
}
#: Score of a classifier that learned nothing, where it does not depend on the prevalence.
CHANCE: dict[str, float] = {"roc_auc": 0.5, "balanced_accuracy": 0.5}
FIT_STATUSES = ("ok", "did_not_fit", "diverged")


# --------------------------------------------------------------------------- levels


@dataclass
class LevelCheck:
    """Can the metrics of one level be estimated on these test folds?"""

    level: str
    estimable: bool
    reason: str | None
    min_per_class: int
    n_folds: int = 0
    folds_below: int = 0
    fewest: dict[str, int] = field(default_factory=dict)  # class -> fewest units in a test fold
    fewest_patients: dict[str, int] = field(default_factory=dict)  # class -> fewest patients behind them
    undefined_runs: dict[str, int] = field(default_factory=dict)  # arm -> runs with no finite primary score

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimable": self.estimable,
            "reason": self.reason,
            "min_per_class": self.min_per_class,
            "n_folds": self.n_folds,
            "folds_below_minimum": self.folds_below,
            "fewest_per_test_fold": self.fewest,
            "fewest_patients_per_test_fold": self.fewest_patients,
            "runs_without_primary_score": self.undefined_runs,
        }


def _test_folds(inputs: Inputs) -> pd.DataFrame:
    """One row per (repeat, fold, sample) of the test folds: from the stored splits and samples,
    else from the predictions of the first arm that has them."""
    sp, sa = inputs.splits, inputs.samples
    need = {"sample_id", "group_id", "video_id", "label"}
    if len(sp) and len(sa) and need <= set(sa.columns):
        test = sp.loc[sp["role"] == "test", ["repeat", "fold", "group_id"]]
        return test.merge(sa[list(need)], on="group_id")
    pred = inputs.predictions
    if len(pred) and need | {"arm", "repeat", "fold"} <= set(pred.columns):
        first = pred["arm"].iloc[0]
        return pred.loc[pred["arm"] == first, ["repeat", "fold", *need]]
    return pd.DataFrame(columns=["repeat", "fold", *need])


def check_levels(inputs: Inputs, primary: str, minimum: int = MIN_PER_CLASS) -> dict[str, LevelCheck]:
    """Per level present in the store: estimable when every test fold holds >= ``minimum`` units of each class.

    A video / patient is positive when any of its frames is (as :mod:`harness.metrics` aggregates).
    """
    folds = _test_folds(inputs)
    levels = list(dict.fromkeys(level for level, _ in inputs.levels))
    out: dict[str, LevelCheck] = {}
    for level in levels:
        undefined = _undefined_runs(inputs, level, primary)
        if level not in LEVEL_UNITS or not len(folds):
            out[level] = LevelCheck(level, True, None, minimum, undefined_runs=undefined)
            continue
        col, units = LEVEL_UNITS[level]
        per_unit = folds.groupby(["repeat", "fold", col], sort=True).agg(
            label=("label", "max"), group_id=("group_id", "first")
        )
        fewest: dict[str, int] = {}
        fewest_pat: dict[str, int] = {}
        below = 0
        n_folds = 0
        for _, fold in per_unit.groupby(level=["repeat", "fold"], sort=True):
            n_folds += 1
            counts = {c: int((fold["label"] == v).sum()) for c, v in (("negative", 0), ("positive", 1))}
            pats = {c: int(fold.loc[fold["label"] == v, "group_id"].nunique()) for c, v in (("negative", 0), ("positive", 1))}
            below += any(n < minimum for n in counts.values())
            for c in counts:
                fewest[c] = min(fewest.get(c, counts[c]), counts[c])
                fewest_pat[c] = min(fewest_pat.get(c, pats[c]), pats[c])
        ok = below == 0
        reason = None
        if not ok:
            worst = min(fewest, key=lambda c: fewest[c])
            reason = (
                f"not estimable here, because {below} of {n_folds} test folds hold fewer than {minimum} {worst} "
                f"{units} (as few as {fewest[worst]}); a {level}-level score would rest on a handful of "
                f"{units} of one class"
            )
            if any(undefined.values()):
                n = max(undefined.values())
                reason += f", and {primary} is undefined (one class only) in up to {n} run(s) of an arm"
        out[level] = LevelCheck(level, ok, reason, minimum, n_folds, below, fewest, fewest_pat, undefined)
    return out


def _undefined_runs(inputs: Inputs, level: str, metric: str) -> dict[str, int]:
    """Done runs per arm whose ``metric`` at ``level`` is missing or not finite (dropped from the numbers)."""
    done = inputs.done
    out: dict[str, int] = {}
    aggs = [a for lv, a in inputs.levels if lv == level]
    for arm in inputs.arms:
        keys = {(int(r), int(f)) for r, f in zip(done.loc[done["arm"] == arm, "repeat"], done.loc[done["arm"] == arm, "fold"])}
        if not keys:
            continue
        worst = max((len(keys - set(inputs.scores.get(arm, level, agg, metric))) for agg in aggs), default=0)
        if worst:
            out[arm] = worst
    return out


# --------------------------------------------------------------------------- runs: failures and fit


@dataclass
class RunCounts:
    """One arm's runs: planned, completed, failed, not completed; how the completed ones fitted."""

    planned: int
    done: int
    failed: int
    not_done: int  # planned runs without a done run (failed, interrupted or never run)
    first_error: str
    fit: dict[str, int]  # ok, did_not_fit, diverged, unknown (done runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "done": self.done,
            "failed": self.failed,
            "not_done": self.not_done,
            "first_error": self.first_error or None,
        }


def fit_status(value: Any) -> str:
    """``ok`` | ``did_not_fit`` | ``diverged`` | ``unknown`` of a run's stored ``fit`` value."""
    if isinstance(value, Mapping) and value.get("status") in FIT_STATUSES:
        return str(value["status"])
    return "unknown"


def run_counts(inputs: Inputs) -> dict[str, RunCounts]:
    planned = set(inputs.planned_runs)
    runs = inputs.runs
    out: dict[str, RunCounts] = {}
    for arm in inputs.arms:
        mine = runs[runs["arm"] == arm] if len(runs) else runs
        done = mine[mine["status"] == "done"] if len(mine) else mine
        failed = mine[mine["status"] == "failed"] if len(mine) else mine
        done_keys = {(int(r), int(f)) for r, f in zip(done.get("repeat", []), done.get("fold", []))}
        errors = [e for e in failed.get("error", []) if isinstance(e, str) and e.strip()]
        fit = dict.fromkeys((*FIT_STATUSES, "unknown"), 0)
        for value in done.get("fit", []):
            fit[fit_status(value)] += 1
        n_planned = len(planned) or len(mine)
        out[arm] = RunCounts(
            planned=n_planned,
            done=len(done),
            failed=len(failed),
            not_done=len(planned - done_keys) if planned else len(mine) - len(done),
            first_error=first_line(RuntimeError(errors[0])) if errors else "",
            fit=fit,
        )
    return out


def fit_problems(inputs: Inputs) -> list[dict[str, Any]]:
    """Done runs that did not fit or diverged, with the stored reason and losses."""
    rows = []
    done = inputs.done
    if "fit" not in done.columns:
        return rows
    for row in done.itertuples(index=False):
        status = fit_status(row.fit)
        if status in ("did_not_fit", "diverged"):
            f = row.fit
            rows.append(
                {
                    "arm": row.arm,
                    "repeat": int(row.repeat),
                    "fold": int(row.fold),
                    "status": status,
                    "reason": str(f.get("reason") or ""),
                    "chance_loss": f.get("chance_loss"),
                    "selected_train_loss": f.get("selected_train_loss"),
                    "selected_val_loss": f.get("selected_val_loss"),
                }
            )
    return rows


# --------------------------------------------------------------------------- chance


@dataclass
class ChanceCheck:
    """Is each arm's mean primary score above chance, at each headline level?"""

    metric: str
    chance: float | None
    arms: dict[str, dict[str, dict[str, Any]]]  # level -> arm -> {mean, ci95, clipped, above_chance, n}
    baseline_ok: dict[str, bool | None]  # level -> baseline above chance (None: not checkable)
    message: str | None  # shown first on the page when the baseline did not learn

    @property
    def interval(self) -> str:
        """What ``ci95`` is: the metric tables' interval of the same mean (:func:`mean_interval`)."""
        return mean_method(self.metric)

    def interval_text(self, info: Mapping[str, Any]) -> str:
        """``95 % corrected interval [lo, hi]`` of one arm's entry, with ``(clipped to [0, 1])`` when it was."""
        lo, hi = info["ci95"]
        clip = f" ({clipped_note(self.metric)})" if info.get("clipped") else ""
        return f"95 % corrected interval [{lo:.3f}, {hi:.3f}]{clip}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "chance": self.chance,
            "interval": self.interval,
            "levels": self.arms,
            "baseline_above_chance": self.baseline_ok,
            "answerable": not self.message,
            "message": self.message,
        }


def check_chance(
    inputs: Inputs, baseline: str, metric: str, levels: list[tuple[str, str]], level_checks: Mapping[str, LevelCheck]
) -> ChanceCheck:
    chance = CHANCE.get(metric)
    ratio = inputs.split_sizes.ratio
    per_level: dict[str, dict[str, dict[str, Any]]] = {}
    base_ok: dict[str, bool | None] = {}
    problems: list[str] = []
    result = ChanceCheck(metric, chance, per_level, base_ok, None)
    for level, agg in levels:
        block: dict[str, dict[str, Any]] = {}
        for arm in inputs.arms:
            values = inputs.scores.get(arm, level, agg, metric)
            if len(values) < 2:
                continue
            v = [values[k] for k in sorted(values)]
            # The interval of the metric tables (same runs, same function): clipping to the range moves
            # only an end outside it, so "lower end above chance" is the same answer as unclipped.
            (lo, hi), clipped = mean_interval(v, metric, ratio)
            above = None if chance is None else bool(lo > chance)
            block[arm] = {"mean": float(np.mean(v)), "ci95": [lo, hi], "clipped": clipped, "above_chance": above,
                          "n": len(v)}
        per_level[level] = block
        est = level_checks.get(level)
        if chance is None or baseline not in block or (est is not None and not est.estimable):
            base_ok[level] = None
            continue
        base_ok[level] = block[baseline]["above_chance"]
        if not base_ok[level]:
            b = block[baseline]
            problems.append(
                f"{level}-level {metric} of {baseline} is {b['mean']:.3f}, {result.interval_text(b)}, "
                f"which includes chance ({chance:g})"
            )
    message = None
    if problems:
        message = (
            "This study cannot answer its question with this recipe: the baseline did not learn to detect B-lines ("
            + "; ".join(problems)
            + "). Comparing arms with a baseline at chance compares noise with noise, so the verdicts below say "
            "nothing about diffusion; change the recipe (more epochs or data, pretrained weights, a larger image "
            "size) until the baseline is clearly above chance."
        )
    result.message = message
    return result


# --------------------------------------------------------------------------- noise floor


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _arm_identity(suite: Mapping[str, Any], arm: Mapping[str, Any]) -> tuple[Any, Any]:
    """(everything of the arm but its name, description and seed offset; its seed offset)."""
    training = _merge(dict(suite.get("training") or {}), arm.get("training") or {})
    offset = training.pop("seed_offset", 0) or 0
    rest = {
        k: v
        for k, v in arm.items()
        if k not in ("name", "description", "training") and v not in (None, [], {}, False)
    }
    return (repr(sorted(rest.items())), repr(sorted(training.items()))), offset


def noise_floor_arm(suite: Mapping[str, Any], baseline: str) -> str | None:
    """The first arm that is the baseline again with another ``training.seed_offset`` (None when none)."""
    arms = [a for a in suite.get("arms", []) if isinstance(a, Mapping)]
    base = next((a for a in arms if a.get("name") == baseline), None)
    if base is None:
        return None
    ident, offset = _arm_identity(suite, base)
    for a in arms:
        if a.get("name") == baseline:
            continue
        other, other_offset = _arm_identity(suite, a)
        if other == ident and other_offset != offset:
            return str(a["name"])
    return None
