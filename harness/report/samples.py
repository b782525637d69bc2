"""The handful of frames the report shows, after each arm's preprocessing, and their Grad-CAM maps.

Both are read from the store's ``explanations`` tables, which the explain step
(:mod:`harness.explain`) fills after the runs: the same frames for every arm, two of each class
from the test fold of the run whose model was saved.  Nothing here loads data, filters or builds
a network; a store without explanations (written before the explain step existed, or where it
failed) gives a note that the report prints instead of the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FRAME_NOTES = ("preprocessing failed", "explain failed", "no frame")  # how harness.explain words them
RERUN = "run the suite again into this directory to compute them (finished runs are not repeated)"


@dataclass
class SampleFrames:
    """Chosen frames: ``raw[j]`` (H, W) float in [0, 1]; ``processed[arm][j]`` after the arm's pipeline.

    ``cams[arm][j]`` is the stored Grad-CAM map (or None); ``arm_notes`` what the explain step said
    about an arm (e.g. no checkpoint)."""

    ok: bool
    note: str | None = None
    sample_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    raw: list[np.ndarray] = field(default_factory=list)
    processed: dict[str, list[np.ndarray]] = field(default_factory=dict)
    cams: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    arm_notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prepare(cls, inputs: Any, arms: list[str]) -> SampleFrames:
        """The stored frames of ``arms`` (in that order), read from the store of ``inputs.out_dir``."""
        try:
            table, arm_info = read_explanations(inputs)
        except Exception as exc:
            return cls(False, f"The stored sample frames could not be read ({type(exc).__name__}: {_first_line(exc)}).")
        arm_notes = {
            str(a): str(n) for a, n in zip(arm_info["arm"], arm_info["note"]) if isinstance(n, str) and n and a in arms
        }
        if table.empty:
            why = " ".join(f"{a}: {n}" for a, n in arm_notes.items())
            return cls(False, f"The store holds no sample frames ({why or 'written before the explain step existed'}); "
                       f"{RERUN}.", arm_notes=arm_notes)
        present = [a for a in arms if a in set(table["arm"])]
        if not present:
            return cls(False, "The store holds sample frames of none of the reported arms; " + RERUN + ".",
                       arm_notes=arm_notes)
        first = table[table["arm"] == present[0]].sort_values("position")
        ids = [str(s) for s in first["sample_id"]]
        out = cls(True, None, ids, [str(t) for t in first["title"]], [_unit(r) for r in first["raw"]],
                  arm_notes=arm_notes)
        notes = [f"{a}: no stored frames." for a in arms if a not in present]
        # Notes about the frames themselves (the others concern Grad-CAM and go under its figure).
        notes += [f"{a}: {n}." for a, n in arm_notes.items() if n.startswith(FRAME_NOTES)]
        for arm in present:
            rows = table[table["arm"] == arm].set_index("sample_id")
            if [s for s in ids if s in rows.index] != ids:
                notes.append(f"{arm}: its stored frames differ from the other arms'; not shown.")
                continue
            out.processed[arm] = [np.asarray(rows.at[s, "processed"], dtype=np.float32) for s in ids]
            out.cams[arm] = [None if rows.at[s, "cam"] is None else np.asarray(rows.at[s, "cam"], dtype=np.float32)
                             for s in ids]
        out.note = " ".join(notes) or None
        return out


@dataclass
class CamResult:
    cams: dict[str, list[np.ndarray | None]]
    note: str | None


def gradcams(inputs: Any, frames: SampleFrames) -> CamResult:
    """The stored Grad-CAM maps of ``frames`` (from :meth:`SampleFrames.prepare`) for every arm that has them."""
    if not frames.ok:
        return CamResult({}, frames.note)
    cams = {arm: frames.cams.get(arm) or [None] * len(frames.sample_ids) for arm in frames.processed}
    notes = [f"{arm}: {note}." for arm, note in frames.arm_notes.items() if arm in cams]
    if not any(m is not None for maps in cams.values() for m in maps):
        return CamResult({}, " ".join(notes) or f"The store holds no Grad-CAM maps; {RERUN}.")
    notes += [f"{arm}: no Grad-CAM maps stored." for arm, maps in cams.items()
              if arm not in frames.arm_notes and all(m is None for m in maps)]
    return CamResult(cams, " ".join(notes) or None)


def read_explanations(inputs: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(store.explanations(), store.explanation_arms())`` of the store the report reads."""
    from harness.store import STORE_FILENAME, ResultsStore

    path = getattr(inputs, "store_path", None) or Path(inputs.out_dir) / STORE_FILENAME
    with ResultsStore(path, readonly=True) as store:
        return store.explanations(), store.explanation_arms()


def _unit(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    return image.astype(np.float32) / np.float32(255.0) if image.dtype == np.uint8 else image.astype(np.float32)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
