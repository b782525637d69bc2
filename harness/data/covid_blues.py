"""COVID-BLUES (Maastricht UMC+, 63 patients, 362 convex-probe videos, CC BY-NC-ND 4.0).

Layout read as published::

    DIR/lus_videos/patient_<ID>_<POINT>[_2].mp4   POINT in L1..L3, R1..R3
    DIR/severity.csv           video_file, Severity Score, A-lines, B-lines, comments
    DIR/clinical_variables.csv patient_id, cov_test (PCR 1/0), ...

Label = the experts' ``B-lines`` (values carry stray spaces: ``'yes '``); group = patient id from
the file name; metadata = ``severity`` (0-3), ``blue_point`` and ``pcr`` (positive/negative).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from harness.data.config import CovidBluesData
from harness.data.frameset import DataError, FrameSet
from harness.data.media import Item, every, load_items, normalise_label
from harness.data.video import DecodeParams

ENV = "LUS_COVID_BLUES"
NAME = re.compile(r"^patient_(?P<patient>\d+)_(?P<point>[LR][1-3])(?P<repeat>_\d+)?$")
LAYOUT = ("lus_videos/patient_<ID>_<POINT>[_2].mp4, severity.csv (video_file, B-lines, Severity Score), "
          "clinical_variables.csv (patient_id, cov_test)")


def dataset_dir(cfg: CovidBluesData, base_dir: Path) -> Path:
    """``cfg.path`` (relative to the suite's folder) or ``$LUS_COVID_BLUES`` (relative to the working directory)."""
    if cfg.path:
        path = Path(cfg.path).expanduser()
        return path if path.is_absolute() else base_dir / path
    raw = os.environ.get(ENV)
    if not raw:
        raise DataError(f"data.path: COVID-BLUES location unknown; set data.path or the environment variable {ENV} "
                        f"to the dataset folder ({LAYOUT}); `python -m harness data fetch covid-blues --dest DIR` downloads it")
    return Path(raw).expanduser().resolve()


def check_layout(root: Path) -> None:
    """One error naming what is missing and the expected layout."""
    missing = [p for p in ("lus_videos", "severity.csv", "clinical_variables.csv") if not (root / p).exists()]
    if missing:
        raise DataError(f"{root}: not a COVID-BLUES folder (missing {', '.join(missing)}); expected: {LAYOUT}")


def read_items(root: Path, on_error: str = "fail") -> tuple[list[Item], list[dict]]:
    """One item per video listed in severity.csv, plus the rows left out (``on_error: skip``) and
    the videos without a row."""
    check_layout(root)
    sev_path, clin_path = root / "severity.csv", root / "clinical_variables.csv"
    try:
        severity = pd.read_csv(sev_path, dtype=str, keep_default_na=False)
        clinical = pd.read_csv(clin_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{root}: cannot parse severity.csv/clinical_variables.csv ({exc})") from None
    severity.columns = [c.strip() for c in severity.columns]
    clinical.columns = [c.strip() for c in clinical.columns]
    for table, path, columns in ((severity, sev_path, ("video_file", "B-lines", "Severity Score")),
                                 (clinical, clin_path, ("patient_id", "cov_test"))):
        lost = [c for c in columns if c not in table.columns]
        if lost:
            raise DataError(f"{path}: missing column(s) {lost}; found {list(table.columns)}")
    pcr = {row["patient_id"].strip(): row["cov_test"].strip() for _, row in clinical.iterrows()}
    items: list[Item] = []
    notes: list[dict] = []
    for i, row in severity.iterrows():
        where = f"{sev_path} row {i + 2}"  # +1 header, +1 one-based
        name = row["video_file"].strip()
        match = NAME.match(name)
        try:
            if not match:
                raise DataError(f"{where}: video_file {name!r} does not match patient_<ID>_<POINT>[_2] (POINT = L1..R3)")
            label = normalise_label(row["B-lines"], f"{where} (column B-lines)")
        except DataError as exc:
            if on_error != "skip":
                raise
            notes.append({"item": f"{sev_path.name} row {i + 2}", "reason": str(exc)})
            continue
        patient = match["patient"]
        result = pcr.get(patient, "")
        items.append(Item(
            path=root / "lus_videos" / f"{name}.mp4",
            video_id=name,
            label=label,
            group=f"patient_{patient}",
            metadata={
                "severity": _severity(row["Severity Score"]),
                "blue_point": match["point"],
                "pcr": {"1": "positive", "0": "negative"}.get(result, "unknown"),
                "patient": f"patient_{patient}",
            },
            where=where,
        ))
    listed = {it.video_id for it in items}
    extra = sorted(p.stem for p in (root / "lus_videos").glob("*.mp4") if p.stem not in listed)
    notes += [{"item": str(root / "lus_videos" / f"{e}.mp4"), "reason": "video has no row in severity.csv"} for e in extra]
    return items, notes


def _severity(text: str) -> str:
    text = text.strip()
    try:
        return str(int(float(text)))
    except ValueError:
        return "unknown"


def load_covid_blues(cfg: CovidBluesData, base_dir: Path, cache_dir: Path, progress=None) -> FrameSet:
    root = dataset_dir(cfg, base_dir)
    items, notes = read_items(root, cfg.on_error)
    params = DecodeParams(cfg.frame_step, cfg.max_frames_per_video, cfg.image_size, cfg.crop, cfg.frame_sampling)
    m = "all" if cfg.max_frames_per_video is None else f"at most {cfg.max_frames_per_video}" + \
        (" spread over the clip" if cfg.frame_sampling == "spread" else "")
    description = (f"COVID-BLUES ({len(items)} convex-probe videos listed; {every(cfg.frame_step)}, "
                   f"{m} per video; crop {cfg.crop}; {cfg.image_size}x{cfg.image_size} grayscale)")
    return load_items(items, params, cache_dir, cfg.on_error, description, skipped=notes, progress=progress)
