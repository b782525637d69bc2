"""SRAD (Yu & Acton 2002): speckle reduction with edge preservation, the q0 estimate,
conservation, maximum principle, symmetry, gradients and validation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import diffusion_filters as df

srad_module = sys.modules["diffusion_filters.srad"]
RAYLEIGH_CV2 = (4 - np.pi) / np.pi  # var / mean^2 of a Rayleigh variable (fully developed speckle amplitude)


def _speckle_edge(h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    """Two homogeneous regions (0.2 | 0.6, vertical edge in the middle) under Rayleigh speckle of mean 1."""
    rng = np.random.default_rng(seed)
    base = np.where(np.arange(w)[None, :] < w // 2, 0.2, 0.6) * np.ones((h, 1))
    speckle = rng.rayleigh(np.sqrt(2 / np.pi), (h, w))
    return torch.from_numpy(base * speckle)[None, None]


def _cv_and_contrast(y: torch.Tensor) -> tuple[float, float]:
    """CV of the left homogeneous region (away from the edge and border); edge contrast from the
    column-mean profile (2 columns right of the edge minus 2 columns left of it)."""
    a = y[0, 0].numpy()
    w = a.shape[1]
    left = a[8:-8, 4:24]
    profile = a[8:-8].mean(axis=0)
    contrast = profile[w // 2 + 1 : w // 2 + 3].mean() - profile[w // 2 - 3 : w // 2 - 1].mean()
    return float(left.std() / left.mean()), float(contrast)


def test_q0_estimate_matches_rayleigh_speckle() -> None:
    rng = np.random.default_rng(1)
    x = torch.from_numpy(0.5 * rng.rayleigh(1.0, (2, 1, 128, 128)))
    q0sq = srad_module.estimate_q0_squared(x)
    assert q0sq.shape == (2, 1, 1, 1)
    assert torch.allclose(q0sq, torch.full_like(q0sq, RAYLEIGH_CV2), rtol=0.1)
    # Zero background (outside an ultrasound sector) is ignored by the estimate.
    x[..., :, :64] = 0.0
    assert torch.allclose(srad_module.estimate_q0_squared(x), q0sq, rtol=0.15)


def test_reduces_speckle_and_keeps_edge_better_than_gaussian() -> None:
    x = _speckle_edge()
    cv_in, contrast_in = _cv_and_contrast(x)
    y = df.srad(x, iterations=20, step=0.2)
    cv_out, contrast_out = _cv_and_contrast(y)
    assert cv_in > 0.45  # fully developed speckle: ~0.52
    assert cv_out < cv_in / 4  # speckle strongly reduced (measured: 0.54 -> 0.08)
    assert contrast_out > 0.85 * contrast_in  # the edge keeps its contrast (measured: 90 %)
    # A Gaussian that reduces the speckle as much blurs the edge: lower contrast.
    for sigma in (1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
        g = torch.from_numpy(ndi.gaussian_filter(x[0, 0].numpy(), sigma, mode="reflect"))[None, None]
        cv_g, contrast_g = _cv_and_contrast(g)
        if cv_g <= cv_out:
            break
    else:
        pytest.fail("no Gaussian reached SRAD's speckle reduction")
    assert contrast_g < 0.8 * contrast_out


def test_fixed_q0_smooths_more_than_the_decreasing_estimate() -> None:
    """A q0 fixed at the input's speckle level keeps calling the (already smoothed) edge region
    homogeneous, so it erodes the edge: why the paper lets q0(t) decrease with t."""
    x = _speckle_edge(seed=2)
    cv_in, _ = _cv_and_contrast(x)
    cv_fix, contrast_fix = _cv_and_contrast(df.srad(x, iterations=20, step=0.2, q0=float(np.sqrt(RAYLEIGH_CV2))))
    cv_est, contrast_est = _cv_and_contrast(df.srad(x, iterations=20, step=0.2))
    assert cv_fix < cv_in / 4 and cv_est < cv_in / 4
    assert contrast_fix < 0.8 * contrast_est


def test_mean_preserved_maximum_principle_constant() -> None:
    x = _speckle_edge(seed=3)
    y = df.srad(x, iterations=30, step=0.25)
    assert abs(float(y.mean() - x.mean())) < 1e-6
    assert float(y.min()) >= float(x.min()) - 1e-12 and float(y.max()) <= float(x.max()) + 1e-12
    yf = df.srad(x.float(), iterations=30, step=0.25)
    assert abs(float(yf.double().mean() - x.mean())) < 1e-6
    const = torch.full((2, 1, 10, 12), 0.4)
    assert torch.equal(df.srad(const, iterations=10, step=0.2), const)
    zeros = torch.zeros(1, 1, 10, 12)
    assert torch.equal(df.srad(zeros, iterations=10, step=0.2), zeros)


def test_transpose_equivariance() -> None:
    x = _speckle_edge(h=48, w=40, seed=4)
    y = df.srad(x, iterations=10, step=0.2)
    yt = df.srad(x.transpose(-1, -2), iterations=10, step=0.2)
    assert torch.allclose(yt, y.transpose(-1, -2), atol=1e-9)


@pytest.mark.parametrize("q0", [None, 0.4])
def test_gradcheck_input_and_step(q0: float | None) -> None:
    g = torch.Generator().manual_seed(0)
    x = (0.5 + torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64)).requires_grad_()
    step = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: df.srad(x, iterations=3, step=s, q0=q0), (x, step), eps=1e-6, atol=1e-5)


def test_gradcheck_q0_tensor() -> None:
    g = torch.Generator().manual_seed(1)
    x = (0.5 + torch.rand(1, 1, 6, 7, generator=g, dtype=torch.float64)).requires_grad_()
    q0 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, q: df.srad(x, iterations=2, step=0.2, q0=q), (x, q0), eps=1e-6, atol=1e-5)


def test_input_kinds() -> None:
    img = (_speckle_edge()[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)
    y = df.srad(img, iterations=5, step=0.2)
    assert isinstance(y, np.ndarray) and y.shape == img.shape and y.dtype == np.float32
    ref = df.srad(torch.from_numpy(img.astype(np.float32) / 255), iterations=5, step=0.2)
    np.testing.assert_allclose(y, ref.numpy(), atol=1e-6)
    batch = _speckle_edge().repeat(3, 2, 1, 1)
    yb = df.srad(batch, iterations=5, step=0.2)
    assert yb.shape == batch.shape
    assert torch.allclose(yb[2, 1], df.srad(batch[0, 0], iterations=5, step=0.2), atol=1e-12)


def test_validation_errors() -> None:
    x = torch.rand(8, 8)
    with pytest.raises(ValueError, match="srad: input has negative values"):
        df.srad(x - 0.5, iterations=1, step=0.2)
    with pytest.raises(ValueError, match="srad: input image contains 1 NaN/Inf"):
        xb = x.clone()
        xb[0, 0] = float("nan")
        df.srad(xb, iterations=1, step=0.2)
    with pytest.raises(ValueError, match=r"srad: step=0.3 is outside the stability bound 0 < step <= 0.25"):
        df.srad(x, iterations=1, step=0.3)
    with pytest.raises(ValueError, match=r"srad: iterations=-2 is invalid"):
        df.SRAD(iterations=-2, step=0.2)
    with pytest.raises(ValueError, match=r"^srad: q0=0.0 is invalid; must be None or a number or tensor in \(0, 10\]$"):
        df.srad(x, iterations=1, step=0.2, q0=0.0)
    with pytest.raises(ValueError, match=r"minimum size is 3x3"):
        df.srad(torch.rand(8, 2), iterations=1, step=0.2)
    assert torch.equal(df.srad(x, iterations=0, step=0.2), x)


def test_module_describe() -> None:
    assert df.create("srad", iterations=20, step=0.2).describe() == "SRAD (20 it., Δt=0.2, q0 estimated)"
    assert df.SRAD(iterations=5, step=0.1, q0=0.5).describe() == "SRAD (5 it., Δt=0.1, q0=0.5)"
