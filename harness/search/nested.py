"""The nested search of one outer run: an Optuna study on inner folds of the run's training part.

For outer run (arm, repeat, fold) the outer training part (training + inner validation patients of
the outer split; never the test fold) is split again into ``search.inner_folds`` patient-grouped,
stratified folds. A trial trains the arm with the trial's configuration once per inner fold (on the
other inner folds, with the usual inner validation split for epoch selection) and scores the
suite's primary metric at the suite's primary level (``evaluation.primary_level``: frames, or videos
scored by the mean probability of their frames) on the held-out inner fold; its value is the mean
over inner folds. The pruner (``median``) sees the running mean after each inner fold but the last
(a trial that finished every inner fold is complete, never pruned).

The same for every arm (the paired design): the inner folds depend on (suite seed, repeat, fold)
only; the inner fits use the run's seed; the sampler of the n-th trial is seeded from (suite seed,
repeat, fold, n), so a resumed study samples what an uninterrupted one would have.
Trial 0 is the suite's own configuration of the arm (enqueued), so tuning can only replace it by a
configuration that scored better on the inner folds.

Preprocessing inside trials: a trial that changes a filter parameter filters the outer training
part's frames with it (cached by content hash; the test fold's frames are not filtered here) and
the time counts in the trial's seconds.

Leakage: every trial records how many sample ids it saw, a hash of them, and how many outer-test
frames and patients were among them (counted, not assumed); before it trains,
:func:`assert_disjoint` raises :class:`LeakageError` if any of them is in the outer test fold, and
every inner fold's training, validation and test patients are checked to be disjoint.

Identity: a study is named by everything that keys its run — the run's config hash (which holds
the search budget, the space and the objective: metric, direction, level), the data's content hash
and the code version — so a changed objective, data or code never reuses old trials; a study loaded
with another direction than asked is refused (:func:`harness.search.storage.open_study`).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.suite.search import apply_params, arm_space, current_value, searching
from harness.suite.search import objective as search_objective
from harness.search.storage import close_study, finished_trials, open_study, recover, study_path


class LeakageError(AssertionError):
    """A sample of the outer test fold would have reached a trial."""


@dataclass(frozen=True)
class InnerFold:
    """Indices into the frames: fit / validation (epoch selection) / inner test (the trial's score)."""

    k: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def all_idx(self) -> np.ndarray:
        return np.concatenate([self.train_idx, self.val_idx, self.test_idx])


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % 2**31)


def inner_folds(labels: np.ndarray, groups: np.ndarray, outer_idx: np.ndarray, k: int, seed: int,
                val_fraction: float) -> list[InnerFold]:
    """``k`` patient-grouped stratified folds of ``outer_idx`` (each with its own validation split)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from harness.cv import SplitError, _inner_split, leakage_check

    outer_idx = np.sort(np.asarray(outer_idx))
    y, g = labels[outer_idx], np.asarray(groups)[outer_idx].astype(str)
    n_groups = len(np.unique(g))
    if n_groups < 2 * k:
        raise SplitError(f"the outer training part has {n_groups} patients; search.inner_folds {k} needs at least "
                         f"{2 * k} (each inner training part keeps a validation split); accepted: fewer inner folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        parts = list(splitter.split(np.zeros(len(outer_idx)), y, g))
    out = []
    for i, (rest, held) in enumerate(parts):
        train, val = _inner_split(labels, groups, outer_idx[rest], val_fraction, _seed(seed, i))
        test = np.sort(outer_idx[held])
        check = leakage_check(np.asarray(groups), train, val, test)
        if any(check[k] for k in INNER_LEAK_KEYS):
            raise SplitError(f"inner fold {i}: leakage between roles: {check}")
        out.append(InnerFold(i, train, val, test))
    return out


#: Counts of :func:`harness.cv.leakage_check` that must be 0 in every inner fold.
INNER_LEAK_KEYS = ("groups_in_train_and_test", "groups_in_val_and_test", "groups_in_train_and_val",
                   "samples_in_two_roles")


def score_of(goal: dict[str, str], labels: np.ndarray, probs: np.ndarray, videos: np.ndarray) -> float:
    """The objective's metric on one inner test fold, at its level (video: mean frame probability)."""
    from harness.metrics import aggregate, binary_metrics

    if goal["level"] == "video":
        _, labels, probs = aggregate(labels, probs, videos, goal["aggregation"])
    return binary_metrics(labels, probs)[goal["metric"]]


def assert_disjoint(seen_ids: np.ndarray, test_ids: np.ndarray, where: str) -> None:
    """Raise :class:`LeakageError` if any sample id a trial sees is in the outer test fold."""
    common = np.intersect1d(np.asarray(seen_ids).astype(str), np.asarray(test_ids).astype(str))
    if len(common):
        raise LeakageError(f"{where}: {len(common)} sample(s) of the outer test fold would reach the search, "
                           f"e.g. {common[:3].tolist()}")


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode()).hexdigest()[:16]


def _sampler(kind: str, seed: int, budget: int) -> Any:
    import optuna

    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Few trials: TPE's default of 10 random start-up trials would leave it random throughout.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, budget // 3)))


def _pruner(kind: str, budget: int) -> Any:
    import optuna

    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, budget // 4), n_warmup_steps=0, interval_steps=1)


def _suggest(trial: Any, key: str, dist: dict[str, Any]) -> Any:
    (kind, args), = dist.items()
    if kind == "choice":
        return trial.suggest_categorical(key, args)
    if kind == "int":
        return trial.suggest_int(key, int(args[0]), int(args[1]))
    return trial.suggest_float(key, float(args[0]), float(args[1]), log=kind == "log_uniform")


def search_seconds(trials: list[Any]) -> float:
    """Wall time of every trial attempt (interrupted and failed ones included)."""
    total = 0.0
    for t in trials:
        if t.datetime_start is not None and t.datetime_complete is not None:
            total += (t.datetime_complete - t.datetime_start).total_seconds()
        elif "seconds" in t.user_attrs:
            total += float(t.user_attrs["seconds"])
    return total


def _trial_record(t: Any) -> dict[str, Any]:
    seconds = None
    if t.datetime_start is not None and t.datetime_complete is not None:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
    value = t.value if t.state.name == "COMPLETE" else None
    return {"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
            "value": None if value is None or not math.isfinite(value) else float(value),
            "intermediate": [float(t.intermediate_values[k]) for k in sorted(t.intermediate_values)],
            "seconds": seconds, **{k: t.user_attrs[k] for k in sorted(t.user_attrs)}}


def tune(suite: Any, arm: Any, frames: Any, split: Any, repeat: int, fold: int, *, seed: int, cache_dir: str,
         out_dir: str | None, fit: Any, config_hash: str | None = None,
         code_version: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Search the arm's space on inner folds of ``split``'s training part.

    Returns ``(chosen arm config, search record)``; the record is what the store keeps
    (``params``, ``inner_best``, ``trials``, ``seconds``, the budget and the leakage check).
    The study is keyed by everything that keys the run (its config hash, which holds the objective,
    the data's content hash and the code version): a run redone for any of them starts a new study.
    """
    import optuna

    from harness.cv import leakage_check
    from harness.preprocess import on_the_fly_filter, preprocess_frames
    from harness.suite import sha256_of
    from harness.training import RunData
    from harness.training.errors import TrainingError

    cfg = suite.search
    space = arm_space(suite, arm) or {}
    goal = search_objective(suite)
    metric, direction = goal["metric"], goal["direction"]
    labels, groups, ids = frames.labels, np.asarray(frames.groups).astype(str), np.asarray(frames.sample_ids)
    videos = np.asarray(frames.videos).astype(str)
    outer = np.sort(np.concatenate([split.train_idx, split.val_idx]))
    test_ids = ids[split.test_idx]
    test_patients = set(groups[split.test_idx].tolist())
    assert_disjoint(ids[outer], test_ids, f"{arm.name} r{repeat}/f{fold}: outer training part")
    folds = inner_folds(labels, groups, outer, cfg.inner_folds, _seed(suite.seed, repeat, fold, 0x5EA4C),
                        suite.training.val_fraction)
    position = np.full(len(labels), -1)
    position[outer] = np.arange(len(outer))
    subset_hash = sha256_of({"frames": frames.content_hash, "subset": ids_digest(ids[outer])})[:32]
    own = {key: current_value(suite, arm, key) for key in space}

    def objective(trial: Any) -> float:
        t0 = time.perf_counter()
        params = {key: _suggest(trial, key, dist) for key, dist in space.items()}
        chosen = apply_params(arm, params)
        model_cfg, train_cfg = suite.arm_model(chosen), suite.arm_training(chosen)
        seen = np.unique(np.concatenate([f.all_idx for f in folds]))
        assert_disjoint(ids[seen], test_ids, f"{arm.name} r{repeat}/f{fold} trial {trial.number}")
        trial.set_user_attr("samples_seen", int(len(seen)))
        trial.set_user_attr("samples_digest", ids_digest(ids[seen]))
        # Counted, not assumed: outer-test frames and patients among what this trial sees.
        trial.set_user_attr("test_overlap", int(len(np.intersect1d(ids[seen].astype(str), test_ids.astype(str)))))
        trial.set_user_attr("test_patients_seen", len(set(groups[seen].tolist()) & test_patients))
        # The outer training part's frames only, filtered with this trial's pipeline (cached).
        steps = [] if chosen.on_the_fly else chosen.preprocess
        tp = time.perf_counter()
        prep = preprocess_frames(frames.images[outer], subset_hash, steps, cache_dir, base_dir=suite.base_dir)
        trial.set_user_attr("preprocess_seconds", time.perf_counter() - tp)
        on_the_fly = on_the_fly_filter(chosen.preprocess, suite.base_dir) if chosen.on_the_fly else None

        def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.ascontiguousarray(prep.images[position[idx]], dtype=np.float32), labels[idx].astype(np.int64)

        scores: list[float] = []
        for f in folds:
            data = RunData(*take(f.train_idx), *take(f.val_idx), *take(f.test_idx))
            try:
                result = fit(model_cfg, train_cfg, data, _seed(seed, 1 + f.k), on_the_fly=on_the_fly,
                             want_state_dict=False)
                probs = np.asarray(result.test_probs, dtype=np.float64)
                if probs.shape != (len(f.test_idx),) or not np.all(np.isfinite(probs)):
                    raise FloatingPointError("non-finite or misshaped predictions")
            except (TrainingError, FloatingPointError) as err:  # a diverged trial is pruned, not fatal
                trial.set_user_attr("failed", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
                trial.set_user_attr("seconds", time.perf_counter() - t0)
                raise optuna.TrialPruned() from None
            scores.append(score_of(goal, labels[f.test_idx], probs, videos[f.test_idx]))
            trial.set_user_attr("fold_scores", scores)
            running = float(np.nanmean(scores)) if np.any(np.isfinite(scores)) else float("nan")
            if math.isfinite(running):
                trial.report(running, f.k)
                # After the last inner fold the trial is complete: it is never pruned then.
                if f.k < len(folds) - 1 and trial.should_prune():
                    trial.set_user_attr("seconds", time.perf_counter() - t0)
                    raise optuna.TrialPruned()
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        value = float(np.nanmean(scores)) if np.any(np.isfinite(scores)) else float("nan")
        if not math.isfinite(value):
            trial.set_user_attr("failed", f"{metric} undefined on every inner fold")
            raise optuna.TrialPruned()
        return value

    path = study_path(out_dir, arm.name, repeat, fold) if out_dir else None
    if code_version is None:
        from harness.versions import code_version as current_code

        code_version = current_code()
    name = (f"{arm.name}-r{repeat}-f{fold}-{config_hash or 'nohash'}-{str(frames.content_hash)[:16]}-"
            f"{code_version[:16]}-{metric}-{goal['level']}-{direction}")
    study = open_study(path, name, direction, _sampler(cfg.sampler, 0, cfg.trials), _pruner(cfg.pruner, cfg.trials))
    try:
        interrupted = recover(study)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(own, user_attrs={"origin": "suite"})
        while len(finished_trials(study)) < cfg.trials:
            n = len(finished_trials(study))
            study.sampler = _sampler(cfg.sampler, _seed(suite.seed, repeat, fold, n, 0x5A3), cfg.trials)
            study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False, show_progress_bar=False)
        trials = study.get_trials(deepcopy=True)
        n_finished = len(finished_trials(study))
    finally:
        close_study(study)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if direction == "maximize" else 1.0
    best = min(complete, key=lambda t: (sign * t.value, t.number)) if complete else None
    params = dict(best.params) if best is not None else own
    record = {
        "params": params, "inner_best": float(best.value) if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "own_params": own, "chosen_is_own": best is None or best.user_attrs.get("origin") == "suite",
        "budget": cfg.trials, "inner_folds": cfg.inner_folds, "sampler": cfg.sampler, "pruner": cfg.pruner,
        "metric": metric, "direction": direction, "level": goal["level"], "aggregation": goal["aggregation"],
        "seconds": search_seconds(trials), "code_version": code_version,
        "n_trials": n_finished, "n_pruned": sum(t.state.name == "PRUNED" for t in trials),
        "n_interrupted": sum(bool(t.user_attrs.get("interrupted")) for t in trials),
        "interrupted_now": interrupted,
        "leakage": {"test_samples": int(len(test_ids)), "test_patients": len(test_patients),
                    "trials_checked": len(trials),
                    # Counted from what the trials saw (each trial records its own overlap), by frame
                    # and by patient; every inner fold's roles are counted too (train/val/test).
                    "test_samples_in_trials": sum(int(t.user_attrs.get("test_overlap", 0)) for t in trials),
                    "test_patients_in_trials": len(test_patients & {g for f in folds
                                                                     for g in groups[f.all_idx].tolist()}),
                    "inner_folds": [{"k": f.k, "n_train": len(f.train_idx), "n_val": len(f.val_idx),
                                     "n_test": len(f.test_idx),
                                     **{k: v for k, v in leakage_check(groups, f.train_idx, f.val_idx,
                                                                       f.test_idx).items() if k in INNER_LEAK_KEYS}}
                                    for f in folds],
                    # The patients of every inner role: with the samples table, the sample ids every
                    # trial saw (all trials see the same inner folds); the report checks them again.
                    "inner_groups": [{role: sorted(set(groups[idx].tolist())) for role, idx in
                                      (("train", f.train_idx), ("val", f.val_idx), ("test", f.test_idx))}
                                     for f in folds]},
        "study": str(Path(path).relative_to(out_dir)) if path is not None else None,
        "study_name": name,
        "trials": [_trial_record(t) for t in trials],
    }
    if best is None:
        record["note"] = "no trial completed; the suite's own configuration was trained"
    return apply_params(arm, params), record


def search_plan(suite: Any, runs: list[tuple[str, int, int]] | None = None) -> tuple[int, int]:
    """``(trials, inner fits)`` of the runs (``(arm, repeat, fold)``; default: all of the suite's)."""
    if not searching(suite):
        return 0, 0
    if runs is None:
        runs = [(a.name, r, f) for a in suite.run_arms() for r in range(suite.evaluation.repeats)
                for f in range(suite.evaluation.folds)]
    n = sum(1 for name, _, _ in runs if suite.run_arm(name).tuned)  # untuned runs and variants search nothing
    return n * suite.search.trials, n * suite.search.trials * suite.search.inner_folds


def search_cost_factor(suite: Any) -> float:
    """Training time of a tuned run / that of an untuned one (upper bound: no trial pruned): each of
    ``trials x inner_folds`` inner fits trains on about (k - 1) / k of the outer training part."""
    if not searching(suite):
        return 1.0
    s = suite.search
    return 1.0 + s.trials * (s.inner_folds - 1)


def search_plan_line(suite: Any, runs: list[tuple[str, int, int]] | None = None) -> str | None:
    """One line for ``--dry-run``: trials, inner fits and what they cost relative to the final fits."""
    if not searching(suite):
        return None
    trials, fits = search_plan(suite, runs)
    s = suite.search
    factor = search_cost_factor(suite)
    which = "" if s.arms is None else f" of {', '.join(a + '~tuned' for a in s.arms)}"
    return (f"search: {s.trials} trials x {s.inner_folds} inner folds per tuned run{which} ({s.sampler}, pruner "
            f"{s.pruner}) = {trials} trials, {fits} inner fits to run; tuned runs take up to ~{factor:.0f}x the "
            "training time of an untuned run")


__all__ = ["InnerFold", "LeakageError", "assert_disjoint", "inner_folds", "search_cost_factor", "search_plan",
           "search_plan_line", "tune"]
