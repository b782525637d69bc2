"""One run, a pure function of its arguments: (suite payload, arm, repeat, fold, cache directory)
-> ``RunOutcome``. It loads everything through content-hashed caches and writes nothing; the
driver (harness.runner) records the outcome in the store.

Seeds: run ``(repeat, fold)`` trains with the same seed in every arm (the paired design), plus
the arm's ``training.seed_offset`` (0 unless the arm is a seed-noise control); the splits use
``seed + repeat``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.suite import Suite

FitFn = Callable[..., Any]


def run_seed(suite_seed: int, repeat: int, fold: int, offset: int = 0) -> int:
    """The training seed of run (repeat, fold): identical for every arm with the same ``offset``."""
    base = int(np.random.SeedSequence([int(suite_seed), int(repeat), int(fold)]).generate_state(1)[0] % 2**31)
    return base if not offset else int(np.random.SeedSequence([base, int(offset)]).generate_state(1)[0] % 2**31)


def load_suite_frames(suite: Suite, cache_dir: str | Path):
    from harness.data import load_frames

    return load_frames(suite.data, base_dir=suite.base_dir, cache_dir=Path(cache_dir), seed=suite.seed)


def load_external_frames(suite: Suite, cache_dir: str | Path) -> dict[str, Any]:
    """``{name: FrameSet}`` of the suite's external validation sets (``evaluation.external``), in order."""
    from harness.data import load_frames

    return {name: load_frames(cfg, base_dir=suite.base_dir, cache_dir=Path(cache_dir), seed=suite.seed)
            for name, cfg in suite.evaluation.external.items()}


@dataclass(frozen=True)
class PreprocessingInfo:
    """How the arm's frames were filtered: ``mode`` none | cached | on_the_fly, and the cost."""

    pipeline_hash: str
    mode: str
    seconds: float | None
    n_images: int
    cached: bool


@dataclass
class RunOutcome:
    """Everything one run produced, as the store records it.

    ``metrics``: rows ``{level, aggregation, metric, value}``; ``predictions``: ``(sample_id,
    prob, label)`` per test frame; ``history``: one dict per epoch; ``info``: sizes, leakage
    check, selected epoch, device, the fit diagnosis and the diffusion parameters at
    initialisation; ``state_dict``: the selected model's weights (repeat 0 / fold 0 only).
    """

    arm: str
    repeat: int
    fold: int
    config_hash: str
    seed: int
    metrics: list[dict[str, Any]]
    predictions: list[tuple[str, float, int]]
    timings: dict[str, Any]
    learned_params: dict[str, list[float]]
    history: list[dict[str, Any]]
    info: dict[str, Any]
    preprocessing: PreprocessingInfo
    state_dict: dict[str, Any] | None = field(default=None, repr=False)
    search: dict[str, Any] | None = None  # the nested search's record (harness.search.nested.tune)
    external: dict[str, dict[str, Any]] | None = None  # {set: {"metrics": rows, "predictions": rows}}


def _prepare(suite: Suite, arm_name: str, frames: Any, cache_dir: str) -> tuple[Any, Any, PreprocessingInfo]:
    """(filtered frames, on-the-fly filter or None, what filtering cost) for the arm."""
    from harness.preprocess import on_the_fly_filter, pipeline_hash, preprocess_frames

    arm = suite.arm(arm_name) if isinstance(arm_name, str) else arm_name
    if arm.on_the_fly:
        prep = preprocess_frames(frames.images, frames.content_hash, [], cache_dir)
        info = PreprocessingInfo(pipeline_hash(arm.preprocess, suite.base_dir), "on_the_fly", None, 0, False)
        return prep, on_the_fly_filter(arm.preprocess, suite.base_dir), info
    prep = preprocess_frames(frames.images, frames.content_hash, arm.preprocess, cache_dir, base_dir=suite.base_dir)
    return prep, None, PreprocessingInfo(prep.pipeline_hash, prep.mode, prep.seconds, prep.n_images, prep.cached)


def _check_probs(probs: np.ndarray, n_test: int) -> None:
    if probs.shape != (n_test,):
        raise ValueError(f"training returned {probs.shape} probabilities for {n_test} test images")
    if not np.all(np.isfinite(probs)):
        raise FloatingPointError(f"the trained model predicts NaN/Inf for {int(np.sum(~np.isfinite(probs)))} of "
                                 f"{len(probs)} test images (diverged training; lower training.lr?)")


def execute_run(payload: dict[str, Any], arm_name: str, repeat: int, fold: int, out_dir: str | None,
                cache_dir: str, fit: FitFn | None = None) -> RunOutcome:
    """Train and evaluate one run (the weights come back for repeat 0 / fold 0).

    ``out_dir`` is not written except for the nested search's study files (``studies/``, see
    harness.search.storage): checkpoints come back in the outcome and the driver saves them.
    ``fit`` replaces ``harness.training.fit_evaluate`` (tests).
    """
    from harness.cv import get_split
    from harness.metrics import run_metrics
    from harness.training import RunData
    from harness.training.ensemble import combine, member_offsets, member_record

    if fit is None:
        from harness.training import fit_evaluate as fit

    t_start = time.perf_counter()
    suite = Suite.from_payload(payload)
    run = suite.run_arm(arm_name)  # an arm's own runs, or its ~tuned / ~untuned variant
    arm = run.arm
    training = suite.arm_training(arm)
    t0 = time.perf_counter()
    frames = load_suite_frames(suite, cache_dir)
    load_seconds = time.perf_counter() - t0
    split = get_split(frames.labels, frames.groups, suite.evaluation.folds, suite.evaluation.repeats, suite.seed,
                      suite.training.val_fraction, repeat, fold)
    search = None
    if run.tuned:  # tune on the training part, train the choice below
        from harness.search.nested import tune
        from harness.versions import code_version

        arm, search = tune(suite, arm, frames, split, repeat, fold, seed=run_seed(suite.seed, repeat, fold,
                           training.seed_offset), cache_dir=cache_dir, out_dir=out_dir, fit=fit,
                           config_hash=suite.run_config_hash(run), code_version=code_version())
        training = suite.arm_training(arm)
    prep, on_the_fly, prep_info = _prepare(suite, arm, frames, cache_dir)

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(prep.images[idx], dtype=np.float32), frames.labels[idx].astype(np.int64)

    data = RunData(*take(split.train_idx), *take(split.val_idx), *take(split.test_idx))
    seeds = [run_seed(suite.seed, repeat, fold, o) for o in member_offsets(training.seed_offset, training.seeds)]
    seed = seeds[0]
    want_state = repeat == 0 and fold == 0
    externals = load_external_frames(suite, cache_dir)  # scored by the trained model only: no training, no tuning
    extra = {name: np.ascontiguousarray(_prepare(suite, arm, ef, cache_dir)[0].images, dtype=np.float32)
             for name, ef in externals.items()}
    members = [fit(suite.arm_model(arm), training, data, s, on_the_fly=on_the_fly, want_state_dict=want_state and k == 0,
                   **({"extra_eval": extra} if extra else {})) for k, s in enumerate(seeds)]
    result = combine(members)  # training.seeds networks: probabilities averaged (harness.training.ensemble)
    probs = np.asarray(result.test_probs, dtype=np.float64)
    test = split.test_idx
    _check_probs(probs, len(test))
    ensemble = None
    if len(members) > 1:
        scores = [_primary_scores(suite, frames, test, np.asarray(m.test_probs, dtype=np.float64)) for m in members]
        ensemble = member_record(seeds, members, scores)
    timings = {**result.timings, "load_frames_seconds": load_seconds, "preprocess_seconds": prep_info.seconds,
               "preprocess_cached": prep_info.cached, "run_seconds": time.perf_counter() - t_start}
    leak = split.leakage
    info = {"n_train": len(split.train_idx), "n_val": len(split.val_idx), "n_test": len(test),
            "n_train_groups": leak["n_train_groups"], "n_val_groups": leak["n_val_groups"],
            "n_test_groups": leak["n_test_groups"], "leakage_check": leak,
            "best_epoch": int(result.best_epoch), **where_it_ran(result.device),
            **({"ensemble": ensemble} if ensemble is not None else {}),
            "fit": result.diagnosis.as_dict(), "initial_params": result.initial_params}
    return RunOutcome(
        arm=run.name, repeat=repeat, fold=fold, config_hash=suite.run_config_hash(run), seed=seed,
        metrics=run_metrics(frames.labels[test], probs, frames.videos[test], frames.groups[test]),
        predictions=[(str(s), float(p), int(y)) for s, p, y in
                     zip(frames.sample_ids[test], probs, frames.labels[test], strict=True)],
        timings=timings, learned_params=result.learned_params,
        history=[h.as_dict() if hasattr(h, "as_dict") else dict(h) for h in result.history],
        info=info, preprocessing=prep_info,
        state_dict=result.state_dict if want_state else None, search=search,
        external=_score_external(externals, getattr(result, "extra_probs", None) or {}) or None)


def _primary_scores(suite: Suite, frames: Any, test: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """One member's primary metric at the frame and the video level (the seed spread inside a run)."""
    from harness.metrics import run_metrics

    metric = suite.evaluation.primary_metric
    rows = run_metrics(frames.labels[test], probs, frames.videos[test], frames.groups[test])
    return {f"{r['level']}/{r['aggregation']}/{metric}": float(r["value"]) for r in rows
            if r["metric"] == metric and (r["level"], r["aggregation"]) in (("frame", "none"), ("video", "mean"))}


def where_it_ran(device: Any) -> dict[str, str]:
    """``device`` (``cpu``, or ``cuda`` with the card's name) and ``host`` of the process that trained the run:
    on Ray, the node and the GPU the task was given, which the driver cannot see."""
    import socket

    import torch

    label = str(device)
    if label.startswith("cuda") and torch.cuda.is_available():
        label = f"cuda ({torch.cuda.get_device_name(torch.device(label))})"
    return {"device": label, "host": socket.gethostname()}


def _score_external(externals: dict[str, Any], probs: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Metrics and predictions of the trained model on each external set."""
    from harness.metrics import run_metrics

    out = {}
    for name, ef in externals.items():
        p = np.asarray(probs[name], dtype=np.float64)
        _check_probs(p, len(ef))
        out[name] = {"metrics": run_metrics(ef.labels, p, ef.videos, ef.groups),
                     "predictions": [(str(s), float(q), int(y)) for s, q, y in
                                     zip(ef.sample_ids, p, ef.labels, strict=True)]}
    return out


__all__ = ["PreprocessingInfo", "RunOutcome", "execute_run", "load_external_frames", "load_suite_frames", "run_seed"]
