"""The handful of frames the report shows, after each arm's preprocessing, and their Grad-CAM maps.

The same frames are used for every arm: two of each class, from the test fold of the run whose
model was saved (so Grad-CAM explains frames the network never trained on).  Loading the data,
filtering and rebuilding models are all optional: when something is missing the report says
so in a note instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.report import gradcam

PER_CLASS = 2
CLASS_NAMES = {0: "no B-lines", 1: "B-lines"}


@dataclass
class SampleFrames:
    """Chosen frames: ``raw[j]`` (H, W) float in [0, 1]; ``processed[arm][j]`` after the arm's pipeline."""

    ok: bool
    note: str | None = None
    sample_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    processed: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @classmethod
    def prepare(cls, inputs: Any, arms: list[str]) -> SampleFrames:
        """Load the data of the suite, pick the frames and run every arm's pipeline on them."""
        try:
            from harness.data import load_frames
        except Exception as exc:
            return cls(False, f"The data loader is not available ({type(exc).__name__}: {exc}).")
        try:
            data_cfg = data_config(inputs.suite_dict)
        except Exception as exc:
            return cls(False, f"The stored data section no longer validates ({type(exc).__name__}); no frames shown.")
        meta = inputs.meta
        # Relative data paths resolve against the suite's folder, as when the suite ran.
        base_dir = Path(meta["suite_path"]).parent if meta.get("suite_path") else Path.cwd()
        try:
            from harness.data.cache import default_cache_dir

            cache_dir = Path(meta["cache_dir"]) if meta.get("cache_dir") else default_cache_dir()
            fs = load_frames(data_cfg, base_dir=base_dir, cache_dir=cache_dir)
        except Exception as exc:
            return cls(
                False,
                f"The data could not be loaded here, so no frames are shown "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).",
            )
        ids = choose(inputs, np.asarray(fs.sample_ids).astype(str), np.asarray(fs.labels))
        if not ids:
            return cls(False, "No frame of the data set matches the stored predictions.")
        index = {s: i for i, s in enumerate(np.asarray(fs.sample_ids).astype(str))}
        labels = np.asarray(fs.labels)
        raw = [np.asarray(fs.images[index[s]], dtype=np.float32) / 255.0 for s in ids]
        titles = [f"{CLASS_NAMES.get(int(labels[index[s]]), str(labels[index[s]]))}\n{_short(s)}" for s in ids]
        out = cls(True, None, ids, titles, raw, {})
        notes = []
        stack = np.stack([np.asarray(fs.images[index[s]]) for s in ids])[:, None]  # (N, 1, H, W) uint8
        for arm in arms:
            steps = _preprocess(inputs.suite_dict, arm)
            if not steps:
                out.processed[arm] = list(raw)
                continue
            try:
                from diffusion_filters import Pipeline

                filtered = np.asarray(Pipeline.from_config(steps)(stack), dtype=np.float32)
                out.processed[arm] = [filtered[j, 0] for j in range(len(ids))]
            except Exception as exc:
                notes.append(f"{arm}: preprocessing failed here ({type(exc).__name__}: {exc}); raw frames shown.")
                out.processed[arm] = list(raw)
        out.note = " ".join(notes) or None
        return out


def data_config(suite_dict: dict[str, Any]) -> Any:
    """The suite's data section as its pydantic model (validated on its own, so that a suite whose
    arms no longer validate, e.g. a renamed filter, still shows its frames)."""
    from pydantic import TypeAdapter

    from harness.data.config import DataConfig

    return TypeAdapter(DataConfig).validate_python(suite_dict["data"])


def model_config(suite_dict: dict[str, Any], arm: str) -> Any:
    """The arm's model config (suite model with the arm's override deep-merged), without weights:
    the checkpoint provides them."""
    from harness.suite import ModelConfig, deep_merge

    override = next((a.get("model") or {} for a in suite_dict.get("arms", []) if a.get("name") == arm), {})
    merged = deep_merge(suite_dict.get("model") or {}, override)
    merged["pretrained"] = "none"
    return ModelConfig.model_validate(merged)


def _short(sample_id: str, width: int = 22) -> str:
    return sample_id if len(sample_id) <= width else "…" + sample_id[-(width - 1) :]


def _preprocess(suite_dict: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    for a in suite_dict.get("arms", []):
        if a.get("name") == arm:
            return list(a.get("preprocess") or [])
    return []


def checkpoint_run(inputs: Any) -> tuple[int, int] | None:
    """(repeat, fold) of the saved models (the first done run that has a checkpoint)."""
    done = inputs.done
    if "checkpoint" not in done.columns:
        return None
    with_ckpt = done[done["checkpoint"].notna() & (done["checkpoint"].astype(str) != "")]
    if not len(with_ckpt):
        return None
    row = with_ckpt.sort_values(["repeat", "fold"]).iloc[0]
    return int(row["repeat"]), int(row["fold"])


def choose(inputs: Any, sample_ids: np.ndarray, labels: np.ndarray, per_class: int = PER_CLASS) -> list[str]:
    """``per_class`` frames of each class, from distinct patients where possible, deterministic.

    Candidates are the test frames of the saved models' run (else every predicted frame, else
    all frames); within a class they are sorted by id and taken at evenly spaced positions.
    """
    pred = inputs.predictions
    known = set(sample_ids.tolist())
    pool: dict[int, list[tuple[str, str]]] = {}
    if len(pred):
        key = checkpoint_run(inputs)
        sel = pred if key is None else pred[(pred["repeat"] == key[0]) & (pred["fold"] == key[1])]
        sel = sel.drop_duplicates("sample_id")
        for s, g, y in zip(sel["sample_id"].astype(str), sel["group_id"].astype(str), sel["label"]):
            if s in known:
                pool.setdefault(int(y), []).append((s, g))
    if not pool:
        for s, y in zip(sample_ids.tolist(), labels.tolist()):
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


@dataclass
class CamResult:
    cams: dict[str, list[np.ndarray | None]]
    note: str | None


def checkpoint_path(inputs: Any, arm: str) -> Path:
    """The arm's saved model: ``meta.checkpoints[arm]`` (relative to the output), else the
    conventional ``checkpoints/<arm>.safetensors``."""
    rel = (inputs.meta.get("checkpoints") or {}).get(arm)
    path = Path(rel) if rel else Path("checkpoints") / f"{arm}.safetensors"
    return path if path.is_absolute() else inputs.out_dir / path


def gradcams(inputs: Any, frames: SampleFrames) -> CamResult:
    """Grad-CAM maps of the chosen frames for every arm with a usable checkpoint."""
    import torch

    try:
        from harness.models import create_model, load_weights
    except Exception as exc:
        return CamResult({}, f"The model code is not available ({type(exc).__name__}: {exc}); no Grad-CAM.")
    cams: dict[str, list[np.ndarray | None]] = {}
    notes = []
    for arm, images in frames.processed.items():

        def build(arm: str = arm) -> torch.nn.Module:
            model = create_model(model_config(inputs.suite_dict, arm), in_chans=1)
            load_weights(model, checkpoint_path(inputs, arm))
            return model

        result = gradcam.arm_cams(
            checkpoint_path(inputs, arm),
            build,
            images,
            lambda x: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(1),
        )
        if isinstance(result, str):
            notes.append(f"{arm}: {result}.")
            cams[arm] = [None] * len(images)
        else:
            cams[arm] = list(result)
    if not any(m is not None for maps in cams.values() for m in maps):
        return CamResult({}, " ".join(notes) or "No checkpoint was saved.")
    return CamResult(cams, " ".join(notes) or None)
