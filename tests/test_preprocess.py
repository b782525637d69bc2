"""Preprocessing cache: equals the pipeline applied directly, keyed by content, cost recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffusion_filters
from harness.preprocess import on_the_fly_filter, pipeline_hash, preprocess_frames

STEPS = [{"perona_malik": {"iterations": 3, "kappa": 0.1, "step": 0.2}}, {"gaussian": {"sigma": 1.0}}]


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, size=(10, 24, 24), dtype=np.uint8)


def test_matches_pipeline_and_caches(tmp_path, images):
    first = preprocess_frames(images, "hash-a", STEPS, tmp_path, batch_size=4)
    expected = diffusion_filters.Pipeline.from_config(STEPS)(torch.from_numpy(images).float()[:, None] / 255.0)
    np.testing.assert_allclose(first.images, expected.squeeze(1).clamp(0, 1).numpy(), atol=1e-6)
    assert first.images.dtype == np.float32 and not first.cached and first.seconds > 0 and first.n_images == 10
    again = preprocess_frames(images, "hash-a", STEPS, tmp_path)
    assert again.cached and again.seconds == first.seconds  # the original cost, not the load time
    assert isinstance(again.images, np.memmap) and not again.images.flags.writeable
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    # a different data content hash misses; an equivalent spelling of the pipeline hits
    other = preprocess_frames(images, "hash-b", STEPS, tmp_path)
    assert not other.cached
    spelled = [{"perona_malik": {"kappa": 0.1, "step": 0.2, "iterations": 3, "conductance": "exponential"}},
               {"gaussian": {"sigma": 1.0}}]
    assert pipeline_hash(spelled) == pipeline_hash(STEPS)
    assert preprocess_frames(images, "hash-a", spelled, tmp_path).cached
    assert len(list((tmp_path / "preprocessed").rglob("*.npy"))) == 2


def test_preprocessed_frames_changed_on_disk_are_recomputed(tmp_path, images, capsys):
    """Issue 21: a cached entry changed in place (same size, valid header) is recomputed, with one line."""
    first = np.array(preprocess_frames(images, "hash-a", STEPS, tmp_path).images)
    (npy,) = (tmp_path / "preprocessed").rglob("*.npy")
    arr = np.load(npy, mmap_mode="r+")
    arr[:] = 1.0 - arr  # same size, same header, other pixels
    arr.flush()
    del arr
    capsys.readouterr()
    again = preprocess_frames(images, "hash-a", STEPS, tmp_path)
    assert not again.cached
    np.testing.assert_array_equal(np.asarray(again.images), first)
    warned = [line for line in capsys.readouterr().err.splitlines() if "checksum" in line]
    assert len(warned) == 1 and str(npy) in warned[0]
    assert preprocess_frames(images, "hash-a", STEPS, tmp_path).cached  # rebuilt: the next read hits


def test_empty_pipeline_and_on_the_fly(tmp_path, images):
    plain = preprocess_frames(images, "h", [], tmp_path)
    np.testing.assert_array_equal(plain.images, images.astype(np.float32) / 255)
    assert plain.mode == "none" and plain.seconds == 0.0 and not (tmp_path / "preprocessed").exists()
    fn = on_the_fly_filter(STEPS)
    x = torch.from_numpy(images[:2]).float()[:, None] / 255
    y = fn(x)
    assert y.shape == x.shape and not y.requires_grad and float(y.min()) >= 0 and float(y.max()) <= 1
    np.testing.assert_allclose(y.squeeze(1).numpy(), preprocess_frames(images, "h", STEPS, tmp_path).images[:2],
                               atol=1e-6)
    with pytest.raises(ValueError, match="no content_hash"):
        preprocess_frames(images, "", STEPS, tmp_path)
