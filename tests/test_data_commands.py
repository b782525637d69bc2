"""`data inspect` / `data preview`: text counts and the PNG montage, through the CLI too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.data import FrameSet, SimulatedData, load_frames
from harness.data.commands import inspect_text, write_preview


def small_set() -> FrameSet:
    images = np.zeros((5, 16, 16), dtype=np.uint8)
    return FrameSet(
        images=images,
        labels=np.array([1, 1, 0, 0, 1]),
        groups=np.array(["p1", "p1", "p1", "p2", "p2"]),
        videos=np.array(["v1", "v1", "v2", "v3", "v4"]),
        sample_ids=np.array(["v1#0", "v1#5", "v2#0", "v3#0", "v4#0"]),
        metadata=pd.DataFrame({"severity": ["2", "2", "0", "0", "1"]}),
        skipped=[{"item": "bad.mp4", "reason": "labels.csv row 7: bad.mp4: cannot decode the video"}],
        content_hash="ab" * 32,
        description="toy",
    )


def test_inspect_text_counts() -> None:
    text = inspect_text(small_set())
    assert "frames: 5   videos: 4   patients (groups): 2   image size: 16x16 uint8" in text
    assert "B-lines            3       2         2" in text
    assert "no B-lines         2       2         2" in text
    assert "frames per video: min 1  median 1  max 2" in text
    assert "p1 2/3 (2)" in text and "p2 1/2 (2)" in text
    assert "patients with both classes: 2 of 2" in text
    assert "metadata severity: 0: 2, 1: 1, 2: 2  (frames)" in text
    assert "skipped items: 1" in text and "bad.mp4: labels.csv row 7" in text


def test_frameset_checks_its_shape() -> None:
    s = small_set()
    with pytest.raises(ValueError, match="labels has 2 entries for 5 images"):
        FrameSet(images=s.images, labels=s.labels[:2], groups=s.groups, videos=s.videos, sample_ids=s.sample_ids,
                 metadata=s.metadata)
    with pytest.raises(ValueError, match="sample_ids are not unique"):
        FrameSet(images=s.images, labels=s.labels, groups=s.groups, videos=s.videos,
                 sample_ids=np.array(["a"] * 5), metadata=s.metadata)
    sub = s.subset(s.labels == 1)
    assert sub.sample_ids.tolist() == ["v1#0", "v1#5", "v4#0"] and sub.metadata.index.tolist() == [0, 1, 2]


def test_preview_png(tmp_path: Path) -> None:
    frames = load_frames(SimulatedData(patients=6, frames_per_patient=2, image_size=32), base_dir=tmp_path,
                         cache_dir=tmp_path / "c", seed=0)
    out = write_preview(frames, tmp_path / "sub" / "p.png", per_class=4)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400 and img.height > 200
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # not blank


def test_cli_inspect_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nseed: 3\ndata: {source: simulated, patients: 4, frames_per_patient: 2, image_size: 32}\n"
                     "arms: [{name: plain}]\n")
    cache = str(tmp_path / "cache")
    assert main(["data", "inspect", str(suite), "--set", "data.patients=5", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "frames: 10   videos: 10   patients (groups): 5" in out and "seed 3" in out
    assert main(["data", "preview", str(suite), "-o", str(tmp_path / "p.png"), "--cache-dir", cache]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    (tmp_path / "m.csv").write_text("file,label\nnothere.png,yes\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ndata: {source: manifest, path: m.csv}\narms: [{name: plain}]\n")
    code = main(["data", "inspect", str(bad), "--cache-dir", cache])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "m.csv row 2: file not found" in err[0]
