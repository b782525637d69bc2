"""Any dataset as a CSV manifest: one row per image or video.

Example ``labels.csv`` (columns named by the suite)::

    file,b_lines,patient,severity
    videos/p1_a.mp4, yes ,p1,2
    images/p2.png,0,p2,0

Files are resolved under ``root`` (default: the CSV's folder); a path that leaves it (``../x``,
an absolute path elsewhere, a symlink pointing out) is an error (or, with ``on_error: skip``, left
out and listed); such a file is never opened.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.data.config import ManifestData
from harness.data.frameset import DataError, FrameSet
from harness.data.media import Item, every, load_items, normalise_label
from harness.data.video import DecodeParams


#: Spellings of a missing value (pandas' and spreadsheets'); never a patient id.
MISSING = frozenset({"nan", "na", "n/a", "null", "none", "#n/a", "-nan", "<na>"})


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def safe_path(root: Path, raw: str, where: str) -> Path:
    """``root / raw`` resolved; an error if it is not inside ``root``."""
    text = raw.strip()
    if not text:
        raise DataError(f"{where}: empty file path; accepted: a path relative to the root {root}")
    candidate = Path(text)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise DataError(f"{where}: path {text!r} escapes the root {root}; accepted: paths inside the root")
    return resolved


def read_manifest(cfg: ManifestData, base_dir: Path) -> tuple[list[Item], Path, list[dict]]:
    csv_path = _resolve(cfg.path, base_dir)
    if not csv_path.is_file():
        raise DataError(f"data.path: manifest not found: {csv_path}; accepted: a CSV file (relative to the suite's folder)")
    root = (_resolve(cfg.root, base_dir) if cfg.root else csv_path.parent).resolve()
    if not root.is_dir():
        raise DataError(f"data.root: not a folder: {root}; accepted: the folder the manifest's paths are relative to")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: not a readable CSV ({exc.__class__.__name__}: {exc})") from None
    table.columns = [str(c).strip() for c in table.columns]
    wanted = [cfg.file_column, cfg.label_column, *([cfg.group_column] if cfg.group_column else []), *cfg.metadata_columns]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: no column {', '.join(repr(c) for c in missing)}; "
                        f"found: {', '.join(repr(c) for c in table.columns)}")
    items: list[Item] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    for i, row in table.iterrows():
        where = f"{csv_path} row {i + 2}"
        try:
            path = safe_path(root, row[cfg.file_column], where)
            label = normalise_label(row[cfg.label_column], f"{where} (column {cfg.label_column!r})")
        except DataError as exc:
            if cfg.on_error == "skip":  # nothing outside the root is ever opened either way
                skipped.append({"item": f"{csv_path.name} row {i + 2}", "reason": str(exc)})
                continue
            raise
        video_id = path.relative_to(root).as_posix()
        if video_id in seen:
            raise DataError(f"{where}: {video_id!r} is listed twice; accepted: one row per file")
        seen.add(video_id)
        group = row[cfg.group_column].strip() if cfg.group_column else video_id
        if not group or group.lower() in MISSING:
            shown = f" ({group!r} means missing)" if group else ""
            raise DataError(f"{where}: empty {cfg.group_column!r}{shown}; accepted: a patient/group id on every row")
        meta = {c: row[c].strip() for c in cfg.metadata_columns}
        items.append(Item(path=path, video_id=video_id, label=label, group=group, metadata=meta, where=where))
    return items, root, skipped


def load_manifest(cfg: ManifestData, base_dir: Path, cache_dir: Path, progress=None) -> FrameSet:
    items, root, skipped = read_manifest(cfg, base_dir)
    params = DecodeParams(cfg.frame_step, cfg.max_frames_per_video, cfg.image_size, cfg.crop, cfg.frame_sampling)
    m = "all" if cfg.max_frames_per_video is None else f"at most {cfg.max_frames_per_video}" + \
        (" spread over the clip" if cfg.frame_sampling == "spread" else "")
    description = (f"CSV manifest {Path(cfg.path).name} ({len(items)} files under {root.name}/; videos: "
                   f"{every(cfg.frame_step)}, {m} per video; crop {cfg.crop}; "
                   f"{cfg.image_size}x{cfg.image_size} grayscale)")
    return load_items(items, params, cache_dir, cfg.on_error, description, skipped=skipped, progress=progress)
