"""Tests of non-local means: a brute-force reference of the formula, scikit-image's
``denoise_nl_means`` (fast mode) as the quality anchor, the cost structure, inputs and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import denoise_nl_means
from torch.utils._python_dispatch import TorchDispatchMode

import diffusion_filters as df
from diffusion_filters.nonlocal_means import NonlocalMeans, box_sum, nlm_offsets, nonlocal_means


def brute_force_nlm(u: np.ndarray, s: int, k: int, h: float, sigma: float) -> np.ndarray:
    """The definition, pixel by pixel: numpy 'reflect' padding, scikit-image's fast-mode window
    (offsets -o+1 .. o) and 1/s^2 normalisation."""
    o, d = s // 2, k // 2
    p = np.pad(u, o + d, mode="reflect")
    out = np.empty_like(u)
    for i in range(u.shape[0]):
        for j in range(u.shape[1]):
            ci, cj = i + o + d, j + o + d
            ref = p[ci - o + 1 : ci + o + 1, cj - o + 1 : cj + o + 1]
            num = den = 0.0
            for a in range(-d, d + 1):
                for b in range(-d, d + 1):
                    q = p[ci + a - o + 1 : ci + a + o + 1, cj + b - o + 1 : cj + b + o + 1]
                    w = np.exp(-max(((ref - q) ** 2 - 2 * sigma**2).sum() / s**2, 0.0) / h**2)
                    num += w * p[ci + a, cj + b]
                    den += w
            out[i, j] = num / den
    return out


def phantom(n: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    img = 0.1 + 0.6 * ((((xx - n / 2) / (0.4 * n)) ** 2 + ((yy - n / 2) / (0.3 * n)) ** 2) < 1)
    img += 0.25 * ((xx > 0.3 * n) & (xx < 0.5 * n) & (yy > 0.35 * n) & (yy < 0.7 * n))
    img -= 0.3 * (((xx - 0.65 * n) ** 2 + (yy - 0.45 * n) ** 2) < (0.08 * n) ** 2)
    img += 0.1 * np.sin(xx / 5.0) * (yy > 0.8 * n)  # some texture
    return img


@pytest.mark.parametrize(("s", "k", "h", "sigma"), [(3, 5, 0.3, 0.05), (1, 3, 0.2, 0.0), (5, 7, 0.5, 0.1)])
def test_equals_brute_force_definition(s, k, h, sigma):
    u = np.random.default_rng(0).random((12, 15))
    ref = brute_force_nlm(u, s, k, h, sigma)
    np.testing.assert_allclose(nonlocal_means(u, patch_size=s, search_size=k, h=h, sigma=sigma), ref, atol=1e-12)
    out32 = nonlocal_means(u.astype(np.float32), patch_size=s, search_size=k, h=h, sigma=sigma)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, atol=2e-6)


@pytest.mark.parametrize(
    ("noise", "h_factor", "use_sigma"),
    [(0.05, 0.8, True), (0.1, 0.8, True), (0.1, 0.6, True), (0.1, 1.0, False)],
)
def test_psnr_within_half_db_of_scikit_image(noise, h_factor, use_sigma):
    clean = phantom()
    rng = np.random.default_rng(1)
    noisy = clean + noise * rng.standard_normal(clean.shape)
    h, sigma = h_factor * noise, noise if use_sigma else 0.0
    ref = denoise_nl_means(noisy, patch_size=7, patch_distance=5, h=h, sigma=sigma, fast_mode=True)
    ours = nonlocal_means(noisy, patch_size=7, search_size=11, h=h, sigma=sigma)
    p_ref = peak_signal_noise_ratio(clean, ref, data_range=1.0)
    p_ours = peak_signal_noise_ratio(clean, ours, data_range=1.0)
    p_noisy = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    assert p_ours > p_noisy + 4.0  # it denoises
    # The issue asks for 0.5 dB; with scikit-image's window convention the gap is ~0.02 dB and
    # pixels differ only where scikit-image drops weights below exp(-5).
    assert abs(p_ours - p_ref) < 0.1, (p_ours, p_ref)
    assert np.abs(ours - ref).max() < 0.02


class _CountElements(TorchDispatchMode):
    """Counts the elements written by every aten op (a proxy for memory traffic and FLOPs)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and func._schema.name not in ("aten::slice", "aten::narrow", "aten::view"):
            if not out._is_view():
                self.elements += out.numel()
            elif func._schema.is_mutable:
                self.elements += out.numel()
            self.ops += 1
        return out


def _work(patch: int, search: int = 5) -> tuple[int, int]:
    """Elements and ops of the torch form (counted by the dispatch mode; the C kernel is invisible to it)."""
    from diffusion_filters import _compile

    x = torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(2))
    previous = _compile.compile_mode()
    _compile.set_compile("off")
    try:
        with _CountElements() as c:
            nonlocal_means(x, patch_size=patch, search_size=search, h=0.1)
    finally:
        _compile.set_compile(previous)
    return c.elements, c.ops


def test_cost_does_not_grow_with_patch_area():
    e5, o5 = _work(5)
    e17, o17 = _work(17)
    # Patch area grows 11.6x; the work grows only by the log2 box-sum passes and the margins.
    assert e17 < 1.6 * e5, (e5, e17)
    assert o17 < 1.5 * o5, (o5, o17)
    # ... while it grows with the number of search offsets (the real cost driver).
    e_big_search, _ = _work(5, search=9)
    assert e_big_search > 2.5 * e5


def test_offsets_cover_the_window_once_with_symmetry():
    offs = nlm_offsets(5)
    assert len(offs) == 12 and len(set(offs)) == 12
    full = set(offs) | {(-a, -b) for a, b in offs} | {(0, 0)}
    assert full == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}


@pytest.mark.parametrize("size", [1, 2, 3, 6, 7, 11, 16])
def test_box_sum_equals_sliding_window_sum(size):
    x = torch.rand(2, 20, 23, dtype=torch.float64)
    ref = x.unfold(2, size, 1).sum(-1)
    torch.testing.assert_close(box_sum(x, size, 2), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(box_sum(x, size, 1), x.unfold(1, size, 1).sum(-1), atol=1e-12, rtol=0)


def test_constant_image_and_unit_search_window_unchanged():
    x = torch.full((2, 1, 20, 20), 0.42, dtype=torch.float64)
    torch.testing.assert_close(nonlocal_means(x, patch_size=5, search_size=7, h=0.1), x, atol=1e-15, rtol=0)
    y = torch.rand(1, 1, 16, 16)
    assert torch.equal(nonlocal_means(y, patch_size=5, search_size=1, h=0.1), y)


def test_batch_channels_and_uint8_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 2, 24, 24, generator=g)
    y = nonlocal_means(x, patch_size=3, search_size=5, h=0.2)
    for b in range(3):
        for c in range(2):
            torch.testing.assert_close(y[b, c], nonlocal_means(x[b, c], patch_size=3, search_size=5, h=0.2), atol=1e-6, rtol=0)
    img = (np.random.default_rng(4).random((20, 22)) * 255).astype(np.uint8)
    out = nonlocal_means(img, patch_size=3, search_size=5, h=0.2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (20, 22)
    np.testing.assert_allclose(out, nonlocal_means(img.astype(np.float32) / 255, patch_size=3, search_size=5, h=0.2), atol=1e-7)
    # Deterministic (threaded chunks included).
    big = torch.rand(6, 1, 200, 200, generator=g)
    assert torch.equal(nonlocal_means(big, patch_size=3, search_size=5, h=0.1), nonlocal_means(big, patch_size=3, search_size=5, h=0.1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(patch_size=4), "patch_size=4 is invalid; must be an odd integer"),
        (dict(patch_size=0), "patch_size"),
        (dict(search_size=6), "search_size=6"),
        (dict(h=0.0), r"h=0(\.0)? is invalid"),
        (dict(h=-1.0), "h=-1"),
        (dict(sigma=-0.1), "sigma=-0.1 is invalid"),
        (dict(sigma=float("nan")), "sigma"),
    ],
)
def test_rejects_bad_parameters(kwargs, match):
    base = dict(patch_size=3, search_size=5, h=0.1)
    with pytest.raises(ValueError, match=match):
        nonlocal_means(torch.rand(16, 16), **{**base, **kwargs})


def test_rejects_nan_and_too_small_images():
    x = torch.rand(16, 16)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        nonlocal_means(x, patch_size=3, search_size=5, h=0.1)
    with pytest.raises(ValueError, match="minimum size is 9x9"):
        nonlocal_means(torch.rand(8, 30), patch_size=7, search_size=11, h=0.1)
    assert nonlocal_means(torch.rand(9, 9), patch_size=7, search_size=11, h=0.1).shape == (9, 9)


def test_registry_and_describe():
    m = df.create("nonlocal_means", patch_size=7, search_size=11, h=0.08, sigma=0.05)
    assert isinstance(m, NonlocalMeans)
    assert m.describe() == "non-local means (patch 7×7, search 11×11, h=0.08, σ=0.05)"
    x = torch.rand(1, 1, 24, 24)
    assert torch.equal(m(x), nonlocal_means(x, patch_size=7, search_size=11, h=0.08, sigma=0.05))
    with pytest.raises(ValueError, match="patch_size=8"):
        df.create("nonlocal_means", patch_size=8, search_size=11, h=0.08)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_keeps_device():
    x = torch.rand(3, 1, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = nonlocal_means(x.cuda(), patch_size=5, search_size=7, h=0.2, sigma=0.05)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), nonlocal_means(x, patch_size=5, search_size=7, h=0.2, sigma=0.05), atol=1e-10, rtol=0)


# ---------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("s", "k", "sigma"), [(3, 5, 0.05), (1, 3, 0.0), (5, 7, 0.1)])
def test_gradcheck_input_and_h(s, k, sigma):
    """The hand-written backward (recomputing each offset's weights) is the exact gradient."""
    x = torch.rand(2, 1, 8, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(s + k))
    h = torch.tensor([0.3, 0.2], dtype=torch.float64).reshape(2, 1, 1, 1)
    f = lambda x, h: nonlocal_means(x, patch_size=s, search_size=k, h=h, sigma=sigma)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x.requires_grad_(), h.requires_grad_()), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradient_path_computes_the_same_filter():
    x = torch.rand(3, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    ref = nonlocal_means(x, patch_size=7, search_size=11, h=0.1, sigma=0.02)
    xg = x.clone().requires_grad_()
    y = nonlocal_means(xg, patch_size=7, search_size=11, h=0.1, sigma=0.02)
    torch.testing.assert_close(y.detach(), ref, atol=1e-5, rtol=0)
    y.square().sum().backward()
    assert xg.grad is not None and bool(torch.isfinite(xg.grad).all()) and float(xg.grad.abs().sum()) > 0
    # A tensor h without gradients takes the same (custom-Function) path and agrees too.
    torch.testing.assert_close(nonlocal_means(x, patch_size=7, search_size=11, h=torch.tensor(0.1), sigma=0.02), ref, atol=1e-5, rtol=0)
