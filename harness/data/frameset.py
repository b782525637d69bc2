"""The loaded dataset handed to the engine: frames, labels, groups, videos, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A data problem; ``str(err)`` is one line naming the file or row and what is accepted."""



def spread(n: int, m: int) -> np.ndarray:
    """``m`` of ``n`` positions spread evenly from the first to the last (all ``n`` when ``m >= n``): the
    frames kept of a clip (``frame_sampling: spread``), the images BatchNorm is re-estimated on."""
    if m >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, m)).astype(int))

@dataclass
class FrameSet:
    """Grayscale frames and their labels (see docs/architecture.md, section harness.data).

    ``images`` is ``(N, H, W)`` uint8, possibly a read-only memmap into the cache;
    ``labels`` is ``(N,)`` int64 with 1 = B-lines present; ``groups`` the patient ids (CV unit);
    ``videos`` the source video of each frame; ``sample_ids`` unique, stable ids
    (``patient_1_L3#12`` = frame 12 of video ``patient_1_L3``); ``metadata`` one row per frame;
    ``skipped`` the items left out with ``on_error: skip``; ``content_hash`` keys downstream caches;
    ``pixel_digests`` / ``file_digests`` (optional, ``(N,)`` bytes) each frame's pixel digest and its
    source file's, for the overlap checks (:mod:`harness.data.overlap`; None = not known).
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    videos: np.ndarray
    sample_ids: np.ndarray
    metadata: pd.DataFrame
    skipped: list[dict] = field(default_factory=list)
    content_hash: str = ""
    description: str = ""
    pixel_digests: np.ndarray | None = None
    file_digests: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise DataError(f"FrameSet.images must be (N, H, W) uint8, got {self.images.shape} {self.images.dtype}")
        for name in ("labels", "groups", "videos", "sample_ids"):
            if len(getattr(self, name)) != n:
                raise DataError(f"FrameSet.{name} has {len(getattr(self, name))} entries for {n} images")
        if len(self.metadata) != n:
            raise DataError(f"FrameSet.metadata has {len(self.metadata)} rows for {n} images")
        for name in ("pixel_digests", "file_digests"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise DataError(f"FrameSet.{name} has {len(getattr(self, name))} entries for {n} images")
        if len(set(self.sample_ids.tolist())) != n:
            raise DataError("FrameSet.sample_ids are not unique")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> FrameSet:
        """Frames at ``index`` (boolean mask or integer indices), metadata re-indexed from 0."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return FrameSet(
            images=self.images[index],
            labels=self.labels[index],
            groups=self.groups[index],
            videos=self.videos[index],
            sample_ids=self.sample_ids[index],
            metadata=self.metadata.iloc[index].reset_index(drop=True),
            skipped=list(self.skipped),
            content_hash=self.content_hash,
            description=self.description,
            pixel_digests=None if self.pixel_digests is None else self.pixel_digests[index],
            file_digests=None if self.file_digests is None else self.file_digests[index],
        )
