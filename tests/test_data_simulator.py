"""The simulator is faithful (Rayleigh speckle, pleura at its depth, B-lines detectable by a
non-learned score at easy settings and not at the hardest), deterministic, patient-structured
and cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from harness.data import load_frames
from harness.data import simulator as sim
from harness.data.config import SimulatedData


def _rays(images: np.ndarray, probe: str) -> np.ndarray:
    """Resample frames along the beams, depth 45-95 % of the image: ``(N, depth, lateral)``."""
    s = images.shape[1]
    depth, lateral = np.meshgrid(np.linspace(0.45, 0.95, 32), np.linspace(-0.9, 0.9, 96), indexing="ij")
    if probe == "convex":
        theta, radius = lateral * sim.CONVEX_HALF_ANGLE, depth + sim.CONVEX_RADIUS
        y, x = radius * np.cos(theta) - sim.CONVEX_RADIUS, radius * np.sin(theta)
    else:
        y, x = depth, lateral / 2
    coords = [y * s - 0.5, (x + 0.5) * s - 0.5]
    return np.stack([ndimage.map_coordinates(im.astype(float), coords, order=1) for im in images])


def b_line_score(images: np.ndarray, probe: str) -> np.ndarray:
    """Non-learned B-line score: strongest beam-aligned bright band below the pleura
    (mean along each beam minus a 15-beam running median, maximum over beams)."""
    profile = _rays(images, probe).mean(axis=1)
    return (profile - ndimage.median_filter(profile, size=(1, 15), mode="nearest")).max(axis=1)


def test_envelope_is_rayleigh_in_a_homogeneous_region() -> None:
    rngs = [np.random.default_rng(i) for i in range(4)]
    diffuse = np.ones((4, 256, 192), dtype=np.float32)
    env = sim.speckle_envelope(diffuse, np.zeros_like(diffuse), 1.2, 2.0, rngs)
    inner = env[:, 10:-10, 10:-10]  # away from the convolution borders
    snr = inner.mean() / inner.std()
    assert snr == pytest.approx(sim.RAYLEIGH_SNR, abs=0.04)
    assert sim.RAYLEIGH_SNR == pytest.approx(1.913, abs=1e-3)
    # reduced speckle (strength 0.5) is smoother: higher SNR; intensity still ~ exponential at 1
    smooth = sim.speckle_envelope(diffuse, np.zeros_like(diffuse), 1.2, 2.0,
                                  [np.random.default_rng(i) for i in range(4)], strength=0.5)[:, 10:-10, 10:-10]
    assert smooth.mean() / smooth.std() > 3.0
    intensity = inner**2 / np.mean(inner**2)
    assert np.mean(intensity > 1.0) == pytest.approx(np.exp(-1.0), abs=0.01)  # P(I > <I>) = 1/e


@pytest.mark.parametrize("probe", ["convex", "linear"])
def test_pleural_line_sits_at_the_configured_depth(probe: str) -> None:
    cfg = SimulatedData(patients=6, frames_per_patient=2, image_size=128, probe=probe, b_line_prevalence=0.0,
                        pleura_depth_cm=(1.5, 3.0))
    images, table = sim.simulate(cfg, seed=3)
    s = cfg.image_size
    centre = images[:, :, s // 2 - 2: s // 2 + 2].astype(float).mean(axis=2)  # centre beam
    for i in range(len(images)):
        expected = table.pleura_depth_cm[i] / table.depth_cm[i] * s - 0.5
        window = slice(int(0.03 * s), int(0.45 * s))
        found = window.start + int(np.argmax(centre[i, window]))
        assert abs(found - expected) <= 2.0, (i, found, expected)
        assert 1.5 <= table.pleura_depth_cm[i] <= 3.0


def test_b_line_score_separates_at_easy_settings_and_not_at_the_hardest() -> None:
    aucs = {}
    for name, contrast, speckle in (("easy", 1.0, 0.5), ("medium", 0.15, 1.0), ("hardest", 0.0, 2.0)):
        cfg = SimulatedData(patients=40, frames_per_patient=5, image_size=64, probe="convex",
                            b_line_contrast=contrast, speckle=speckle)
        images, table = sim.simulate(cfg, seed=2)
        assert 0.2 < table.label.mean() < 0.8
        aucs[name] = roc_auc_score(table.label, b_line_score(images, "convex"))
    assert aucs["easy"] > 0.9
    assert aucs["easy"] > aucs["medium"] > aucs["hardest"]
    assert abs(aucs["hardest"] - 0.5) < 0.1


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    cfg = SimulatedData(patients=3, frames_per_patient=2, image_size=32)
    a, ta = sim.simulate(cfg, seed=7)
    b, tb = sim.simulate(cfg, seed=7)
    c, _ = sim.simulate(cfg, seed=8)
    assert a.dtype == np.uint8 and a.shape == (6, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert ta.equals(tb)
    assert not np.array_equal(a, c)


def test_frames_do_not_depend_on_how_many_patients_follow() -> None:
    small, _ = sim.simulate(SimulatedData(patients=2, frames_per_patient=3, image_size=32), seed=1)
    large, _ = sim.simulate(SimulatedData(patients=4, frames_per_patient=3, image_size=32), seed=1)
    np.testing.assert_array_equal(small, large[:6])


def test_convex_fan_is_black_outside_the_sector_and_linear_fills_the_frame() -> None:
    convex, _ = sim.simulate(SimulatedData(patients=2, frames_per_patient=2, image_size=64, probe="convex"), seed=0)
    _, inside = sim.scan_coordinates("convex", 64, *sim.beam_grid(64))
    assert not inside[0, 0] and not inside[-1, 0] and inside[32, 32]
    assert (convex[:, ~inside] == 0).all()
    assert convex[:, inside].mean() > 10
    linear, _ = sim.simulate(SimulatedData(patients=2, frames_per_patient=2, image_size=64, probe="linear"), seed=0)
    assert (linear[:, :, [0, -1]] > 0).mean() > 0.5  # content reaches the side edges


def test_patients_share_settings_and_labels_are_consistent() -> None:
    cfg = SimulatedData(patients=30, frames_per_patient=6, frames_per_video=3, image_size=32, probe="mixed",
                        b_line_prevalence=0.5, confluent_probability=0.3)
    images, table = sim.simulate(cfg, seed=4)
    assert len(table) == 180 and table.sample_id.is_unique
    for _, rows in table.groupby("group"):
        for column in ("probe", "depth_cm", "pleura_depth_cm", "gain_db", "speckle", "speckle_level"):
            assert rows[column].nunique() == 1, column
    for _, rows in table.groupby("video"):
        assert len(rows) == 3 and rows.label.nunique() == 1 and rows.b_line_count.nunique() == 1
    assert ((table.label == 1) == (table.b_line_count > 0)).all()
    assert not table.confluent[table.label == 0].any() and table.confluent[table.label == 1].any()
    assert set(table.probe) == {"convex", "linear"}
    # B-lines cluster by patient (Beta-distributed propensity): more all-same-label patients than chance
    pure = table.groupby("group").label.agg(lambda x: x.nunique() == 1).mean()
    assert pure > 2 * (0.5**5)
    # mean brightness of the probes' frames in a plausible range (real COVID-BLUES frames: 25-55)
    assert 15 < images.mean() < 70


def test_prevalence_extremes() -> None:
    none = sim.simulate(SimulatedData(patients=4, frames_per_patient=2, image_size=16, b_line_prevalence=0.0), 0)[1]
    every = sim.simulate(SimulatedData(patients=4, frames_per_patient=2, image_size=16, b_line_prevalence=1.0), 0)[1]
    assert none.label.sum() == 0 and every.label.all()


def test_load_frames_caches_and_uses_the_suite_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SimulatedData(patients=3, frames_per_patient=2, image_size=32)
    first = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=11)
    assert first.images.shape == (6, 32, 32) and first.labels.dtype == np.int64
    assert list(first.metadata.columns[:3]) == ["patient", "b_line_count", "confluent"]
    assert set(cfg.strata) <= set(first.metadata.columns)

    def no_render(*args, **kwargs):
        raise AssertionError("a cached load must not render")

    monkeypatch.setattr(sim, "render_patient", no_render)
    again = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=11)
    np.testing.assert_array_equal(first.images, again.images)
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    assert again.content_hash == first.content_hash
    pinned = SimulatedData(patients=3, frames_per_patient=2, image_size=32, seed=11)
    assert load_frames(pinned, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=99).content_hash == first.content_hash
    monkeypatch.undo()
    other = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=12)
    assert other.content_hash != first.content_hash
