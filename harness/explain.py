"""The explain step: the report's sample frames after each arm's preprocessing, and their Grad-CAM maps.

The driver (:func:`harness.runner.run_suite`) calls :func:`explain_suite` once after the runs. It
picks a few frames (:func:`choose`: two of each class from the test fold of the run whose models
were saved, so Grad-CAM explains frames the networks never trained on; the same frames for every
arm), filters them with each arm's pipeline exactly as training's inputs were filtered, rebuilds
each arm's network from its checkpoint (``checkpoints/<arm>.safetensors``, the ``checkpoint`` of
the arm's done run) and computes Grad-CAM maps of the B-lines class (:mod:`harness.gradcam`).
Everything goes to the store's ``explanations`` tables; the report only reads them and so never
builds a network or decodes data.

An arm's explanations are keyed by the SHA-256 of its checkpoint file, the chosen frames, the
data's content hash, its pipeline and model config and whether Grad-CAM is on: a resumed suite
whose key is unchanged reuses them, a changed checkpoint replaces them, and arms no longer in the
suite are dropped. Nothing here raises: a failure becomes the arm's note (and is retried on the
next run), so no run result is ever lost to it.

Example::

    summary = explain_suite(suite, out_dir, store, frames)   # after the runs
    summary.line   # 'explanations: 2 arms computed, 0 reused'
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.preprocess import apply_pipeline, to_unit
from harness.store import ResultsStore
from harness.suite import Suite, pipeline_config, sha256_of
from harness.versions import file_sha256

EXPLAIN_VERSION = 1  # part of every key: bump when what is computed changes
PER_CLASS = 2
CLASS_NAMES = {0: "no B-lines", 1: "B-lines"}
FAILED = "failed:"  # prefix of the key of an arm whose computation raised: retried next time


@dataclass
class ExplainSummary:
    """What :func:`explain_suite` did: arms computed, arms reused, and a note per arm that has one."""

    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def line(self) -> str:
        text = f"explanations: {len(self.computed)} arms computed, {len(self.reused)} reused"
        if self.notes:
            text += "; " + "; ".join(f"{arm}: {note}" for arm, note in self.notes.items())
        return text


def explain_suite(suite: Suite, out_dir: str | Path, store: ResultsStore, frames: Any,
                  gradcam: bool | None = None) -> ExplainSummary:
    """Compute (or reuse) every arm's sample frames and Grad-CAM maps into ``store``; never raises.

    Args:
        suite: the validated suite that ran.
        out_dir: its output directory (checkpoint paths in the store are relative to it).
        store: the writable results store, after the runs were recorded.
        frames: the suite's ``harness.data.FrameSet`` (``harness.runner.load_suite_frames``).
        gradcam: compute Grad-CAM maps (default: the suite's ``report.gradcam``); without them
            only the filtered frames are stored.
    """
    try:
        return _explain(suite, Path(out_dir), store, frames, suite.report.gradcam if gradcam is None else gradcam)
    except Exception as exc:  # the run results are in the store already; say what failed
        note = f"explain failed: {_describe(exc)}"
        summary = ExplainSummary()
        for run in suite.run_arms():
            try:
                store.put_explanations(run.name, FAILED + "explain", [], note=note)
            except Exception:
                pass
            summary.notes[run.name] = note
        return summary


@dataclass
class _Frames:
    """The chosen frames: ``raw`` (N, H, W) as decoded, with their ids, labels and titles."""

    ids: list[str]
    labels: list[int]
    titles: list[str]
    raw: np.ndarray
    content_hash: str


def _explain(suite: Suite, out_dir: Path, store: ResultsStore, frames: Any, gradcam: bool) -> ExplainSummary:
    summary = ExplainSummary()
    store.keep_explanations([r.name for r in suite.run_arms()])
    done = store.runs(status="done")
    sample_ids = np.asarray(frames.sample_ids).astype(str)
    labels = np.asarray(frames.labels)
    ids = choose(store.predictions(), done, sample_ids, labels)
    index = {s: i for i, s in enumerate(sample_ids.tolist())}
    rows = [index[s] for s in ids]
    chosen = _Frames(
        ids, [int(labels[i]) for i in rows],
        [f"{CLASS_NAMES.get(int(labels[i]), str(labels[i]))}\n{_short(s)}" for s, i in zip(ids, rows)],
        np.stack([np.asarray(frames.images[i]) for i in rows]) if rows else np.zeros((0, 1, 1), np.uint8),
        str(frames.content_hash),
    )
    stored = store.explanation_arms().set_index("arm")["key"].to_dict()
    for run in suite.run_arms():  # each arm's own runs, and its ~tuned / ~untuned variant
        try:
            computed, note = _explain_arm(suite, run, out_dir, store, chosen, done, gradcam, stored.get(run.name))
            (summary.computed if computed else summary.reused).append(run.name)
        except Exception as exc:  # e.g. the store refused a row: this arm only
            note = f"explain failed: {_describe(exc)}"
            try:
                store.put_explanations(run.name, FAILED + "explain", [], note=note)
            except Exception:
                pass
        if note:
            summary.notes[run.name] = note
    return summary


def _explain_arm(suite: Suite, run: Any, out_dir: Path, store: ResultsStore, chosen: _Frames, done: pd.DataFrame,
                 gradcam: bool, stored_key: str | None) -> tuple[bool, str | None]:
    """Explain one arm unless its stored key is current; returns (computed, note)."""
    t0 = time.perf_counter()
    ckpt = checkpoint_of(done, out_dir, run.name)
    ckpt_hash = file_sha256(ckpt) if ckpt is not None and ckpt.is_file() else None
    arm = trained_arm(run.name, run.arm, store, done)  # a tuned run's checkpoint: trained on its chosen parameters
    model_cfg = suite.arm_model(arm).model_copy(update={"pretrained": "none"})  # the checkpoint has the weights
    key = sha256_of({
        "version": EXPLAIN_VERSION, "data": chosen.content_hash, "samples": chosen.ids, "gradcam": bool(gradcam),
        "pipeline": pipeline_config(arm.preprocess, suite.base_dir), "model": model_cfg.model_dump(mode="json"),
        "checkpoint": ckpt_hash,
    })
    if stored_key == key:
        return False, None
    note, failed = None, False
    processed, cams = to_unit(chosen.raw), [None] * len(chosen.ids)
    if not chosen.ids:
        note = "no frame to show (no stored predictions match the data)"
    else:
        try:
            processed = filter_frames(arm.preprocess, chosen.raw, base_dir=suite.base_dir)
        except Exception as exc:
            note, failed = f"preprocessing failed ({_describe(exc)}); raw frames shown, no Grad-CAM", True
        if gradcam and not failed:
            if ckpt is None:
                note = "no checkpoint saved (its repeat-0 / fold-0 run is not done); no Grad-CAM"
            elif ckpt_hash is None:
                note = f"checkpoint {ckpt} is missing; no Grad-CAM"
            else:
                try:
                    cams = arm_cams(model_cfg, ckpt, processed)
                except Exception as exc:
                    note, failed = f"Grad-CAM failed for {ckpt.name}: {_describe(exc)}", True
    store.put_explanations(
        run.name, FAILED + key if failed else key,
        [{"sample_id": s, "label": y, "title": t, "raw": chosen.raw[j], "processed": processed[j], "cam": cams[j]}
         for j, (s, y, t) in enumerate(zip(chosen.ids, chosen.labels, chosen.titles))],
        note=note, checkpoint_hash=ckpt_hash, seconds=time.perf_counter() - t0,
    )
    return True, note


# --------------------------------------------------------------------------- the pieces


def checkpoint_run(done: pd.DataFrame) -> tuple[int, int] | None:
    """(repeat, fold) of the saved models: the first done run that has a checkpoint."""
    if "checkpoint" not in done.columns:
        return None
    with_ckpt = done[done["checkpoint"].notna() & (done["checkpoint"].astype(str) != "")]
    if not len(with_ckpt):
        return None
    row = with_ckpt.sort_values(["repeat", "fold"]).iloc[0]
    return int(row["repeat"]), int(row["fold"])


def trained_arm(name: str, arm: Any, store: ResultsStore, done: pd.DataFrame) -> Any:
    """``arm`` as the run of ``name`` (its stored name) whose checkpoint is explained trained it: with
    the parameters its nested search chose (preprocessing, model, recipe) when the run was tuned, else
    as the suite says."""
    from harness.suite.search import apply_params

    rows = done[(done["arm"] == name) & done["checkpoint"].notna() & (done["checkpoint"].astype(str) != "")] \
        if "checkpoint" in done.columns else done.iloc[:0]
    if not len(rows):
        return arm
    run = rows.sort_values(["repeat", "fold"]).iloc[0]
    searches = store.searches()
    match = searches[(searches["arm"] == name) & (searches["repeat"] == int(run["repeat"]))
                     & (searches["fold"] == int(run["fold"]))] if len(searches) else searches
    params = (match.iloc[0]["record"] or {}).get("params") if len(match) else None
    return apply_params(arm, dict(params)) if params else arm


def checkpoint_of(done: pd.DataFrame, out_dir: Path, arm: str) -> Path | None:
    """The arm's saved model: the ``checkpoint`` of its done run (relative to ``out_dir``), or None.

    The run's column, not ``meta.checkpoints``: a run redone with a new config clears it, so a file
    left by an older config is never explained as the current model."""
    rows = done[(done["arm"] == arm) & done["checkpoint"].notna() & (done["checkpoint"].astype(str) != "")]
    if not len(rows):
        return None
    path = Path(str(rows.sort_values(["repeat", "fold"]).iloc[0]["checkpoint"]))
    return path if path.is_absolute() else out_dir / path


def choose(predictions: pd.DataFrame, done: pd.DataFrame, sample_ids: np.ndarray, labels: np.ndarray,
           per_class: int = PER_CLASS) -> list[str]:
    """``per_class`` frames of each class, from distinct patients where possible, deterministic.

    Candidates are the test frames of the saved models' run (else every predicted frame, else
    all frames); within a class they are sorted by id and taken at evenly spaced positions.
    ``predictions`` and ``done`` are the store's ``predictions()`` and ``runs(status="done")``.
    """
    known = set(np.asarray(sample_ids).astype(str).tolist())
    pool: dict[int, list[tuple[str, str]]] = {}
    if len(predictions):
        key = checkpoint_run(done)
        sel = predictions if key is None else predictions[
            (predictions["repeat"] == key[0]) & (predictions["fold"] == key[1])]
        sel = sel.drop_duplicates("sample_id")
        for s, g, y in zip(sel["sample_id"].astype(str), sel["group_id"].astype(str), sel["label"]):
            if s in known:
                pool.setdefault(int(y), []).append((s, g))
    if not pool:
        for s, y in zip(np.asarray(sample_ids).astype(str).tolist(), np.asarray(labels).tolist()):
            pool.setdefault(int(y), []).append((s, s))
    chosen: list[str] = []
    for y in sorted(pool):
        cands = sorted(pool[y])
        picked: list[str] = []
        groups: set[str] = set()
        positions = np.linspace(0, len(cands) - 1, num=min(len(cands), 4 * per_class)).round().astype(int)
        for i in positions:  # spread over the sorted list, one frame per patient first
            s, g = cands[i]
            if g not in groups and len(picked) < per_class:
                picked.append(s)
                groups.add(g)
        for s, _ in cands:
            if len(picked) >= per_class:
                break
            if s not in picked:
                picked.append(s)
        chosen.extend(picked)
    return chosen


def filter_frames(steps: Sequence[dict[str, Any]], images: np.ndarray, base_dir: Path | None = None) -> np.ndarray:
    """``images`` (N, H, W) after the pipeline ``steps``, float32 in [0, 1], exactly as training's
    inputs (:func:`harness.preprocess.apply_pipeline`); an empty pipeline only scales uint8.
    ``base_dir``: the suite's folder (a ``callable:`` / ``module:`` step's module file)."""
    if not steps:
        return to_unit(images)
    import diffusion_filters

    out = np.empty(images.shape, dtype=np.float32)
    apply_pipeline(diffusion_filters.Pipeline.from_config(list(steps), base_dir=base_dir).eval(), images, out)
    return out


def arm_cams(model_cfg: Any, checkpoint: Path, images: np.ndarray) -> list[np.ndarray]:
    """Grad-CAM maps (each (H, W) float32 in [0, 1]) of ``images`` (N, H, W) float32, the arm's
    preprocessed frames, for the network of ``model_cfg`` with the weights in ``checkpoint``."""
    import torch

    from harness.gradcam import compute_cams
    from harness.models import create_model, load_weights

    model = create_model(model_cfg, in_chans=1)
    load_weights(model, checkpoint)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return compute_cams(model.eval(), torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1))


def _short(sample_id: str, width: int = 22) -> str:
    return sample_id if len(sample_id) <= width else "…" + sample_id[-(width - 1):]


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


__all__ = ["ExplainSummary", "arm_cams", "checkpoint_of", "checkpoint_run", "choose", "explain_suite",
           "filter_frames"]
