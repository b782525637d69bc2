"""Content overlap between patients and between data sets, found by the frames' pixels.

Two checks, both before any training:

* :func:`cross_group_duplicate`: the same frame (same decoded pixels) under two patients. Patient-
  grouped CV would then put one patient's copy in the training part of the other's test fold: a leak
  that no group-based check can see. The loaders refuse it (copies within one patient are harmless).
* :func:`external_overlap`: an external validation set holding frames (or source files) of the study's
  own data, e.g. the same simulator seed with more patients, or a manifest listing some of its files.

Digests are SHA-256 (first 16 bytes) of each frame's uint8 pixels: 25 ms of a 0.20 s cached load for
COVID-BLUES' 2,683 default frames of 128 x 128 px (44 MB). Constant frames (one grey level everywhere:
a blank or black padding frame) are left out: they carry nothing of a patient, so two patients sharing
one is no leak, and they do repeat (COVID-BLUES: one constant frame in three of patient 39's videos).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.data.frameset import DataError, FrameSet


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """``(N,)`` 16-byte digests (``S16``) of the frames' pixels: equal frames, equal digests."""
    out = np.empty(len(images), dtype="S16")
    for i in range(len(images)):
        out[i] = hashlib.sha256(np.ascontiguousarray(images[i])).digest()[:16]
    return out


def digests_of(frames: FrameSet) -> np.ndarray:
    """The set's pixel digests, computed (and kept on it) when the loader did not."""
    if frames.pixel_digests is None:
        frames.pixel_digests = pixel_digests(frames.images)
    return frames.pixel_digests


def _constant(frame: np.ndarray) -> bool:
    return bool(frame.min() == frame.max())


def cross_group_duplicate(digests: np.ndarray, groups: np.ndarray, images: np.ndarray) -> tuple[int, int] | None:
    """``(i, j)``, ``i < j``: the first frame ``j`` whose pixels equal an earlier frame ``i`` of another
    group (constant frames ignored), or None."""
    first: dict[bytes, int] = {}
    for j, digest in enumerate(digests.tolist()):
        i = first.setdefault(digest, j)
        if i != j and groups[i] != groups[j] and not _constant(images[j]):
            return i, j
    return None


def check_no_cross_group_duplicate(frames: FrameSet, name: Callable[[int], str], what: str = "") -> None:
    """One line (``DataError``) when two patients share a frame; ``name(i)`` says where frame ``i`` comes
    from (a manifest row, a sample id); ``what`` prefixes the message (the data set)."""
    found = cross_group_duplicate(digests_of(frames), frames.groups, frames.images)
    if found is None:
        return
    i, j = found
    gi, gj = str(frames.groups[i]), str(frames.groups[j])
    raise DataError(f"{what}{name(i)} of patient {gi!r} and {name(j)} of patient {gj!r} "
                    "hold an identical frame: under patient-grouped CV one would train on the other's test "
                    "images; accepted: each image under one patient only (remove the copy, or list both under "
                    "the same patient)")


@dataclass(frozen=True)
class Overlap:
    """The external set's frames that are the study's: counts and one example pair."""

    frames: int
    patients: int
    total_frames: int
    total_patients: int
    example: str  # "<external sample id> (patient p) = the study's <sample id> (patient q)"

    def describe(self) -> str:
        return (f"{self.frames} of its {self.total_frames} frames ({self.patients} of its {self.total_patients} "
                f"patients) are the study's own (same pixels or same source file), e.g. {self.example}")


def external_overlap(study: FrameSet, external: FrameSet) -> Overlap | None:
    """The external frames whose pixels (non-constant) or source file are also in the study's data, or None.

    Files are compared too (when both loaders know them), so the study's videos decoded at another
    size, crop or frame step are found although no pixel matches."""
    by_pixels: dict[bytes, int] = {}  # digest -> the study's first frame with it
    for i, digest in enumerate(digests_of(study).tolist()):
        by_pixels.setdefault(digest, i)
    by_file: dict[bytes, int] = {}
    if study.file_digests is not None and external.file_digests is not None:
        for i, digest in enumerate(study.file_digests.tolist()):
            by_file.setdefault(digest, i)
    ext_files = external.file_digests.tolist() if by_file else [None] * len(external)
    hits: list[tuple[int, int]] = []  # (external index, study index)
    for j, digest in enumerate(digests_of(external).tolist()):
        i = by_pixels.get(digest)
        if i is not None and _constant(external.images[j]):
            i = None
        if i is None and ext_files[j]:
            i = by_file.get(ext_files[j])
        if i is not None:
            hits.append((j, i))
    if not hits:
        return None
    j, i = hits[0]
    return Overlap(
        frames=len(hits),
        patients=len({external.groups[j] for j, _ in hits}),
        total_frames=len(external),
        total_patients=len(np.unique(external.groups)),
        example=(f"{external.sample_ids[j]} (patient {external.groups[j]}) = the study's {study.sample_ids[i]} "
                 f"(patient {study.groups[i]})"),
    )


def check_external_overlap(name: str, study: FrameSet, external: FrameSet, policy: str = "refuse") -> str | None:
    """``overlap: refuse`` (default): one line (``DataError``) when the external set ``name`` holds the study's
    frames; ``allow``: the warning line to print instead; None when the sets share nothing."""
    found = external_overlap(study, external)
    if found is None:
        return None
    where = f"evaluation.external.{name}"
    if policy == "allow":
        return f"warning: {where}: {found.describe()}; overlap: allow, so it is scored, but not as an independent set"
    raise DataError(f"{where}: {found.describe()}: it is no external validation; accepted: a set sharing no frame "
                    f"or file with the study's data, or overlap: allow on {where} to score it anyway")
