"""Frames and BatchNorm images spread over what they stand for (issue 26 §2).

A study once trained on frames 0, 20, 40, 60 of each clip only (the first 2.4 s of 4-s clips), and
re-estimated BatchNorm on the first 512 training images in the data's order (11-13 of ~40 patients).
``data.frame_sampling: spread`` and ``training.bn_recalibration_sample: spread`` spread both evenly;
their defaults keep every stored run's identity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.data.config import CovidBluesData, ManifestData
from harness.data.frameset import spread
from harness.data.video import DecodeParams, read_video
from harness.suite import ModelConfig, TrainingConfig


def test_spread_positions() -> None:
    assert spread(10, 4).tolist() == [0, 3, 6, 9]
    assert spread(5, 4).tolist() == [0, 1, 3, 4]
    assert spread(3, 5).tolist() == [0, 1, 2] and spread(7, 1).tolist() == [0]


def _clip(path: Path, n: int = 50) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(n):  # every frame bright enough not to be blank, each its own level
            level = np.full((64, 64, 3), 40 + 4 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(level, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_spread_keeps_frames_from_the_whole_clip(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "c.mp4")
    _, first = read_video(clip, 10, 4)
    _, spread_ = read_video(clip, 10, 4, "spread")
    _, every = read_video(clip, 10, None)
    assert first == [0, 10, 20, 30] and every == [0, 10, 20, 30, 40]
    assert spread_ == [0, 10, 30, 40]  # the clip's last kept frame is in, not only its start


def test_the_defaults_keep_cache_keys_and_run_identities(tmp_path: Path) -> None:
    assert "sampling" not in DecodeParams(10, 8, 128, "fan").as_dict()
    assert DecodeParams(10, 8, 128, "fan", "spread").as_dict()["sampling"] == "spread"
    assert "frame_sampling" not in CovidBluesData().model_dump(mode="json")
    assert CovidBluesData(frame_sampling="spread").model_dump(mode="json")["frame_sampling"] == "spread"
    assert "frame_sampling" not in ManifestData(path="m.csv").model_dump(mode="json")
    assert "bn_recalibration_sample" not in TrainingConfig().model_dump(mode="json")
    assert TrainingConfig(bn_recalibration_sample="spread").model_dump(mode="json")["bn_recalibration_sample"] == \
        "spread"
    from harness.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: s\ndata: {source: simulated, patients: 6, image_size: 32}\narms: [{name: baseline}]\n")
    plain = load_suite(path)
    spread_bn = load_suite(path, ["training.bn_recalibration_sample=spread"])
    assert plain.run_config_hash("baseline") != spread_bn.run_config_hash("baseline")
    assert plain.run_config_hash("baseline") == load_suite(path, ["training.bn_recalibration_sample=first"]) \
        .run_config_hash("baseline")


@pytest.mark.parametrize("value", ["random", 1, True])
def test_other_values_are_refused(value) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="first.*spread"):
        TrainingConfig(bn_recalibration_sample=value)
    with pytest.raises(ValidationError, match="first.*spread"):
        CovidBluesData(frame_sampling=value)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("sample, expected", [("first", list(range(8))), ("spread", [0, 6, 11, 17, 23, 29, 34, 40])])
def test_batchnorm_is_re_estimated_on_the_images_asked_for(monkeypatch, sample, expected) -> None:
    """Each training image is one grey level (its index / 100): the images BatchNorm sees name themselves."""
    import harness.training.fit as fit
    from harness.training import RunData, fit_evaluate

    seen: list[list[int]] = []

    def record(model, x, *args, **kwargs):
        seen.append([int(round(100 * float(v))) for v in x[:, 0, 0, 0]])

    monkeypatch.setattr(fit, "recalibrate_batchnorm", record)
    n = 41
    train = np.stack([np.full((32, 32), i / 100, dtype=np.float32) for i in range(n)])
    y = (np.arange(n) % 2).astype(np.int64)
    rest = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    data = RunData(train, y, rest, np.array([0, 1] * 4), rest, np.array([0, 1] * 4))
    cfg = TrainingConfig(epochs=1, batch_size=8, device="cpu", num_threads=1, bn_recalibration_images=8,
                         bn_recalibration_sample=sample)
    fit_evaluate(ModelConfig(), cfg, data, seed=0)
    assert seen and seen[0] == expected
