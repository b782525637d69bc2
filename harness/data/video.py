"""Decoding: videos through PyAV, images through Pillow; grayscale, crop, resize to a square.

``decode_media(path, params)`` returns ``(frames (n, S, S) uint8, frame_indices)``. Blank frames
(max <= ``BLANK_LEVEL``, e.g. the black lead-in of some COVID-BLUES clips) carry no image and are
dropped before sampling every ``frame_step``-th frame, at most ``max_frames`` of them: the first ones, or
(``frame_sampling: spread``) ones spread evenly over the whole clip.

Crop modes, decided per video from the maximum over its sampled frames (so a clip keeps one
geometry): ``fan`` keeps the largest connected region of non-black pixels (the ultrasound sector),
blanks everything else (text, logos) and crops to its bounding box; ``bbox`` crops to the bounding
box of non-black pixels; ``none`` keeps the whole frame. The crop is padded to a square (black) so
the aspect ratio is kept, then resized with area averaging.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from harness.data.frameset import DataError, spread

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".gif", ".mpeg", ".mpg", ".m4v", ".mkv", ".webm")
BLANK_LEVEL = 8  # an 8-bit frame whose brightest pixel is at most this is blank
CONTENT_LEVEL = 2  # a pixel brighter than this belongs to the image content (outside the fan is 0)


@dataclass(frozen=True)
class DecodeParams:
    frame_step: int
    max_frames: int | None
    image_size: int
    crop: str
    sampling: str = "first"  # first: the first max_frames kept frames; spread: max_frames spread over the clip

    def as_dict(self) -> dict:
        out = {"frame_step": self.frame_step, "max_frames": self.max_frames,
               "image_size": self.image_size, "crop": self.crop}
        if self.sampling != "first":  # the cache keys of the first-frames default are those from before
            out["sampling"] = self.sampling
        return out


def media_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise DataError(
        f"{path}: unsupported file type {suffix!r}; accepted: images {', '.join(IMAGE_SUFFIXES)}, "
        f"videos {', '.join(VIDEO_SUFFIXES)}"
    )


def read_video(path: Path, frame_step: int, max_frames: int | None,
               sampling: str = "first") -> tuple[list[np.ndarray], list[int]]:
    """Grayscale (luma) frames of a video, every ``frame_step``-th non-blank one, at most ``max_frames``:
    the first ones, or (``sampling="spread"``) ones spread evenly over the whole clip (:func:`spread`)."""
    if sampling == "spread" and max_frames is not None:
        frames, indices = read_video(path, frame_step, None)
        keep = spread(len(frames), max_frames)
        return [frames[i] for i in keep], [indices[i] for i in keep]
    frames: list[np.ndarray] = []
    indices: list[int] = []
    kept = 0
    decoded = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream; accepted: a video file with one video stream")
            stream = container.streams.video[0]
            if max_frames is None or max_frames * frame_step > 12:
                stream.thread_type = "AUTO"  # frame threading pays off only when many frames are decoded
            declared = stream.frames or 0
            complete = True
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                gray = frame.to_ndarray(format="gray")
                if gray.max() <= BLANK_LEVEL:
                    continue
                if kept % frame_step == 0:
                    frames.append(gray)
                    indices.append(index)
                    if max_frames is not None and len(frames) >= max_frames:
                        complete = False
                        break
                kept += 1
            # a file cut short after its index (e.g. mp4 with the moov atom first) decodes silently
            # up to the cut: compare with the frame count the container declares
            if complete and declared > 0 and decoded + 2 < declared:
                raise DataError(f"{path}: truncated video (decoded {decoded} of the {declared} frames its "
                                "header declares); accepted: a complete video file")
    except DataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode the video ({exc.__class__.__name__}: {exc}); "
                        "accepted: a readable mp4/avi/mov/gif/mpeg file") from None
    if not frames:
        raise DataError(f"{path}: the video has no decodable non-blank frame; accepted: a video with image content")
    return frames, indices


def read_image(path: Path) -> np.ndarray:
    """One grayscale uint8 image (16-bit and float images are scaled to 0..255).

    An image whose header declares more pixels than Pillow's decompression-bomb limit
    (``PIL.Image.MAX_IMAGE_PIXELS``, where Pillow starts to warn) is refused before it is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    data = np.asarray(img, dtype=np.float64)
                    top = data.max() if data.max() > 0 else 1.0
                    return np.clip(data / top * 255.0, 0, 255).astype(np.uint8)
                return np.asarray(img.convert("L"), dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc}); accepted: an image of at most "
                        f"{Image.MAX_IMAGE_PIXELS} pixels (Pillow's decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc.__class__.__name__}: {exc}); "
                        f"accepted: a readable {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} file") from None


def _fill_convex(mask: np.ndarray) -> np.ndarray:
    """Fill each row and column between its first and last set pixel (twice).

    A sector is row- and column-convex, so this restores dark lung regions inside the fan
    (shadows, black lung) that thresholding cut out, without taking in the black outside.
    """
    out = mask.copy()
    for _ in range(2):
        for axis in (1, 0):
            any_set = out.any(axis=axis)
            first = np.argmax(out, axis=axis)
            last = out.shape[axis] - 1 - np.argmax(np.flip(out, axis=axis), axis=axis)
            ramp = np.arange(out.shape[axis])
            if axis == 1:
                out = (ramp[None, :] >= first[:, None]) & (ramp[None, :] <= last[:, None]) & any_set[:, None]
            else:
                out = (ramp[:, None] >= first[None, :]) & (ramp[:, None] <= last[None, :]) & any_set[None, :]
    return out


def content_box(frames: list[np.ndarray], crop: str) -> tuple[tuple[slice, slice], np.ndarray | None]:
    """Crop window (and, for ``fan``, the sector mask inside it) shared by all frames of a video."""
    h, w = frames[0].shape
    if crop == "none":
        return (slice(0, h), slice(0, w)), None
    peak = np.max(np.stack(frames), axis=0) if len(frames) > 1 else frames[0]
    content = peak > CONTENT_LEVEL
    if crop == "fan":
        # the sector is the largest connected bright region; closing fills speckle holes in it.
        # Done at half resolution (4x cheaper; the sector edge is smooth).
        small = content[::2, ::2]
        small = ndimage.binary_closing(np.pad(small, 4), structure=np.ones((5, 5)))[4:-4, 4:-4]
        labels, count = ndimage.label(small)
        if count > 1:
            sizes = ndimage.sum_labels(small, labels, index=np.arange(1, count + 1))
            small = labels == (1 + int(np.argmax(sizes)))
        small = _fill_convex(small)
        content = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)[:h, :w]
    if not content.any():
        return (slice(0, h), slice(0, w)), None
    rows, cols = np.flatnonzero(content.any(1)), np.flatnonzero(content.any(0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return window, (content[window] if crop == "fan" else None)


def to_square(frame: np.ndarray, window: tuple[slice, slice], mask: np.ndarray | None, size: int) -> np.ndarray:
    """Crop, blank outside the mask, pad to a centred square, area-resize to ``size``."""
    part = frame[window]
    if mask is not None:
        part = np.where(mask, part, 0).astype(np.uint8)
    h, w = part.shape
    side = max(h, w)
    square = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top:top + h, left:left + w] = part
    if side == size:
        return square
    method = Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(square).resize((size, size), method), dtype=np.uint8)


def decode_media(path: Path, params: DecodeParams) -> tuple[np.ndarray, list[int]]:
    """Frames of an image or video file as ``(n, S, S)`` uint8 and their source frame indices."""
    if media_kind(path) == "image":
        frames, indices = [read_image(path)], [0]
    else:
        frames, indices = read_video(path, params.frame_step, params.max_frames, params.sampling)
    window, mask = content_box(frames, params.crop)
    out = np.stack([to_square(f, window, mask, params.image_size) for f in frames])
    return out, indices
