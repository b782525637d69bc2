"""Lung-ultrasound data: a physics-based simulator, COVID-BLUES and any CSV manifest.

Example::

    from harness.data import load_frames, SimulatedData
    frames = load_frames(SimulatedData(patients=10), base_dir=Path("suites"), seed=0)
    frames.images.shape, frames.labels.mean()

See docs/data.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.data.cache import check_cache_dir, default_cache_dir
from harness.data.config import CovidBluesData, DataConfig, ManifestData, SimulatedData
from harness.data.frameset import DataError, FrameSet


def load_frames(cfg: DataConfig, base_dir: Path, cache_dir: Path | None = None, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> FrameSet:
    """Load the frames a suite's ``data:`` section describes.

    ``base_dir`` resolves relative paths (the suite's folder); ``cache_dir`` holds decoded frames
    (None = :func:`default_cache_dir`); ``seed`` is the suite's seed, used by the simulator when its
    own ``seed`` is null. Raises :class:`DataError` (one line, naming the file or row, or the cache folder
    when it cannot be written).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    check_cache_dir(cache)  # a read-only cache folder or a file: one line before anything is decoded
    base_dir = Path(base_dir)
    if isinstance(cfg, SimulatedData):
        from harness.data.simulated import load_simulated

        return load_simulated(cfg, cache, seed)
    if isinstance(cfg, CovidBluesData):
        from harness.data.covid_blues import load_covid_blues

        return load_covid_blues(cfg, base_dir, cache, progress)
    if isinstance(cfg, ManifestData):
        from harness.data.manifest import load_manifest

        return load_manifest(cfg, base_dir, cache, progress)
    raise DataError(f"data: unknown configuration {type(cfg).__name__}; accepted: simulated, covid-blues, manifest")


__all__ = ["CovidBluesData", "DataConfig", "DataError", "FrameSet", "ManifestData", "SimulatedData",
           "default_cache_dir", "load_frames"]
