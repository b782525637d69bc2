"""CSV-manifest loader: images and videos, labels, groups, crop/resize, caching, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from harness.data import DataError, ManifestData, load_frames
from harness.data import media, video
from harness.data.media import normalise_label


def write_video(path: Path, frames: int = 12, size: int = 48, blank_first: int = 0, codec: str = "mpeg4",
                faststart: bool = False) -> None:
    """A small video whose frame k has brightness 60 + 10 k inside a centred disc (black outside)."""
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p" if codec != "gif" else "rgb8"
        for k in range(frames):
            level = 0 if k < blank_first else min(60 + 10 * k, 250)
            gray = np.where(disc, level, 0).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(gray[:, :, None], 3, axis=2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_image(path: Path, value: int, size: tuple[int, int] = (40, 60)) -> None:
    array = np.zeros(size, dtype=np.uint8)
    array[5:-5, 10:-10] = value
    Image.fromarray(array).convert("RGB").save(path)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    (root / "images").mkdir()
    write_video(root / "videos" / "p1_a.mp4", frames=12, blank_first=2)
    write_video(root / "videos" / "p2_a.avi", frames=6)
    write_image(root / "images" / "p1_b.png", 200)
    write_image(root / "images" / "p3_a.jpg", 120)
    write_image(root / "images" / "p3_b.bmp", 90)
    Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)).save(root / "images" / "p4_a.tif")
    (root / "labels.csv").write_text(
        "file,b_lines,patient,severity\n"
        "videos/p1_a.mp4, yes ,p1,2\n"
        "images/p1_b.png,NO,p1,0\n"
        "videos/p2_a.avi,1,p2,1\n"
        "images/p3_a.jpg, True,p3,3\n"
        "images/p3_b.bmp,false ,p3,0\n"
        "images/p4_a.tif,0,p4,0\n"
    )
    return root


def cfg(root: Path, **kw) -> ManifestData:
    base = dict(path=str(root / "labels.csv"), file_column="file", label_column="b_lines", group_column="patient",
                metadata_columns=["severity"], frame_step=3, max_frames_per_video=3, image_size=32)
    base.update(kw)
    return ManifestData(**base)


def test_loads_images_and_videos_with_labels_groups_metadata(dataset: Path, tmp_path: Path) -> None:
    frames = load_frames(cfg(dataset), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    # p1_a.mp4: 10 non-blank frames (0,1 blank) -> every 3rd -> 2,5,8 (max 3); p2_a.avi: 0,3
    assert frames.sample_ids.tolist() == [
        "videos/p1_a.mp4#2", "videos/p1_a.mp4#5", "videos/p1_a.mp4#8", "images/p1_b.png#0",
        "videos/p2_a.avi#0", "videos/p2_a.avi#3", "images/p3_a.jpg#0", "images/p3_b.bmp#0", "images/p4_a.tif#0"]
    assert frames.labels.tolist() == [1, 1, 1, 0, 1, 1, 1, 0, 0]
    assert frames.groups.tolist() == ["p1"] * 4 + ["p2"] * 2 + ["p3"] * 2 + ["p4"]
    assert frames.videos.tolist()[3] == "images/p1_b.png"
    assert frames.metadata.severity.tolist() == ["2", "2", "2", "0", "1", "1", "3", "0", "0"]
    assert frames.images.shape == (9, 32, 32) and frames.images.dtype == np.uint8
    # decoded brightness follows the source frames (60 + 10 k inside the disc), lossy codec: +-6
    centre = frames.images[:3, 14:18, 14:18].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(centre, [80, 110, 140], atol=6)
    # the 40x60 png was padded to a square (black bands top and bottom) before resizing
    png = frames.images[3]
    assert png[0].max() < 10 and png[16, 16] > 190
    assert frames.images[8].max() > 200  # 16-bit tiff scaled to 8 bits
    assert frames.skipped == [] and len(frames.content_hash) == 64
    assert "CSV manifest labels.csv (6 files under data/; videos: every 3rd non-blank frame, at most 3" in frames.description


def test_second_load_decodes_nothing(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_frames(cfg(dataset), base_dir=tmp_path, cache_dir=tmp_path / "cache")

    def boom(*args, **kwargs):
        raise AssertionError("decoder called on a cached load")

    monkeypatch.setattr(video, "decode_media", boom)
    again = load_frames(cfg(dataset), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, again.images)
    assert isinstance(again.images, np.memmap)
    assert again.content_hash == first.content_hash
    # a renamed copy of the same bytes still hits (keys are content hashes, not names)
    os.rename(dataset / "images" / "p3_a.jpg", dataset / "images" / "renamed.jpg")
    text = (dataset / "labels.csv").read_text().replace("p3_a.jpg", "renamed.jpg")
    (dataset / "labels.csv").write_text(text)
    load_frames(cfg(dataset), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    # changed decoding parameters miss
    with pytest.raises(AssertionError, match="decoder called"):
        load_frames(cfg(dataset, image_size=48), base_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_relative_paths_resolve_against_the_suite_folder(dataset: Path) -> None:
    frames = load_frames(ManifestData(path="data/labels.csv", label_column="b_lines", image_size=16),
                         base_dir=dataset.parent, cache_dir=dataset.parent / "cache")
    # default frame_step 10: one frame per (short) video; no group column: the file is the group
    assert len(frames) == 6 and frames.groups.tolist()[0] == "videos/p1_a.mp4"


@pytest.mark.parametrize("crop", ["fan", "bbox", "none"])
def test_crop_modes(tmp_path: Path, crop: str) -> None:
    root = tmp_path / "d"
    root.mkdir()
    image = np.zeros((100, 100), dtype=np.uint8)
    image[40:90, 20:60] = 150  # the "sector"
    image[2:6, 90:98] = 255  # a logo, disconnected from it
    Image.fromarray(image).save(root / "a.png")
    (root / "m.csv").write_text("file,label\na.png,yes\n")
    frames = load_frames(ManifestData(path=str(root / "m.csv"), crop=crop, image_size=50), base_dir=root,
                         cache_dir=tmp_path / "c")
    out = frames.images[0].astype(int)
    if crop == "fan":  # cropped to the sector (50x40 -> padded 50x50), logo gone
        assert out.max() <= 150 and (out[:, 5:45] > 140).mean() > 0.95 and out[:, :4].max() == 0
    elif crop == "bbox":  # box spans logo and sector: 88 rows x 78 cols; logo kept
        assert out.max() > 200
    else:
        np.testing.assert_array_equal(out, np.asarray(Image.fromarray(image).resize((50, 50), Image.Resampling.BOX)))


def test_gif_video(tmp_path: Path) -> None:
    root = tmp_path / "g"
    root.mkdir()
    write_video(root / "clip.gif", frames=5, codec="gif")
    (root / "m.csv").write_text("file,label\nclip.gif,no\n")
    frames = load_frames(ManifestData(path=str(root / "m.csv"), frame_step=2, max_frames_per_video=None,
                                      image_size=24), base_dir=root, cache_dir=tmp_path / "c")
    assert frames.sample_ids.tolist() == ["clip.gif#0", "clip.gif#2", "clip.gif#4"]


@pytest.mark.parametrize(("value", "expected"), [(" yes ", 1), ("No", 0), ("1", 1), ("0", 0), ("TRUE", 1),
                                                 ("false ", 0), ("1.0", 1), (" Y", 1), ("Negative", 0)])
def test_label_normalisation(value: str, expected: int) -> None:
    assert normalise_label(value, "row 2") == expected


# ----------------------------------------------------------------------------- bad input


def _manifest(root: Path, rows: str) -> None:
    (root / "labels.csv").write_text("file,b_lines,patient,severity\n" + rows)


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature, an 8-bit grayscale IHDR declaring ``width`` x ``height``, and IEND (no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IEND", b"")


def _bad(dataset: Path, kind: str) -> str:
    """Make one bad row of ``kind``; return the text the error must contain."""
    good = "images/p1_b.png,no,p1,0\n"
    if kind == "missing":
        _manifest(dataset, good + "images/nothere.png,yes,p9,1\n")
        return "row 3: file not found"
    if kind == "corrupt":
        (dataset / "videos" / "junk.mp4").write_bytes(os.urandom(4096))
        _manifest(dataset, good + "videos/junk.mp4,yes,p9,1\n")
        return "junk.mp4: cannot decode the video"
    if kind == "truncated":
        data = (dataset / "videos" / "p1_a.mp4").read_bytes()
        (dataset / "videos" / "cut.mp4").write_bytes(data[: len(data) // 2])
        _manifest(dataset, good + "videos/cut.mp4,yes,p9,1\n")
        return "cut.mp4: cannot decode the video"
    if kind == "truncated after its index":
        stream_path = dataset / "videos" / "fs.mp4"
        write_video(stream_path, frames=30, faststart=True)
        data = stream_path.read_bytes()
        (dataset / "videos" / "cut2.mp4").write_bytes(data[: len(data) // 2])
        _manifest(dataset, good + "videos/cut2.mp4,yes,p9,1\n")
        return "cut2.mp4: truncated video (decoded"
    if kind == "unreadable image":
        (dataset / "images" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        _manifest(dataset, good + "images/bad.png,yes,p9,1\n")
        return "bad.png: cannot read the image"
    if kind in ("decompression bomb", "above the bomb warning"):
        # a PNG whose header declares 20000 x 20000 (over twice Pillow's limit: an error) or 10000 x 10000
        # pixels (over the limit: a warning); a few bytes on disk, gigabytes if decoded
        side = 20000 if kind == "decompression bomb" else 10000
        (dataset / "images" / "huge.png").write_bytes(_png_header(side, side))
        _manifest(dataset, good + "images/huge.png,yes,p9,1\n")
        return "huge.png: image too large to decode safely (Image size ("
    if kind == "unknown label":
        _manifest(dataset, good + "images/p3_a.jpg,maybe,p3,1\n")
        return "labels.csv row 3 (column 'b_lines'): label 'maybe' is not understood; accepted: yes/no, 1/0, true/false"
    if kind == "escape":
        (dataset.parent / "outside.png").write_bytes((dataset / "images" / "p1_b.png").read_bytes())
        _manifest(dataset, good + "../outside.png,yes,p9,1\n")
        return "row 3: path '../outside.png' escapes the root"
    if kind == "absolute":
        _manifest(dataset, good + f"{dataset.parent / 'outside.png'},yes,p9,1\n")
        (dataset.parent / "outside.png").write_bytes((dataset / "images" / "p1_b.png").read_bytes())
        return "escapes the root"
    if kind == "symlink":
        (dataset.parent / "outside.png").write_bytes((dataset / "images" / "p1_b.png").read_bytes())
        (dataset / "images" / "link.png").symlink_to(dataset.parent / "outside.png")
        _manifest(dataset, good + "images/link.png,yes,p9,1\n")
        return "escapes the root"
    if kind == "unsupported":
        (dataset / "notes.txt").write_text("hello")
        _manifest(dataset, good + "notes.txt,yes,p9,1\n")
        return "unsupported file type '.txt'"
    raise AssertionError(kind)


BAD = ["missing", "corrupt", "truncated", "truncated after its index", "unreadable image", "unknown label", "escape", "absolute", "symlink",
       "unsupported", "decompression bomb", "above the bomb warning"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_item_fails_with_one_clear_line(dataset: Path, tmp_path: Path, kind: str) -> None:
    fragment = _bad(dataset, kind)
    with pytest.raises(DataError) as info:
        load_frames(cfg(dataset), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert "labels.csv row 3" in message


@pytest.mark.parametrize("kind", BAD)
def test_bad_item_is_skipped_and_listed(dataset: Path, tmp_path: Path, kind: str) -> None:
    fragment = _bad(dataset, kind)
    frames = load_frames(cfg(dataset, on_error="skip"), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert frames.sample_ids.tolist() == ["images/p1_b.png#0"]  # the good row is kept
    assert len(frames.skipped) == 1 and fragment in frames.skipped[0]["reason"]


def test_absolute_path_inside_the_root_is_accepted(dataset: Path, tmp_path: Path) -> None:
    _manifest(dataset, f"{dataset / 'images' / 'p1_b.png'},no,p1,0\n")
    frames = load_frames(cfg(dataset), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert frames.sample_ids.tolist() == ["images/p1_b.png#0"]


def test_missing_column_and_missing_manifest(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"labels.csv: no column 'site'; found: 'file', 'b_lines', 'patient', 'severity'"):
        load_frames(cfg(dataset, metadata_columns=["site"]), base_dir=tmp_path, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="no column 'label'"):
        load_frames(cfg(dataset, label_column="label"), base_dir=tmp_path, cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match="manifest not found: .*nope.csv"):
        load_frames(cfg(dataset, path="nope.csv"), base_dir=tmp_path, cache_dir=tmp_path / "c")


def test_all_items_bad_is_an_error_even_with_skip(dataset: Path, tmp_path: Path) -> None:
    _manifest(dataset, "x.png,yes,p1,0\n")
    with pytest.raises(DataError, match="no usable item"):
        load_frames(cfg(dataset, on_error="skip"), base_dir=tmp_path, cache_dir=tmp_path / "c")


def test_media_keys_depend_on_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_image(a, 10)
    write_image(b, 10)
    from harness.versions import file_sha256

    assert file_sha256(a) == file_sha256(b)
    write_image(b, 11)
    assert file_sha256(a) != file_sha256(b)
    assert media.Item(path=a, video_id="a", label=1, group="g").where == ""
