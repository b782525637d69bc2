"""Content overlap (harness.data.overlap): the same frame under two patients, and external sets holding
the study's own frames or files; both refused in one line before any training."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.data import CovidBluesData, DataError, ManifestData, SimulatedData, load_frames
from harness.data.overlap import check_external_overlap, external_overlap, pixel_digests
from harness.runner import run_suite
from harness.store import STORE_FILENAME
from harness.suite import SuiteError, load_suite


def images(root: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct random 40 x 40 PNGs in ``root``; their names."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"img{seed}_{i}.png"
        Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(root / name)
        names.append(name)
    return names


def manifest(root: Path, rows: list[tuple[str, int, str]], csv: str = "labels.csv") -> Path:
    path = root / csv
    path.write_text("file,label,patient\n" + "".join(f"{f},{lab},{p}\n" for f, lab, p in rows))
    return path


def mcfg(csv: Path, **kw) -> ManifestData:
    return ManifestData(**{"path": str(csv), "group_column": "patient", "image_size": 32, **kw})


# --------------------------------------------------------------------------- duplicates across patients


def test_identical_file_under_two_patients_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    a, b, c = images(root, 3)
    shutil.copy(root / a, root / "copy_of_a.png")  # byte-identical, another name
    csv = manifest(root, [(a, 1, "p1"), (b, 0, "p1"), (c, 0, "p2"), ("copy_of_a.png", 1, "p2")])
    with pytest.raises(DataError) as err:
        load_frames(mcfg(csv), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{csv} row 2 ({a}, frame 0) of patient 'p1' and {csv} row 5 (copy_of_a.png, frame 0) "
                              "of patient 'p2' hold an identical frame")
    assert message.endswith("accepted: each image under one patient only (remove the copy, or list both under the "
                            "same patient)")


def test_identical_file_twice_under_one_patient_loads(tmp_path: Path) -> None:
    root = tmp_path / "data"
    a, b = images(root, 2)
    shutil.copy(root / a, root / "copy_of_a.png")
    csv = manifest(root, [(a, 1, "p1"), ("copy_of_a.png", 1, "p1"), (b, 0, "p2")])
    frames = load_frames(mcfg(csv), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert frames.groups.tolist() == ["p1", "p1", "p2"]
    assert frames.pixel_digests[0] == frames.pixel_digests[1] != frames.pixel_digests[2]


def test_constant_frames_may_repeat_across_patients(tmp_path: Path) -> None:
    # a black (blank) image carries nothing of a patient: two of them are no leak
    root = tmp_path / "data"
    a, b = images(root, 2)
    for name in ("black1.png", "black2.png"):
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / name)
    csv = manifest(root, [(a, 1, "p1"), ("black1.png", 0, "p1"), (b, 0, "p2"), ("black2.png", 0, "p2")])
    frames = load_frames(mcfg(csv), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(frames) == 4 and frames.pixel_digests[1] == frames.pixel_digests[3]


def test_simulated_frames_have_digests_and_no_duplicates(tmp_path: Path) -> None:
    frames = load_frames(SimulatedData(patients=4, frames_per_patient=3, image_size=32), base_dir=tmp_path,
                         cache_dir=tmp_path / "cache")
    assert len(set(frames.pixel_digests.tolist())) == 12
    assert frames.subset(np.array([2, 5])).pixel_digests.tolist() == frames.pixel_digests[[2, 5]].tolist()


# --------------------------------------------------------------------------- external sets


def test_same_seed_with_more_patients_overlaps(tmp_path: Path) -> None:
    sim = dict(frames_per_patient=3, image_size=32, seed=0)
    study = load_frames(SimulatedData(patients=6, **sim), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    more = load_frames(SimulatedData(patients=8, **sim), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    found = external_overlap(study, more)
    assert (found.frames, found.patients, found.total_frames, found.total_patients) == (18, 6, 24, 8)
    with pytest.raises(DataError) as err:
        check_external_overlap("more", study, more)
    message = str(err.value)
    assert "\n" not in message
    assert message == ("evaluation.external.more: 18 of its 24 frames (6 of its 8 patients) are the study's own (same "
                       "pixels or same source file), e.g. sim_p0000_c00#0 (patient sim_p0000) = the study's "
                       "sim_p0000_c00#0 (patient sim_p0000): it is no external validation; accepted: a set sharing no "
                       "frame or file with the study's data, or overlap: allow on evaluation.external.more to score "
                       "it anyway")
    warning = check_external_overlap("more", study, more, "allow")
    assert warning.startswith("warning: evaluation.external.more: 18 of its 24 frames (6 of its 8 patients)")
    other = load_frames(SimulatedData(patients=8, **{**sim, "seed": 7}), base_dir=tmp_path,
                        cache_dir=tmp_path / "cache")
    assert external_overlap(study, other) is None and check_external_overlap("other", study, other) is None


def test_manifest_listing_some_of_the_study_files_overlaps(tmp_path: Path) -> None:
    root = tmp_path / "data"
    names = images(root, 6)
    study_csv = manifest(root, [(n, i % 2, f"p{i // 2}") for i, n in enumerate(names)])
    ext_csv = manifest(root, [(names[1], 1, "site_b_1"), (names[4], 0, "site_b_2"), *[
        (n, 0, "site_b_3") for n in images(root, 2, seed=1)]], csv="site_b.csv")
    study = load_frames(mcfg(study_csv), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    ext = load_frames(mcfg(ext_csv), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    found = external_overlap(study, ext)
    assert (found.frames, found.patients, found.total_frames, found.total_patients) == (2, 2, 4, 3)
    assert found.example == f"{names[1]}#0 (patient site_b_1) = the study's {names[1]}#0 (patient p0)"
    # the same files decoded at another size share no pixel: their source files still match
    resized = load_frames(mcfg(ext_csv, image_size=24), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert (external_overlap(study, resized).frames, external_overlap(study, resized).patients) == (2, 2)
    other = load_frames(mcfg(manifest(root, [(n, i, f"q{i}") for i, n in enumerate(images(root, 2, seed=2))],
                                      csv="other.csv")), base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert external_overlap(study, other) is None


# --------------------------------------------------------------------------- in the suite, before training


def suite_file(tmp_path: Path, data: dict, external: dict) -> Path:
    path = tmp_path / "ov.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ov", "seed": 0, "data": data, "model": {"pretrained": "none"},
        "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
        "evaluation": {"folds": 2, "repeats": 1, "external": external}, "arms": [{"name": "baseline"}]}))
    return path


def never_fit(*args, **kwargs):
    raise AssertionError("trained although the data should have been refused")


def test_overlap_key_schema_and_identity(tmp_path: Path) -> None:
    sim = {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32}
    refused = suite_file(tmp_path, sim, {"more": {**sim, "patients": 8, "overlap": "sometimes"}})
    with pytest.raises(SuiteError, match=r"evaluation\.external\.more\.overlap: 'sometimes' is not accepted; "
                                         r"accepted: 'refuse' or 'allow'"):
        load_suite(refused)
    with pytest.raises(SuiteError, match=r"data\.overlap: unknown key"):  # the study's own data has no such key
        load_suite(suite_file(tmp_path, {**sim, "overlap": "allow"}, {}))
    default = load_suite(suite_file(tmp_path, sim, {"more": {**sim, "patients": 8}}))
    allowed = load_suite(suite_file(tmp_path, sim, {"more": {**sim, "patients": 8, "overlap": "allow"}}))
    assert default.evaluation.external["more"].overlap == "refuse"
    assert allowed.evaluation.external["more"].overlap == "allow"
    # scoring a set anyway changes no number: the runs' identity and the set's content hash stay
    assert default.run_config_hash("baseline") == allowed.run_config_hash("baseline")
    hashes = {load_frames(s.evaluation.external["more"], base_dir=tmp_path, cache_dir=tmp_path / "cache").content_hash
              for s in (default, allowed)}
    assert len(hashes) == 1


def test_suite_refuses_an_overlapping_external_set_before_training(tmp_path: Path) -> None:
    sim = {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32}
    suite = load_suite(suite_file(tmp_path, sim, {"more": {**sim, "patients": 8, "seed": 0}}))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"^evaluation\.external\.more: 18 of its 24 frames \(6 of its 8 patients\) "
                                        r"are the study's own") as err:
        run_suite(suite, out, cache_dir=tmp_path / "cache", fit=never_fit, progress=False, echo=lambda _: None)
    assert "\n" not in str(err.value)
    assert not (out / STORE_FILENAME).exists()


def test_suite_refuses_a_duplicate_across_patients_before_training(tmp_path: Path) -> None:
    root = tmp_path / "data"
    names = images(root, 12)  # 6 patients: enough for 2 folds with inner validation (the old code trained)
    shutil.copy(root / names[0], root / "dup.png")
    csv = manifest(root, [*[(n, i % 2, f"p{i // 2}") for i, n in enumerate(names)], ("dup.png", 1, "p1")])
    data = {"source": "manifest", "path": str(csv), "group_column": "patient", "image_size": 32}
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"of patient 'p0' and .* row 14 \(dup\.png, frame 0\) of patient 'p1' hold an "
                                        r"identical frame") as err:
        run_suite(load_suite(suite_file(tmp_path, data, {})), out, cache_dir=tmp_path / "cache", fit=never_fit,
                  progress=False, echo=lambda _: None)
    assert "\n" not in str(err.value)
    assert not (out / STORE_FILENAME).exists()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_suite_with_overlap_allow_runs_with_the_warning(tmp_path: Path) -> None:
    sim = {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32}
    suite = load_suite(suite_file(tmp_path, sim, {"more": {**sim, "patients": 8, "seed": 0, "overlap": "allow"}}))
    lines: list[str] = []
    summary = run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, report=False,
                        echo=lines.append)
    assert summary.ok, summary.failed
    warnings = [line for line in lines if line.startswith("warning: evaluation.external.more:")]
    assert warnings == ["warning: evaluation.external.more: 18 of its 24 frames (6 of its 8 patients) are the study's "
                        "own (same pixels or same source file), e.g. sim_p0000_c00#0 (patient sim_p0000) = the "
                        "study's sim_p0000_c00#0 (patient sim_p0000); overlap: allow, so it is scored, but not as an "
                        "independent set"]


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
@pytest.mark.skipif(not os.environ.get("LUS_COVID_BLUES"), reason="LUS_COVID_BLUES not set")
def test_covid_blues_has_no_frame_under_two_patients(tmp_path: Path) -> None:
    # default decoding (every 10th non-blank frame, at most 8 per video, 128 px): loads, i.e. passes the check;
    # patient 39's constant first frames repeat across his own videos only
    cfg = CovidBluesData(frame_step=10, max_frames_per_video=8, image_size=128)
    frames = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(frames) > 2000 and frames.pixel_digests is not None
    start = time.perf_counter()
    pixel_digests(frames.images)
    assert time.perf_counter() - start < 2.0  # 25 ms here, of a 0.2 s load from the cache
    assert external_overlap(frames, frames.subset(np.flatnonzero(frames.groups == "patient_12"))).patients == 1
