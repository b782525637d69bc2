"""The metadata columns a ``data:`` section's frames carry, known without loading a frame.

``harness validate`` checks ``report.strata`` against them (``harness run`` checks the loaded
frames' columns again): the simulator writes :data:`harness.data.simulated.META_COLUMNS`,
COVID-BLUES :data:`COVID_BLUES_COLUMNS`, a CSV manifest the columns its ``metadata_columns`` lists.
"""

from __future__ import annotations

import csv
from pathlib import Path

from harness.data.config import CovidBluesData, DataConfig, ManifestData, SimulatedData

#: The metadata of every COVID-BLUES frame (harness.data.covid_blues.read_items; a test keeps them in step).
COVID_BLUES_COLUMNS = ("severity", "blue_point", "pcr", "patient")


def metadata_columns(cfg: DataConfig) -> list[str]:
    """The metadata columns of the frames ``cfg`` loads (no file is read)."""
    if isinstance(cfg, SimulatedData):
        from harness.data.simulated import META_COLUMNS

        return list(META_COLUMNS)
    if isinstance(cfg, CovidBluesData):
        return list(COVID_BLUES_COLUMNS)
    if isinstance(cfg, ManifestData):
        return list(cfg.metadata_columns)  # the loader keeps these columns of the CSV, no others
    raise TypeError(f"data: unknown configuration {type(cfg).__name__}; accepted: simulated, covid-blues, manifest")


def manifest_header(cfg: ManifestData, base_dir: Path) -> list[str] | None:
    """The column names of a manifest's CSV (its first line only); None when it cannot be read (the
    loader says why, in one line, when the data is loaded)."""
    path = Path(cfg.path).expanduser()
    path = path if path.is_absolute() else Path(base_dir) / path
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None if header is None else [c.strip() for c in header]


__all__ = ["COVID_BLUES_COLUMNS", "manifest_header", "metadata_columns"]
