"""Score a training recipe on inner folds only: ``python -m harness recipe SUITE [--set ...]``.

Choosing a recipe (image size, frames per video, epochs, learning rate, augmentation) by looking at
the test folds of the study that then reports it would leak the test folds into the design. This
command scores a recipe the way the nested search scores a trial, without ever touching a test
fold: the suite's outer split ``(repeat, fold)`` is made as every run makes it, its training part
(training + inner validation patients) is cut into ``inner_folds`` patient-grouped stratified folds
(:func:`harness.search.nested.inner_folds`), and for each chosen inner fold the arm trains on the
inner training patients, chooses its epoch on the inner validation patients and is scored on the
inner test patients. The outer test fold's frames are never filtered, trained on or predicted
(:func:`harness.search.nested.assert_disjoint` checks it).

One line per inner fold is printed and, with ``--log FILE``, appended to a JSON-lines file (the
overrides, sizes, frame- and video-level ROC-AUC, the epoch chosen, the fit diagnosis, seconds),
from which docs/results.md's recipe tables are written.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class InnerScore:
    """One inner fold's outcome."""

    inner_fold: int
    n_train: int
    n_val: int
    n_test: int
    n_test_patients: int
    frame_roc_auc: float | None
    video_roc_auc: float | None
    best_epoch: int
    fit: str
    seconds: float

    def line(self) -> str:
        def num(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        return (f"inner fold {self.inner_fold}: {self.n_train} / {self.n_val} / {self.n_test} frames "
                f"(test patients {self.n_test_patients}); frame ROC-AUC {num(self.frame_roc_auc)}, video ROC-AUC "
                f"{num(self.video_roc_auc)}; epoch {self.best_epoch}; {self.fit}; {self.seconds:.0f} s")


def _roc_auc(rows: list[dict[str, Any]], level: str, aggregation: str) -> float | None:
    for r in rows:
        if (r["level"], r["aggregation"], r["metric"]) == (level, aggregation, "roc_auc"):
            value = float(r["value"])
            return value if value == value else None
    return None


def flag_problems(suite: Any, arm_name: str, *, repeat: int = 0, fold: int = 0, inner_folds: int = 4,
                  inner_seed: int = 7, which: Iterable[int] | None = None) -> list[str]:
    """One line per flag of ``harness recipe`` out of range for ``suite`` (checked before the data is loaded)."""
    ev = suite.evaluation
    problems = []
    names = [a.name for a in suite.arms]
    if arm_name not in names:
        problems.append(f"--arm {arm_name}: not an arm of the suite; accepted: {', '.join(names)}")
    if not 0 <= repeat < ev.repeats:
        problems.append(f"--repeat {repeat}: out of range; accepted: 0..{ev.repeats - 1} (evaluation.repeats "
                        f"is {ev.repeats})")
    if not 0 <= fold < ev.folds:
        problems.append(f"--fold {fold}: out of range; accepted: 0..{ev.folds - 1} (evaluation.folds is {ev.folds})")
    if inner_folds < 2:
        problems.append(f"--inner-folds {inner_folds}: too few to score on; accepted: an integer >= 2 "
                        "(patient-grouped folds of the outer training part)")
    if inner_seed < 0:
        problems.append(f"--inner-seed {inner_seed}: negative; accepted: an integer >= 0")
    bad = sorted({i for i in which or () if not 0 <= i < inner_folds})
    if bad and inner_folds >= 2:
        problems.append(f"--inner {', '.join(map(str, bad))}: out of range; accepted: 0..{inner_folds - 1} "
                        f"(--inner-folds is {inner_folds})")
    return problems


def score_recipe(suite: Any, arm_name: str, *, repeat: int = 0, fold: int = 0, inner_folds: int = 4,
                 inner_seed: int = 7, which: Iterable[int] | None = None, cache_dir: str | Path,
                 fit: Any = None, echo: Any = print) -> list[InnerScore]:
    """Train ``arm_name`` of ``suite`` on the chosen inner folds of outer split ``(repeat, fold)``."""
    from harness.cv import get_split
    from harness.execute import load_suite_frames, run_seed
    from harness.metrics import run_metrics
    from harness.preprocess import on_the_fly_filter, preprocess_frames
    from harness.search.nested import _seed, assert_disjoint, ids_digest
    from harness.search.nested import inner_folds as make_inner_folds
    from harness.suite import sha256_of
    from harness.training import RunData

    problems = flag_problems(suite, arm_name, repeat=repeat, fold=fold, inner_folds=inner_folds,
                             inner_seed=inner_seed, which=which)
    if problems:
        raise ValueError(problems[0])
    if fit is None:
        from harness.training import fit_evaluate as fit
    arm = suite.arm(arm_name)
    frames = load_suite_frames(suite, cache_dir)
    split = get_split(frames.labels, frames.groups, suite.evaluation.folds, suite.evaluation.repeats, suite.seed,
                      suite.training.val_fraction, repeat, fold)
    ids, groups = np.asarray(frames.sample_ids), np.asarray(frames.groups).astype(str)
    outer = np.sort(np.concatenate([split.train_idx, split.val_idx]))
    assert_disjoint(ids[outer], ids[split.test_idx], f"recipe r{repeat}/f{fold}: outer training part")
    folds = make_inner_folds(frames.labels, groups, outer, inner_folds, _seed(inner_seed, repeat, fold),
                             suite.training.val_fraction)
    chosen = sorted(set(which)) if which is not None else list(range(inner_folds))
    subset_hash = sha256_of({"frames": frames.content_hash, "subset": ids_digest(ids[outer])})[:32]
    prep = preprocess_frames(frames.images[outer], subset_hash, [] if arm.on_the_fly else arm.preprocess, cache_dir,
                             base_dir=suite.base_dir)
    on_the_fly = on_the_fly_filter(arm.preprocess, suite.base_dir) if arm.on_the_fly else None
    position = np.full(len(frames), -1)
    position[outer] = np.arange(len(outer))
    model_cfg, train_cfg = suite.arm_model(arm), suite.arm_training(arm)
    echo(f"recipe: arm {arm.name}, outer split r{repeat}/f{fold} ({len(outer)} training-part frames, "
         f"{len(np.unique(groups[outer]))} patients; its {len(split.test_idx)} test frames are not used), "
         f"{inner_folds} inner folds (seed {inner_seed}), scoring {chosen}")

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(prep.images[position[idx]], dtype=np.float32), frames.labels[idx].astype(np.int64)

    out = []
    for f in folds:
        if f.k not in chosen:
            continue
        assert_disjoint(ids[f.all_idx], ids[split.test_idx], f"recipe inner fold {f.k}")
        t0 = time.perf_counter()
        result = fit(model_cfg, train_cfg, RunData(*take(f.train_idx), *take(f.val_idx), *take(f.test_idx)),
                     run_seed(suite.seed, repeat, fold, train_cfg.seed_offset), on_the_fly=on_the_fly)
        probs = np.asarray(result.test_probs, dtype=np.float64)
        rows = run_metrics(frames.labels[f.test_idx], probs, frames.videos[f.test_idx], groups[f.test_idx])
        diagnosis = result.diagnosis.as_dict()
        score = InnerScore(f.k, len(f.train_idx), len(f.val_idx), len(f.test_idx),
                           len(np.unique(groups[f.test_idx])), _roc_auc(rows, "frame", "none"),
                           _roc_auc(rows, "video", "mean"), int(result.best_epoch),
                           "ok" if diagnosis["status"] == "ok" else f"{diagnosis['status']} ({diagnosis['reason']})",
                           time.perf_counter() - t0)
        echo(score.line())
        out.append(score)
    return out


def main(args: Any) -> int:
    """``harness recipe``: score the suite's recipe on inner folds; append to ``--log``."""
    from harness.data.cache import default_cache_dir
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.overrides)
    problems = flag_problems(suite, args.arm or suite.baseline, repeat=args.repeat, fold=args.fold,
                             inner_folds=args.inner_folds, inner_seed=args.inner_seed, which=args.inner)
    for line in problems:  # one line each, before the data is loaded (sklearn would say it in a traceback)
        print(line, file=sys.stderr)
    if problems:
        return 2
    scores = score_recipe(suite, args.arm or suite.baseline, repeat=args.repeat, fold=args.fold,
                          inner_folds=args.inner_folds, inner_seed=args.inner_seed, which=args.inner,
                          cache_dir=args.cache_dir or default_cache_dir())
    if args.log:
        with open(args.log, "a", encoding="utf-8") as handle:
            for s in scores:
                handle.write(json.dumps({"suite": str(args.suite), "overrides": list(args.overrides),
                                         "arm": args.arm or suite.baseline, "repeat": args.repeat,
                                         "fold": args.fold, "inner_folds": args.inner_folds,
                                         "inner_seed": args.inner_seed, **asdict(s)}) + "\n")
    return 0


__all__ = ["InnerScore", "flag_problems", "main", "score_recipe"]
