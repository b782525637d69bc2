"""COVID-BLUES adapter on the shared copy (skips when LUS_COVID_BLUES is unset).

One cached load (1 frame per video, 64 px) is shared by the module; the counts asserted are the
dataset's published ones: 362 videos, 63 patients, 235 videos with B-lines, 127 without.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.data import CovidBluesData, DataError, FrameSet, load_frames
from harness.data import covid_blues, video
from harness.data.commands import inspect_text

ROOT = os.environ.get("LUS_COVID_BLUES")


def needs_data(test):
    """Marked real_data; skipped with a reason when the copy's location is not given."""
    skip = pytest.mark.skipif(not ROOT, reason="LUS_COVID_BLUES is not set (path of the COVID-BLUES copy)")
    return pytest.mark.real_data(skip(test))
CFG = CovidBluesData(frame_step=1, max_frames_per_video=1, image_size=64)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("covid_blues_cache")


@pytest.fixture(scope="module")
def frames(cache_dir: Path) -> FrameSet:
    return load_frames(CFG, base_dir=Path.cwd(), cache_dir=cache_dir)


@needs_data
def test_counts_match_the_published_dataset(frames: FrameSet) -> None:
    videos = dict(zip(frames.videos.tolist(), frames.labels.tolist()))
    assert len(videos) == 362
    assert len(set(frames.groups.tolist())) == 63
    assert sum(videos.values()) == 235 and sum(1 for v in videos.values() if v == 0) == 127
    assert frames.images.shape == (362, 64, 64) and frames.skipped == []
    text = inspect_text(frames)
    assert "videos: 362   patients (groups): 63" in text
    assert "B-lines          235     235" in text and "no B-lines       127     127" in text


@needs_data
def test_groups_metadata_and_ids(frames: FrameSet) -> None:
    i = frames.videos.tolist().index("patient_15_L2_2")
    assert frames.groups[i] == "patient_15" and frames.metadata.blue_point[i] == "L2"
    assert frames.sample_ids[i] == "patient_15_L2_2#0"
    assert set(frames.metadata.severity) == {"0", "1", "2", "3"}
    assert set(frames.metadata.pcr) == {"positive", "negative"}
    # PCR is a patient property; 33 positive and 30 negative patients
    per_patient = dict(zip(frames.groups.tolist(), frames.metadata.pcr.tolist()))
    assert sum(v == "positive" for v in per_patient.values()) == 33
    assert set(CFG.strata) <= set(frames.metadata.columns)
    # the first frames of patient_2_L1 are black: the sampled frame is the first non-blank one
    j = frames.videos.tolist().index("patient_2_L1")
    assert frames.sample_ids[j] == "patient_2_L1#2" and frames.images[j].max() > 100
    # fan crop: the top corners are outside the sector (black) in nearly all videos; the centre is not
    assert (frames.images[:, 0, 0] == 0).mean() > 0.9 and frames.images[:, 32, 32].mean() > 20


@needs_data
def test_second_load_decodes_nothing(frames: FrameSet, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("decoder called on a cached load")

    monkeypatch.setattr(video, "decode_media", boom)
    again = load_frames(CFG, base_dir=Path.cwd(), cache_dir=cache_dir)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images, frames.images)
    assert again.content_hash == frames.content_hash


@needs_data
def test_frame_sampling(tmp_path: Path) -> None:
    root = Path(ROOT)
    item = root / "lus_videos" / "patient_62_R1.mp4"
    out, indices = video.decode_media(item, video.DecodeParams(10, 3, 32, "fan"))
    assert indices == [0, 10, 20] and out.shape == (3, 32, 32)


@needs_data
def test_labels_with_stray_spaces_are_read(tmp_path: Path) -> None:
    items, notes = covid_blues.read_items(Path(ROOT))
    assert len(items) == 362 and notes == []
    assert {it.label for it in items} == {0, 1}


def test_env_path_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "work" / "data" / "cb").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("LUS_COVID_BLUES", "data/cb")
    assert covid_blues.dataset_dir(CovidBluesData(), base_dir=tmp_path / "suites") == tmp_path / "work" / "data" / "cb"
    assert covid_blues.dataset_dir(CovidBluesData(path="x"), base_dir=tmp_path / "suites") == tmp_path / "suites" / "x"


def test_missing_location_and_bad_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LUS_COVID_BLUES", raising=False)
    with pytest.raises(DataError, match="set data.path or the environment variable LUS_COVID_BLUES"):
        load_frames(CovidBluesData(), base_dir=tmp_path, cache_dir=tmp_path)
    (tmp_path / "cb").mkdir()
    with pytest.raises(DataError, match=r"not a COVID-BLUES folder \(missing lus_videos, severity.csv"):
        load_frames(CovidBluesData(path="cb"), base_dir=tmp_path, cache_dir=tmp_path)


def test_fake_layout_unknown_label_names_the_row(tmp_path: Path) -> None:
    root = tmp_path / "cb"
    (root / "lus_videos").mkdir(parents=True)
    (root / "severity.csv").write_text("video_file,Severity Score,A-lines,B-lines,comments\n"
                                       "patient_1_L1,0.0,yes,yes ,x\npatient_1_L2,1.0,no,perhaps,y\n")
    (root / "clinical_variables.csv").write_text("patient_id,cov_test\n1,1\n")
    with pytest.raises(DataError, match=r"severity.csv row 3 \(column B-lines\): label 'perhaps'"):
        covid_blues.read_items(root)
    items, notes = covid_blues.read_items(root, on_error="skip")
    assert [it.video_id for it in items] == ["patient_1_L1"] and items[0].label == 1
    assert notes[0]["item"] == "severity.csv row 3" and "label 'perhaps'" in notes[0]["reason"]
