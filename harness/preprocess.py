"""An arm's preprocessing pipeline over all frames, computed once and cached on disk.

The cache key is ``sha256(FrameSet.content_hash, canonical pipeline config, filters version)``: a
different data set, decoding or filter parameter misses, and so does a change to the filters' code
or to this module (:func:`harness.versions.filters_version`; docstring edits do not count); a
renamed suite or arm hits. Entries are float32
``.npy`` files opened memory-mapped (read-only), with a JSON sidecar holding the seconds the
computation took and the number of images, so every later run reports the true cost, and the
``.npy`` file's checksum, verified when it is read (an entry changed on disk is recomputed, with one
warning line naming the file; :func:`harness.data.cache.matches_checksum`).

Frames are filtered in batches with ``torch.no_grad`` and clipped to [0, 1] (the training
contract's input range; diffusion keeps values within the input range up to rounding, other
filters may overshoot slightly). Workers computing the same entry at once wait on a file lock
instead of duplicating the work.

Arms with ``on_the_fly: true`` are not cached: :func:`on_the_fly_filter` returns the callable
that training applies to each batch after augmentation.

A step may name a function or module of the user's (``callable:`` / ``module:``,
:mod:`diffusion_filters.external`): ``base_dir`` (the suite's folder) is where its module file may
lie, and its code's identity is part of the canonical config, hence of the pipeline hash and the
cache key: an edited module file misses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.data.cache import CHECKSUM_KEY, matches_checksum
from harness.suite import pipeline_config, sha256_of
from harness.versions import file_sha256

CACHE_KIND = "preprocessed"


@dataclass
class Preprocessed:
    """Filtered frames (N, H, W) float32 in [0, 1] and what computing them cost."""

    images: np.ndarray
    pipeline_hash: str
    seconds: float
    n_images: int
    cached: bool
    mode: str = "cached"


def pipeline_hash(steps: list[dict[str, Any]], base_dir: Path | None = None) -> str:
    """Hash of the canonical pipeline config (``"none"`` for an empty pipeline)."""
    return sha256_of(pipeline_config(steps, base_dir))[:16] if steps else "none"


def cache_key(content_hash: str, steps: list[dict[str, Any]], base_dir: Path | None = None) -> str:
    """The cache entry of ``steps`` over frames of ``content_hash`` with the current filter code."""
    from harness.versions import filters_version

    return sha256_of({"frames": content_hash, "pipeline": pipeline_hash(steps, base_dir), "code": filters_version()})


def _build(steps: list[dict[str, Any]], base_dir: Path | None = None) -> torch.nn.Module:
    import diffusion_filters

    return diffusion_filters.Pipeline.from_config(steps, base_dir=base_dir).eval()


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 frames as float32 intensities in [0, 1] (other dtypes: float32 as they are)."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0) if images.dtype == np.uint8 \
        else np.asarray(images, dtype=np.float32)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def apply_pipeline(module: torch.nn.Module, images: np.ndarray, out: np.ndarray, batch_size: int = 64) -> None:
    """Filter ``images`` (N, H, W) into ``out`` (N, H, W) float32, batch by batch."""
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(to_unit(images[start:start + batch_size])).unsqueeze(1)
            y = module(x)
            if not torch.all(torch.isfinite(y)):
                raise FloatingPointError(f"preprocessing produced NaN/Inf in frames {start}..{start + len(x) - 1}")
            out[start:start + len(x)] = y.squeeze(1).clamp_(0.0, 1.0).numpy()


def preprocess_frames(images: np.ndarray, content_hash: str, steps: list[dict[str, Any]],
                      cache_dir: str | Path, batch_size: int = 64, base_dir: Path | None = None) -> Preprocessed:
    """The frames after ``steps`` (cached); an empty pipeline just scales uint8 to [0, 1]."""
    if not steps:
        return Preprocessed(to_unit(images), "none", 0.0, len(images), cached=False, mode="none")
    config = pipeline_config(steps, base_dir)  # resolved once: the hash, the key and the module agree
    phash = sha256_of(config)[:16]
    if not content_hash:
        raise ValueError("preprocess_frames: the frames have no content_hash to key the cache")
    from harness.versions import filters_version

    key = sha256_of({"frames": content_hash, "pipeline": phash, "code": filters_version()})
    folder = Path(cache_dir) / CACHE_KIND / key[:2]
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    with _locked(folder / f"{key}.lock"):
        if npy.exists() and meta.exists():
            try:
                info = json.loads(meta.read_text())
                if matches_checksum(npy, info[CHECKSUM_KEY]):
                    array = np.load(npy, mmap_mode="r", allow_pickle=False)
                    if array.shape == images.shape:
                        return Preprocessed(array, phash, float(info["seconds"]), int(info["n_images"]), cached=True)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a damaged entry is recomputed
        module = _build(config, base_dir)
        tmp = folder / f"{key}.{os.getpid()}.tmp.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=images.shape)
        t0 = time.perf_counter()
        apply_pipeline(module, images, out, batch_size)
        seconds = time.perf_counter() - t0
        out.flush()
        del out
        checksum = file_sha256(tmp)
        os.replace(tmp, npy)
        meta.write_text(json.dumps({"seconds": seconds, "n_images": int(len(images)),
                                    "pipeline": config, "frames": content_hash,
                                    "threads": torch.get_num_threads(), CHECKSUM_KEY: checksum}))
    return Preprocessed(np.load(npy, mmap_mode="r", allow_pickle=False), phash, seconds, len(images), cached=False)


def on_the_fly_filter(steps: list[dict[str, Any]],
                      base_dir: Path | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The pipeline as a batch function for training (after augmentation), without gradients."""
    module = _build(steps, base_dir)

    def apply(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x).clamp(0.0, 1.0)

    return apply
