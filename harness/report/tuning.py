"""The report's Tuning section: what the nested search of every tuned run chose, and at what cost.

Read from the store's ``searches`` table (one record per tuned, done run; written by the driver from
:func:`harness.search.nested.tune`). Per arm: the budget (trials x inner folds, sampler, pruner),
the configuration chosen in every outer run, the best inner score next to the outer test score of
the same run (their difference is the optimism of the selection: the inner best is the maximum of
noisy estimates, so it overstates what the chosen configuration scores on new patients; Varma &
Simon 2006, Cawley & Talbot 2010), the tuning curve (best-so-far inner score against trial number)
and the tuning time. Arms without a search record are left out; a suite without ``search`` has no
Tuning section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.report.inputs import run_arm_names


@dataclass
class TunedRun:
    repeat: int
    fold: int
    params: dict[str, Any]
    own_params: dict[str, Any]
    inner_best: float | None
    outer: float | None
    seconds: float
    n_trials: int
    n_pruned: int
    chosen_is_own: bool
    curve: list[float | None]  # best-so-far inner score after each trial (None before the first)
    test_samples_in_trials: int


@dataclass
class ArmTuning:
    arm: str
    budget: int
    inner_folds: int
    sampler: str
    pruner: str
    metric: str
    direction: str
    level: str = "frame"  # the level the trials were scored at (and the outer score is read at)
    runs: list[TunedRun] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The score's name as tables print it: ``roc_auc`` (frames) or ``video-level roc_auc``."""
        return self.metric if self.level == "frame" else f"{self.level}-level {self.metric}"

    @property
    def keys(self) -> list[str]:
        return sorted({k for r in self.runs for k in r.params})

    @property
    def seconds(self) -> float:
        return float(sum(r.seconds for r in self.runs))

    @property
    def optimism(self) -> float | None:
        diffs = [r.inner_best - r.outer for r in self.runs if r.inner_best is not None and r.outer is not None]
        return float(np.mean(diffs)) if diffs else None

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s ``arms.<name>.search``."""
        return {
            "trials": self.budget, "inner_folds": self.inner_folds, "sampler": self.sampler, "pruner": self.pruner,
            "metric": self.metric, "level": self.level,
            "chosen": [{"repeat": r.repeat, "fold": r.fold, "params": r.params} for r in self.runs],
            "inner_best": [r.inner_best for r in self.runs],
            "outer_test": [r.outer for r in self.runs],
            "optimism": self.optimism,
            "seconds": self.seconds,
            "test_samples_in_trials": int(sum(r.test_samples_in_trials for r in self.runs)),
        }


def _curve(trials: list[dict[str, Any]], maximize: bool) -> list[float | None]:
    best: float | None = None
    out: list[float | None] = []
    for t in trials:
        if t.get("state") == "fail":
            continue  # an interrupted or failed attempt is not a trial of the budget
        v = t.get("value")
        if t.get("state") == "complete" and v is not None and math.isfinite(v):
            best = v if best is None else (max(best, v) if maximize else min(best, v))
        out.append(best)
    return out


def _leaked(rec: dict[str, Any], test_groups: set[str] | None) -> int:
    """Test-fold patients found in the trials' inner folds, checked again here against the stored split
    (plus what the run itself recorded)."""
    leakage = rec.get("leakage") or {}
    found = int(leakage.get("test_samples_in_trials", 0))
    if test_groups:
        seen = {str(g) for fold in leakage.get("inner_groups") or [] for ids in fold.values() for g in ids}
        found += len(seen & test_groups)
    return found


def tuning(inputs: Any) -> dict[str, ArmTuning]:
    """``{arm: ArmTuning}`` of the tuned arms (read once per ``Inputs``)."""
    cached = getattr(inputs, "_tuning", None)
    if cached is not None:
        return cached
    from harness.store import ResultsStore, StoreError

    try:
        store = ResultsStore(inputs.out_dir, readonly=True)
    except StoreError:
        return {}
    try:
        df = store.searches()
        splits = store.splits()
    finally:
        store.close()
    test_groups = {(int(r), int(f)): set(g["group_id"].astype(str))
                   for (r, f), g in splits[splits["role"] == "test"].groupby(["repeat", "fold"])} if len(splits) else {}
    current = set(run_arm_names(inputs.meta, inputs.suite_dict))  # an arm removed from the suite is not reported
    out: dict[str, ArmTuning] = {}
    for row in df.itertuples(index=False):
        rec = row.record or {}
        arm = str(row.arm)
        if arm not in current:
            continue
        metric = rec.get("metric", "roc_auc")
        # The level the search scored its trials at (older records: frames): the outer score is read there
        # too, so that inner - outer compares like with like.
        level, aggregation = str(rec.get("level", "frame")), str(rec.get("aggregation", "none"))
        if arm not in out:
            out[arm] = ArmTuning(arm, int(rec.get("budget", 0)), int(rec.get("inner_folds", 0)),
                                 str(rec.get("sampler", "")), str(rec.get("pruner", "")), metric,
                                 str(rec.get("direction", "maximize")), level)
        outer = inputs.scores.get(arm, level, aggregation, metric).get((int(row.repeat), int(row.fold)))
        out[arm].runs.append(TunedRun(
            int(row.repeat), int(row.fold), dict(rec.get("params") or {}), dict(rec.get("own_params") or {}),
            rec.get("inner_best"), outer, float(rec.get("seconds") or 0.0), int(rec.get("n_trials") or 0),
            int(rec.get("n_pruned") or 0), bool(rec.get("chosen_is_own")),
            _curve(list(rec.get("trials") or []), rec.get("direction", "maximize") == "maximize"),
            _leaked(rec, test_groups.get((int(row.repeat), int(row.fold))))))
    try:
        inputs._tuning = out
    except AttributeError:
        pass
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}"


def _num(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _arms(analysis: Any) -> list[str]:
    """The arms whose runs may be tuned: the main family's, then the variant family's (``search.arms``
    tunes ``<arm>~tuned``, a variant beside the arms' own untuned runs)."""
    return [*analysis.arms, *(analysis.variant.arms if analysis.variant is not None else [])]


def context(analysis: Any) -> list[dict[str, Any]]:
    """The template's ``tuning``: one block per tuned arm (empty list: no Tuning section)."""
    blocks = []
    for arm in _arms(analysis):
        t = tuning(analysis.inputs).get(arm)
        if t is None:
            continue
        keys = t.keys
        rows = [{"run": f"r{r.repeat}/f{r.fold}", "values": [_fmt(r.params.get(k)) for k in keys],
                 "own": r.chosen_is_own, "inner": _num(r.inner_best), "outer": _num(r.outer),
                 "optimism": _num(None if r.inner_best is None or r.outer is None else r.inner_best - r.outer),
                 "trials": f"{r.n_trials} ({r.n_pruned} pruned)", "seconds": f"{r.seconds:.0f}"}
                for r in sorted(t.runs, key=lambda r: (r.repeat, r.fold))]
        own = t.runs[0].own_params if t.runs else {}
        blocks.append({
            "arm": arm, "names": keys, "own": [_fmt(own.get(k)) for k in keys], "rows": rows,
            "budget": f"{t.budget} trials × {t.inner_folds} inner folds per outer run ({t.sampler} sampler, "
                      f"{'median pruner' if t.pruner == 'median' else 'no pruning'}), {len(t.runs)} outer runs",
            "seconds": f"{t.seconds:.0f}", "optimism": _num(t.optimism), "metric": t.label,
            "kept_own": sum(r.chosen_is_own for r in t.runs), "n_runs": len(t.runs),
            "leak": sum(r.test_samples_in_trials for r in t.runs),
        })
    return blocks


# --------------------------------------------------------------------------- figures (FigureSpec make functions)


def has_tuning(data: Any) -> bool:
    return bool(tuning(data.analysis.inputs))


def _tuned(data: Any) -> dict[str, ArmTuning]:
    found = tuning(data.analysis.inputs)
    return {a: found[a] for a in _arms(data.analysis) if a in found}


def chosen_figure(data: Any) -> tuple[str | None, str | None]:
    from harness.report import figures

    tuned = _tuned(data)
    values: dict[str, dict[str, list[Any]]] = {}
    own: dict[str, dict[str, Any]] = {}
    for arm, t in tuned.items():
        for r in t.runs:
            for k, v in r.params.items():
                values.setdefault(k, {}).setdefault(arm, []).append(v)
                own.setdefault(k, {})[arm] = r.own_params.get(k)
    if not values:
        return None, "No tuned parameters are stored."
    return figures.tuning_strip(values, own, data.colors), None


def optimism_figure(data: Any) -> tuple[str | None, str | None]:
    from harness.report import figures

    points = {arm: [(r.inner_best, r.outer) for r in t.runs if r.inner_best is not None and r.outer is not None]
              for arm, t in _tuned(data).items()}
    points = {a: p for a, p in points.items() if p}
    if not points:
        return None, "No run has both an inner best score and an outer test score."
    metric = next(iter(_tuned(data).values())).label
    return figures.inner_vs_outer(points, metric, data.colors), None


def curve_figure(data: Any) -> tuple[str | None, str | None]:
    from harness.report import figures

    curves = {arm: [r.curve for r in t.runs] for arm, t in _tuned(data).items()}
    if not any(any(v is not None for v in c) for cs in curves.values() for c in cs):
        return None, "No trial completed."
    metric = next(iter(_tuned(data).values())).label
    return figures.tuning_curves(curves, metric, data.colors), None


__all__ = ["ArmTuning", "TunedRun", "chosen_figure", "context", "curve_figure", "has_tuning", "optimism_figure",
           "tuning"]
