"""Simulated data as a :class:`FrameSet`, cached by (simulator source, config, seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.data import simulator
from harness.data.cache import FrameCache, hash_json, source_hash
from harness.data.config import SimulatedData
from harness.data.frameset import FrameSet
from harness.data.overlap import check_no_cross_group_duplicate, pixel_digests

META_COLUMNS = ["patient", "b_line_count", "confluent", "speckle", "speckle_level", "b_line_contrast",
                "depth_cm", "pleura_depth_cm", "gain_db", "probe"]


def load_simulated(cfg: SimulatedData, cache_dir: Path | None, seed: int) -> FrameSet:
    """Render (or reuse) the frames; the table is recomputed (cheap) from the scene stream."""
    seed = cfg.seed if cfg.seed is not None else seed
    params = cfg.model_dump(mode="json", exclude={"seed"})
    key = hash_json({"simulator": source_hash(simulator), "config": params, "seed": seed})
    cache = FrameCache(cache_dir) if cache_dir is not None else None
    hit = cache.load("simulated", key) if cache else None
    rows: list[dict] = []
    stacks = []
    for patient, clips, streams in simulator.iterate_patients(cfg, seed):
        if hit is None:
            patient_rows, stack = simulator.render_patient(cfg, patient, clips, streams)
            stacks.append(stack)
        else:
            patient_rows = simulator.table_rows(cfg, patient, clips)
        rows.extend(patient_rows)
    if hit is None:
        images = np.concatenate(stacks)
        if cache:
            cache.save("simulated", key, images, {"n": len(images)})
            reopened = cache.load("simulated", key)
            images = reopened[0] if reopened else images
    else:
        images = hit[0]
    table = pd.DataFrame(rows)
    n_pos = int(table["label"].sum())
    description = (
        f"physics-based simulator: {cfg.patients} patients x {cfg.frames_per_patient} frames "
        f"({cfg.frames_per_video} per clip), {cfg.probe} probe, {cfg.image_size}x{cfg.image_size}, "
        f"B-line prevalence {cfg.b_line_prevalence:g} ({n_pos}/{len(table)} positive frames), "
        f"B-line contrast {cfg.b_line_contrast:g}, speckle {cfg.speckle:g}, seed {seed}"
    )
    frames = FrameSet(
        images=images,
        labels=table["label"].to_numpy(np.int64),
        groups=table["group"].to_numpy(str),
        videos=table["video"].to_numpy(str),
        sample_ids=table["sample_id"].to_numpy(str),
        metadata=table[META_COLUMNS].reset_index(drop=True),
        skipped=[],
        content_hash=hash_json({"key": key, "rows": rows}),
        description=description,
        pixel_digests=pixel_digests(images),
    )
    # speckle is drawn per frame, so two patients never share a frame; a simulator change that made
    # them would be a leak
    check_no_cross_group_duplicate(frames, lambda i: f"sample {frames.sample_ids[i]}", "simulated data: ")
    return frames
