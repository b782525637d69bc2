"""Items (one file each: label, group, metadata) -> cached decoded frames -> :class:`FrameSet`.

Used by the COVID-BLUES adapter and the CSV manifest. Each file is decoded once per decoding
parameters into ``<cache>/frames/`` (key: SHA-256 of the file's bytes + parameters + decoder
source); the frames of the whole set are then concatenated into one ``.npy`` under
``<cache>/sets/`` that is opened memory-mapped, so memory stays at one video while decoding and
near zero afterwards, and a second load decodes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data import video
from harness.data.cache import FrameCache, hash_json, source_hash
from harness.data.overlap import check_no_cross_group_duplicate, pixel_digests
from harness.versions import file_sha256
from harness.data.frameset import DataError, FrameSet


@dataclass
class Item:
    """One image or video: where it is, what it is, and how to name it in an error."""

    path: Path
    video_id: str
    label: int
    group: str
    metadata: dict = field(default_factory=dict)
    where: str = ""  # e.g. "labels.csv row 4", for error messages


def _decoder_version() -> str:
    return source_hash(video)


def load_items(items: list[Item], params: video.DecodeParams, cache_dir: Path, on_error: str,
               description: str, skipped: list[dict] | None = None,
               progress: Callable[[int, int], None] | None = None) -> FrameSet:
    """Decode (or reuse) every item's frames and assemble the set; ``on_error`` = fail | skip."""
    cache = FrameCache(cache_dir)
    skipped = list(skipped or [])
    version = _decoder_version()
    entries: list[tuple[Item, str, np.ndarray, list[int]]] = []
    file_digests: list[bytes] = []  # per entry: its source file's SHA-256 (the external overlap check)
    for n, item in enumerate(items):
        try:
            if not item.path.is_file():
                raise DataError(f"{item.where}: file not found: {item.path}; accepted: an existing file under the root")
            video.media_kind(item.path)
            digest = file_sha256(item.path)
            key = hash_json({"file": digest, "params": params.as_dict(), "decoder": version})
            hit = cache.load("frames", key)
            if hit is None:
                frames, indices = video.decode_media(item.path, params)
                cache.save("frames", key, frames, {"indices": indices})
                hit = cache.load("frames", key)
                if hit is None:  # could not be read back (e.g. replaced concurrently): use the decoded frames
                    hit = (frames, {"indices": indices})
            array, info = hit
            entries.append((item, key, array, list(info["indices"])))
            file_digests.append(bytes.fromhex(digest)[:16])
        except DataError as exc:
            message = str(exc) if item.where in str(exc) else f"{item.where}: {exc}"
            if on_error != "skip":
                raise DataError(message) from None
            skipped.append({"item": str(item.path), "reason": message})
        if progress:
            progress(n + 1, len(items))
    if not entries:
        raise DataError(f"{description}: no usable item (all {len(items)} failed or none listed); "
                        "accepted: at least one readable image or video")
    set_key = hash_json([key for _, key, _, _ in entries])
    size = params.image_size
    hit = cache.load("sets", set_key)
    if hit is None:
        cache.save_stream("sets", set_key, (size, size), [a for _, _, a, _ in entries], info={"n": sum(len(a) for _, _, a, _ in entries)})
        hit = cache.load("sets", set_key)
    images = hit[0] if hit is not None else np.concatenate([a for _, _, a, _ in entries])
    rows, labels, groups, videos, ids, files, where = [], [], [], [], [], [], []
    for k, (item, _, array, indices) in enumerate(entries):
        for index in indices[: len(array)]:
            files.append(file_digests[k])
            where.append((item, index))
            labels.append(item.label)
            groups.append(item.group)
            videos.append(item.video_id)
            ids.append(f"{item.video_id}#{index}")
            rows.append(dict(item.metadata))
    content = hash_json({"frames": set_key, "labels": labels, "groups": groups, "videos": videos, "meta": rows})
    frames = FrameSet(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        groups=np.asarray(groups, dtype=str),
        videos=np.asarray(videos, dtype=str),
        sample_ids=np.asarray(ids, dtype=str),
        metadata=pd.DataFrame(rows, index=pd.RangeIndex(len(rows))),
        skipped=skipped,
        content_hash=content,
        description=description,
        pixel_digests=pixel_digests(images),
        file_digests=np.asarray(files, dtype="S16"),
    )
    # the same image under two patients: refused whatever on_error says (it is no unreadable item)
    check_no_cross_group_duplicate(frames, lambda i: f"{where[i][0].where} ({where[i][0].video_id}, "
                                                      f"frame {where[i][1]})")
    return frames


def every(step: int) -> str:
    """'every non-blank frame', 'every 2nd non-blank frame', ... for descriptions."""
    if step == 1:
        return "every non-blank frame"
    suffix = "th" if 10 <= step % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(step % 10, "th")
    return f"every {step}{suffix} non-blank frame"


def normalise_label(value: object, where: str) -> int:
    """yes/no, 1/0, true/false (any case, stray spaces) -> 1/0; anything else is an error naming ``where``."""
    text = str(value).strip().lower()
    if text in ("yes", "y", "1", "true", "1.0", "positive", "pos"):
        return 1
    if text in ("no", "n", "0", "false", "0.0", "negative", "neg"):
        return 0
    raise DataError(f"{where}: label {value!r} is not understood; accepted: yes/no, 1/0, true/false, y/n, "
                    "positive/negative (any case, surrounding spaces ignored)")
