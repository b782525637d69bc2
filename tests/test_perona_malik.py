"""Perona-Malik: equality with MedPy, conservation, maximum principle, heat-equation limit,
symmetry, gradients, input handling and validation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import diffusion_filters as df
from diffusion_filters import _compile, _scheduler

medpy_smoothing = pytest.importorskip("medpy.filter.smoothing")
pm_module = sys.modules["diffusion_filters.perona_malik"]

OPTIONS = {"exponential": 1, "rational": 2, "tukey": 3}


def _images(n: int = 3, h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    """Float32 images in [0, 1]: a step edge + a disc + noise (structure and noise for PM)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.3 + 0.4 * (xx > w // 2) + 0.2 * ((yy - h / 2) ** 2 + (xx - w / 3) ** 2 < 64)
    return np.clip(base + 0.08 * rng.standard_normal((n, h, w)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("conductance", list(OPTIONS))
@pytest.mark.parametrize("spacing", [None, (1.0, 2.0)])
def test_equals_medpy(conductance: str, spacing: tuple[float, float] | None) -> None:
    x = _images()
    step = 0.2 if spacing is None else 0.3  # bound with spacing (1, 2): 1 / (2 (1 + 1/2)) = 1/3
    ours = df.perona_malik(x[:, None], iterations=15, kappa=0.1, step=step, conductance=conductance, spacing=spacing)
    ref = np.stack(
        [
            medpy_smoothing.anisotropic_diffusion(im, niter=15, kappa=0.1, gamma=step, voxelspacing=spacing, option=OPTIONS[conductance])
            for im in x
        ]
    )
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours[:, 0], ref, rtol=0, atol=1e-5)
    assert np.abs(ref - x).max() > 0.01  # the comparison is not vacuous: the images changed


def test_compiled_fast_path_equals_medpy_and_eager() -> None:
    x = _images(n=4, h=32, w=36, seed=1)
    previous = _compile.compile_mode()
    try:
        _compile.set_compile("on")
        fast = df.perona_malik(x[:, None], iterations=12, kappa=0.1, step=0.2)  # 2 fused blocks of 5 + 2 eager
    finally:
        _compile.set_compile(previous)
    _compile.set_compile("off")
    try:
        eager = df.perona_malik(x[:, None], iterations=12, kappa=0.1, step=0.2)
    finally:
        _compile.set_compile(previous)
    ref = np.stack([medpy_smoothing.anisotropic_diffusion(im, niter=12, kappa=0.1, gamma=0.2, option=1) for im in x])
    np.testing.assert_allclose(fast[:, 0], ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast, eager, rtol=0, atol=1e-6)


@pytest.mark.parametrize("conductance", list(OPTIONS))
def test_mean_preserved_and_maximum_principle(conductance: str) -> None:
    x = torch.from_numpy(_images(n=2, seed=3)).double()[:, None]
    y = df.perona_malik(x, iterations=40, kappa=0.05, step=0.25, conductance=conductance)
    assert torch.allclose(y.mean(dim=(-1, -2)), x.mean(dim=(-1, -2)), rtol=0, atol=1e-6)
    xf = x.float()
    yf = df.perona_malik(xf, iterations=40, kappa=0.05, step=0.25, conductance=conductance)
    assert torch.allclose(yf.mean(dim=(-1, -2)), xf.mean(dim=(-1, -2)), rtol=0, atol=1e-6)
    lo, hi = x.amin(dim=(-1, -2), keepdim=True), x.amax(dim=(-1, -2), keepdim=True)
    assert bool((y >= lo - 1e-12).all()) and bool((y <= hi + 1e-12).all())
    assert float(y.std()) < float(x.std())  # it did smooth


@pytest.mark.parametrize(("iterations", "step", "tol"), [(20, 0.2, 3e-3), (50, 0.1, 1e-3)])
def test_huge_kappa_is_gaussian_of_sigma_sqrt_2t(iterations: int, step: float, tol: float) -> None:
    """kappa -> inf: linear heat equation; its solution at t is a Gaussian of sigma = sqrt(2 t).

    The explicit scheme differs from the continuous Gaussian by O(step) and the 5-point Laplacian's
    truncation error; on white noise in [0, 1] (std 0.29) the interior difference is ~1.3e-3 for
    t = 4, step 0.2 and ~5e-4 for t = 5, step 0.1: tolerances 3e-3 and 1e-3. Compared at least
    4 sigma + 2 px away from the border (the Gaussian reference uses SciPy's reflect mode).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 96, 96, generator=g, dtype=torch.float64)
    sigma = float(np.sqrt(2 * iterations * step))
    y = df.perona_malik(x, iterations=iterations, kappa=1e4, step=step)[0, 0].numpy()
    ref = ndi.gaussian_filter(x[0, 0].numpy(), sigma, mode="reflect")
    b = int(4 * sigma) + 2
    err = np.abs(y - ref)[b:-b, b:-b].max()
    assert err < tol
    assert np.abs(x[0, 0].numpy() - ref)[b:-b, b:-b].max() > 100 * tol  # blur is far from identity


@pytest.mark.parametrize("conductance", list(OPTIONS))
def test_transpose_equivariance(conductance: str) -> None:
    x = torch.from_numpy(_images(n=2, seed=4))[:, None]
    y = df.perona_malik(x, iterations=10, kappa=0.1, step=0.2, conductance=conductance)
    yt = df.perona_malik(x.transpose(-1, -2), iterations=10, kappa=0.1, step=0.2, conductance=conductance)
    assert torch.allclose(yt, y.transpose(-1, -2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("conductance", list(OPTIONS))
def test_gradcheck_input_kappa_step(conductance: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    kappa = torch.tensor([0.4, 0.7], dtype=torch.float64).view(1, 2, 1, 1).requires_grad_()
    step = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, kappa: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return df.perona_malik(x, iterations=3, kappa=kappa, step=step, conductance=conductance)

    assert torch.autograd.gradcheck(fn, (x, kappa, step), eps=1e-6, atol=1e-6)


def test_gradient_reaches_learnable_parameters_in_float32() -> None:
    x = torch.rand(2, 1, 16, 16)
    kappa = torch.tensor(0.2, requires_grad=True)
    step = torch.tensor(0.15, requires_grad=True)
    df.perona_malik(x, iterations=4, kappa=kappa, step=step).pow(2).sum().backward()
    assert kappa.grad is not None and float(kappa.grad.abs()) > 0
    assert step.grad is not None and float(step.grad.abs()) > 0


def test_per_channel_parameters_equal_separate_calls() -> None:
    x = torch.from_numpy(_images(n=2, seed=5)).view(1, 2, 40, 52)
    kappa = torch.tensor([0.05, 0.3]).view(1, 2, 1, 1)
    y = df.perona_malik(x, iterations=5, kappa=kappa, step=0.2)
    for c, k in enumerate((0.05, 0.3)):
        yc = df.perona_malik(x[:, c : c + 1], iterations=5, kappa=k, step=0.2)
        assert torch.allclose(y[:, c : c + 1], yc, atol=1e-7)


def test_mixture_conductance_endpoints_equal_pm() -> None:
    x = torch.from_numpy(_images(n=1, seed=6))[:, None]
    for shape, conductance in ((1.0, "exponential"), (0.0, "rational")):
        mix = df.perona_malik_mixture(x, iterations=6, kappa=0.1, step=0.2, shape=shape)
        pure = df.perona_malik(x, iterations=6, kappa=0.1, step=0.2, conductance=conductance)
        assert torch.allclose(mix, pure, atol=1e-6)
    with pytest.raises(ValueError, match=r"^perona_malik_mixture: shape=1.5 is invalid; must be a number or tensor in \[0, 1\]$"):
        df.perona_malik_mixture(x, iterations=1, kappa=0.1, step=0.2, shape=1.5)


def test_input_kinds_shapes_and_dtypes() -> None:
    img = (_images(n=1)[0] * 255).round().astype(np.uint8)
    ref = df.perona_malik(torch.from_numpy(img.astype(np.float32) / 255), iterations=5, kappa=0.1, step=0.2)
    out = df.perona_malik(img, iterations=5, kappa=0.1, step=0.2)
    assert isinstance(out, np.ndarray) and out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-7)
    chw = torch.from_numpy(_images(n=3)).double()
    y = df.perona_malik(chw, iterations=5, kappa=0.1, step=0.2)
    assert y.shape == chw.shape and y.dtype == torch.float64
    y4 = df.perona_malik(chw[None], iterations=5, kappa=0.1, step=0.2)
    assert torch.equal(y4[0], y)


def test_zero_iterations_and_constant_image_unchanged() -> None:
    x = torch.from_numpy(_images(n=1))
    y0 = df.perona_malik(x, iterations=0, kappa=0.1, step=0.2)
    assert torch.equal(y0, x) and y0.data_ptr() != x.data_ptr()
    const = torch.full((1, 1, 9, 11), 0.37)
    for conductance in OPTIONS:
        assert torch.equal(df.perona_malik(const, iterations=25, kappa=0.1, step=0.25, conductance=conductance), const)


def test_validation_errors() -> None:
    x = torch.rand(8, 8)
    for bad in (float("nan"), float("inf"), -float("inf")):
        xb = x.clone()
        xb[3, 4] = bad
        with pytest.raises(ValueError, match="perona_malik: input image contains 1 NaN/Inf"):
            df.perona_malik(xb, iterations=1, kappa=0.1, step=0.2)
    with pytest.raises(ValueError, match=r"^perona_malik: kappa=0.0 is invalid; must be a number or tensor in \[1e-09, 1e\+06\]$"):
        df.perona_malik(x, iterations=1, kappa=0.0, step=0.2)
    with pytest.raises(ValueError, match=r"kappa=-0.1 is invalid"):
        df.PeronaMalik(iterations=1, kappa=-0.1, step=0.2)
    with pytest.raises(ValueError, match=r"iterations=-1 is invalid; must be an integer in \[0, 10000\]$"):
        df.perona_malik(x, iterations=-1, kappa=0.1, step=0.2)
    with pytest.raises(ValueError, match=r"step=0.3 is outside the stability bound 0 < step <= 0.25"):
        df.perona_malik(x, iterations=1, kappa=0.1, step=0.3)
    with pytest.raises(ValueError, match=r"step=0.4 is outside the stability bound 0 < step <= 0.333333"):
        df.perona_malik(x, iterations=1, kappa=0.1, step=0.4, spacing=(1.0, 2.0))
    with pytest.raises(ValueError, match=r"step=-0.1 is outside"):
        df.perona_malik(x, iterations=1, kappa=0.1, step=-0.1)
    with pytest.raises(ValueError, match=r"minimum size is 3x3"):
        df.perona_malik(torch.rand(2, 7), iterations=1, kappa=0.1, step=0.2)
    with pytest.raises(ValueError, match=r"conductance='gauss' is invalid; accepted: exponential, rational, tukey"):
        df.perona_malik(x, iterations=1, kappa=0.1, step=0.2, conductance="gauss")
    with pytest.raises(ValueError, match=r"spacing"):
        df.perona_malik(x, iterations=1, kappa=0.1, step=0.2, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="does not broadcast"):
        df.perona_malik(torch.rand(1, 2, 8, 8), iterations=1, kappa=torch.ones(3), step=0.2)


def test_step_bound_formula() -> None:
    assert pm_module.step_bound(None) == 0.25
    assert pm_module.step_bound((2.0, 2.0)) == pytest.approx(0.5)
    assert pm_module.step_bound(0.5) == pytest.approx(0.125)


def test_module_describe_and_forward() -> None:
    m = df.create("perona_malik", iterations=10, kappa=0.1, step=0.2)
    assert m.describe() == "Perona–Malik (exponential, 10 it., κ=0.1, Δt=0.2)"
    x = torch.rand(1, 1, 12, 12)
    assert torch.equal(m(x), df.perona_malik(x, iterations=10, kappa=0.1, step=0.2))
    assert df.PeronaMalik(iterations=3, kappa=1, step=0.1, conductance="tukey", spacing=2).describe() == "Perona–Malik (tukey, 3 it., κ=1, Δt=0.1, spacing=2×2)"


def test_chunked_fast_path_runs_under_inference_mode() -> None:
    """Worker threads inherit the caller's inference mode (the engine evaluates in it)."""
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32)
    reference = df.perona_malik(x, iterations=3, kappa=0.1, step=0.2)
    planes_run = lambda planes, params: df.perona_malik(planes, iterations=3, kappa=0.1, step=0.2)  # noqa: E731
    with torch.inference_mode():
        out = _scheduler.run_planes(x, {}, planes_run, chunk_elements=32 * 32 * 2)
    assert torch.allclose(out, reference, atol=1e-6)


def test_compiled_path_falls_back_when_compilation_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing C++-wrapper build falls back to the default wrapper, a failing compiler to eager:
    each with one warning, and the result is the eager scheme's."""
    x = torch.from_numpy(_images(n=2, h=24, w=20))[:, None]
    monkeypatch.setenv("DIFFUSION_FILTERS_NATIVE", "off")  # the C kernel would take these calls first
    monkeypatch.setattr(_compile, "_mode", "off")
    eager = df.perona_malik(x, iterations=7, kappa=0.1, step=0.2)
    attempts: list[bool] = []

    def failing_compile(fn: object, cpp_wrapper: bool, fast_exp: bool = False) -> object:
        def run(*args: object) -> None:
            attempts.append(cpp_wrapper)
            raise RuntimeError("simulated compiler failure")

        return run

    monkeypatch.setattr(_compile, "_compiled_fn", failing_compile)
    monkeypatch.setattr(_compile, "_broken", False)
    monkeypatch.setattr(_compile, "_no_cpp_wrapper", False)
    monkeypatch.setattr(_compile, "_mode", "on")
    with pytest.warns(RuntimeWarning) as record:
        out = df.perona_malik(x, iterations=7, kappa=0.1, step=0.2)
    messages = [str(r.message) for r in record]
    assert any("C++ wrapper unavailable" in m for m in messages)
    assert any("fast path disabled" in m for m in messages)
    assert attempts[:2] == [True, False]  # C++ wrapper first, then the default wrapper
    assert _compile._broken and _compile._no_cpp_wrapper
    assert torch.equal(out, eager)
    # From then on the eager scheme runs directly, without another attempt.
    n = len(attempts)
    assert torch.equal(df.perona_malik(x, iterations=7, kappa=0.1, step=0.2), eager)
    assert len(attempts) == n
