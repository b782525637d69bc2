"""Seed ensembles: S networks per run, same split, different training seeds, predictions averaged.

Each run's score moves with its training seed as much as with any arm's effect (per-run SD of the
baseline-vs-noise-floor difference 0.044 on COVID-BLUES), and more repeats cannot shrink the corrected
interval by more than ~15 % (its factor sqrt(1/(k r) + n_test/n_train) is bounded below). Averaging the
probabilities of ``training.seeds`` networks per (arm, repeat, fold) removes that part of the noise
inside the run. Member ``k`` of an arm with ``seed_offset`` o trains with the seed of offset
``o * S + k`` (:func:`member_offsets`): with S = 1 that is the run's seed as before, and the seed-noise
arm (``seed_offset: 1``) draws a set disjoint from the baseline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from harness.training.fit import FitResult

#: Timings that add up over the members (the ensemble costs S trainings and S forward passes per image).
SUMMED = ("data_seconds", "train_seconds", "forward_seconds", "backward_seconds", "optimizer_seconds",
          "eval_seconds", "inference_ms_per_image", "inference_ms_single_image", "single_image_batches_merged")


def member_offsets(seed_offset: int, seeds: int) -> list[int]:
    """The seed offsets of an arm's ``seeds`` members: ``seed_offset * seeds + k``, disjoint across offsets."""
    return [seed_offset * seeds + k for k in range(seeds)]


def combine(members: Sequence[FitResult]) -> FitResult:
    """One result from the members: probabilities averaged, costs added up; the first member's history,
    learned parameters, selected epoch, diagnosis and weights (what the report shows of one network)."""
    if len(members) == 1:
        return members[0]
    first = members[0]
    timings: dict[str, Any] = dict(first.timings)
    for key in SUMMED:
        values = [m.timings.get(key) for m in members]
        if all(isinstance(v, (int, float)) for v in values):
            timings[key] = float(sum(values)) if key != "single_image_batches_merged" else int(sum(values))
    timings["peak_rss_mb"] = max(float(m.timings.get("peak_rss_mb") or 0.0) for m in members)
    rates = [(m.timings.get("train_images_per_second"), m.timings.get("train_seconds")) for m in members]
    if all(isinstance(r, (int, float)) and isinstance(s, (int, float)) for r, s in rates):
        total = sum(s for _, s in rates)
        timings["train_images_per_second"] = sum(r * s for r, s in rates) / total if total > 0 else None
    extra = {name: np.mean([m.extra_probs[name] for m in members], axis=0) for name in first.extra_probs}
    return replace(first, test_probs=np.mean([np.asarray(m.test_probs, dtype=np.float64) for m in members], axis=0),
                   timings=timings, extra_probs=extra)


def member_record(seeds: Sequence[int], members: Sequence[FitResult], scores: Sequence[dict[str, float]]) -> dict:
    """What the store keeps of an ensemble (run column ``ensemble``): each member's seed, selected epoch,
    fit status and primary scores, and the spread of those scores across the members."""
    keys = sorted({k for s in scores for k in s})
    spread = {}
    for key in keys:
        values = np.array([s.get(key, np.nan) for s in scores], dtype=np.float64)
        finite = values[np.isfinite(values)]
        spread[key] = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return {"seeds": [int(s) for s in seeds], "n": len(seeds),
            "members": [{"seed": int(s), "best_epoch": int(m.best_epoch), "fit": m.diagnosis.as_dict().get("status"),
                         "scores": dict(sc)} for s, m, sc in zip(seeds, members, scores)],
            "member_sd": spread}


__all__ = ["SUMMED", "combine", "member_offsets", "member_record"]
