"""Data throughput: simulator, decode of a video file, cached reload of a manifest set.

pytest-benchmark: ``python -m pytest tests/benchmarks/test_bench_data.py --benchmark-enable``
(CI runs them once with --benchmark-disable, so the inputs are small). Table with ratios to
anchors measured in the same run, at full size (1,000 frames; whole COVID-BLUES when given):
``python -m harness.data.bench --frames 1000 --size 128 [--covid-blues DIR]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.data import ManifestData, SimulatedData, load_frames
from harness.data import simulator as sim
from harness.data import video


def test_bench_simulate_64_frames(benchmark) -> None:
    cfg = SimulatedData(patients=8, frames_per_patient=8, image_size=128, probe="mixed")
    images, _ = benchmark(sim.simulate, cfg, 0)
    assert images.shape == (64, 128, 128)


def test_bench_scatterer_field_anchor(benchmark) -> None:
    """The anchor: drawing the complex scatterer field of 64 frames (irreducible RNG cost)."""
    nd, na = sim.beam_grid(128)

    def draw() -> np.ndarray:
        rng = np.random.default_rng(0)
        return np.stack([rng.standard_normal((2, nd, na), dtype=np.float32) for _ in range(64)])

    assert benchmark(draw).shape == (64, 2, nd, na)


def _clip(tmp_path: Path, seed: int = 0) -> Path:
    import av

    path = tmp_path / ("clip.mp4" if seed == 0 else f"clip{seed}.mp4")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 352
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(seed)
        for _ in range(50):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (352, 352, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_bench_decode_video(benchmark, tmp_path: Path) -> None:
    path = _clip(tmp_path)
    frames, indices = benchmark(video.decode_media, path, video.DecodeParams(1, None, 128, "fan"))
    assert frames.shape == (50, 128, 128) and indices[-1] == 49


def test_bench_cached_reload(benchmark, tmp_path: Path) -> None:
    _clip(tmp_path)
    (tmp_path / "m.csv").write_text("file,label\nclip.mp4,yes\n")
    cfg = ManifestData(path=str(tmp_path / "m.csv"), frame_step=1, max_frames_per_video=None, image_size=128)
    load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    frames = benchmark(load_frames, cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert len(frames) == 50


def test_bench_command_table(capsys: pytest.CaptureFixture) -> None:
    """The bench command prints its table (run small here)."""
    from harness.data.bench import main

    assert main(["--frames", "20", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "simulate 20 frames 32x32" in out and "scatterer-field draw" in out


def test_bench_covid_rows_on_a_tiny_copy(tmp_path: Path) -> None:
    """The COVID-BLUES part of the bench command (child processes) on a two-video fake copy."""
    import shutil

    from harness.data.bench import bench_covid

    root = tmp_path / "cb"
    (root / "lus_videos").mkdir(parents=True)
    for seed, name in enumerate(("patient_1_L1", "patient_2_R3")):  # two patients, two different clips (the
        shutil.copy(_clip(tmp_path, seed), root / "lus_videos" / f"{name}.mp4")  # same frame under both is refused)
    (root / "severity.csv").write_text("video_file,Severity Score,A-lines,B-lines,comments\n"
                                       "patient_1_L1,1.0,yes,yes,x\npatient_2_R3,0.0,yes,no,y\n")
    (root / "clinical_variables.csv").write_text("patient_id,cov_test\n1,1\n2,0\n")
    rows = bench_covid(str(root), 32, 5, None)
    assert len(rows) == 2 and "2 videos" in rows[0][0] and "-> 20 frames" in rows[0][0]
    assert "peak RSS" in rows[0][2] and "faster than decoding" in rows[1][2]
