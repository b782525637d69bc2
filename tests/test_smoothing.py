"""Gaussian and median comparators: equality with SciPy (reflect mode), input handling, validation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import diffusion_filters as df
from diffusion_filters.smoothing import symmetric_pad


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5, 6.0])
def test_gaussian_equals_scipy_reflect(sigma: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 20, 17))  # sigma=6: radius 24 > image side, reflection wraps
    y = df.gaussian(x, sigma=sigma)
    ref = np.stack([[ndi.gaussian_filter(p, sigma, mode="reflect", truncate=4.0) for p in img] for img in x])
    assert y.dtype == np.float64 and y.shape == x.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)
    y32 = df.gaussian(x.astype(np.float32), sigma=sigma)
    np.testing.assert_allclose(y32, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_median_equals_scipy_reflect(size: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((2, 1, 15, 19)).astype(np.float32)
    y = df.median(torch.from_numpy(x), size=size)
    ref = np.stack([[ndi.median_filter(p, size=size, mode="reflect") for p in img] for img in x])
    assert isinstance(y, torch.Tensor)
    np.testing.assert_array_equal(y.numpy(), ref)
    ties = np.round(x * 3) / 3  # many equal values in a window (3x3 uses a min/max network)
    ref_ties = np.stack([[ndi.median_filter(p, size=size, mode="reflect") for p in img] for img in ties])
    np.testing.assert_array_equal(df.median(ties, size=size), ref_ties)


def test_median_removes_impulse_and_keeps_step_edge() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[..., :, 5:] = 1.0
    x[0, 0, 2, 2] = 1.0
    y = df.median(x, size=3)
    expected = torch.zeros_like(x)
    expected[..., :, 5:] = 1.0
    assert torch.equal(y, expected)


def test_symmetric_pad_matches_numpy_symmetric() -> None:
    a = np.arange(12.0).reshape(3, 4)
    got = symmetric_pad(torch.from_numpy(a)[None, None], 5, 2)[0, 0].numpy()
    np.testing.assert_array_equal(got, np.pad(a, ((5, 5), (2, 2)), mode="symmetric"))


def test_gaussian_preserves_mean_and_constants() -> None:
    const = torch.full((1, 2, 8, 9), 0.25, dtype=torch.float64)
    assert torch.allclose(df.gaussian(const, sigma=1.7), const, atol=1e-15)
    x = torch.rand(1, 1, 32, 32, dtype=torch.float64)
    assert abs(float(df.gaussian(x, sigma=1.0).mean() - x.mean())) < 1e-3  # symmetric reflection: near, not exactly


def test_input_kinds_and_uint8() -> None:
    img = (np.arange(64).reshape(8, 8) * 3).astype(np.uint8)
    y = df.gaussian(img, sigma=1.0)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.shape == (8, 8)
    np.testing.assert_allclose(y, ndi.gaussian_filter(img.astype(np.float32) / 255, 1.0, mode="reflect"), atol=1e-6)
    m = df.median(img, size=3)
    np.testing.assert_allclose(m, ndi.median_filter(img.astype(np.float32) / 255, 3, mode="reflect"), atol=0)


def test_validation_errors_and_describe() -> None:
    x = torch.rand(6, 6)
    with pytest.raises(ValueError, match=r"^gaussian: sigma=0.0 is invalid; must be a number in \(0, 100\]$"):
        df.gaussian(x, sigma=0.0)
    with pytest.raises(ValueError, match=r"^median: size=4 is invalid; must be an odd integer in \[1, 15\]$"):
        df.median(x, size=4)
    with pytest.raises(ValueError, match=r"median: size=3.0 is invalid"):
        df.Median(size=3.0)
    with pytest.raises(ValueError, match="median: input image contains 1 NaN/Inf"):
        xb = x.clone()
        xb[1, 1] = float("inf")
        df.median(xb, size=3)
    assert df.create("gaussian", sigma=1.5).describe() == "Gaussian (σ=1.5)"
    assert df.create("median", size=5).describe() == "median (5×5)"
