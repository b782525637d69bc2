"""The C kernels (diffusion_filters._native): the same schemes as the torch paths (Perona–Malik,
SRAD, non-local means, CED and EED), built at first use, and a clear fallback or error where they
cannot be built."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffusion_filters as df
from diffusion_filters import _compile, _native

medpy_smoothing = pytest.importorskip("medpy.filter.smoothing")


@pytest.fixture()
def fresh_native(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """An empty build cache and no library loaded yet in this process."""
    monkeypatch.setenv("DIFFUSION_FILTERS_CACHE", str(tmp_path))
    monkeypatch.setattr(_native, "_libraries", {})
    monkeypatch.setattr(_native, "_failures", {})


def _eager(fn, *args, **kw):
    previous = _compile.compile_mode()
    _compile.set_compile("off")  # the eager torch reference: no compiled path, no C kernel
    try:
        return fn(*args, **kw)
    finally:
        _compile.set_compile(previous)


def _speckle(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    base = np.clip(rng.normal(0.4, 0.2, (n, 1, h, w)), 0, 1)
    return torch.from_numpy((base * rng.rayleigh(0.8, base.shape)).clip(0, 1).astype(np.float32))


def test_native_kernel_is_built_and_used() -> None:
    status = _native.native_status()["perona_malik"]
    assert status.startswith("in use: "), status
    x = _speckle(3, 20, 33)
    assert _compile.use_native(x, 5)
    assert not _compile.use_native(x.double(), 5) and not _compile.use_native(x, 0)


@pytest.mark.parametrize("conductance", ["exponential", "rational", "tukey"])
@pytest.mark.parametrize("spacing", [None, (1.0, 2.5)])
def test_native_equals_the_eager_scheme(conductance: str, spacing) -> None:
    x = _speckle(5, 37, 29)
    kappa = torch.tensor([0.03, 0.1, 0.3, 1.0, 5.0]).view(5, 1, 1, 1)  # per image: the clamp, both regimes
    step = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.25]).view(5, 1, 1, 1) * (1.0 if spacing is None else 1.3)
    kw = dict(iterations=13, kappa=kappa, step=step, conductance=conductance, spacing=spacing)
    out = df.perona_malik(x, **kw)
    ref = _eager(df.perona_malik, x, **kw)
    assert torch.allclose(out, ref, atol=2e-6, rtol=0)
    assert not torch.equal(out, x)


def test_native_mixture_equals_the_eager_scheme() -> None:
    x = _speckle(2, 24, 40).repeat(1, 3, 1, 1)
    kw = dict(iterations=6, kappa=torch.tensor([0.05, 0.2, 0.8]).view(1, 3, 1, 1), step=0.2,
              shape=torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1))
    assert torch.allclose(df.perona_malik_mixture(x, **kw), _eager(df.perona_malik_mixture, x, **kw), atol=2e-6)


@pytest.mark.parametrize("option,conductance", [(1, "exponential"), (2, "rational"), (3, "tukey")])
def test_native_equals_medpy(option: int, conductance: str) -> None:
    x = _speckle(4, 64, 48, seed=3)
    out = df.perona_malik(x, iterations=20, kappa=0.1, step=0.2, conductance=conductance).numpy()
    ref = np.stack([medpy_smoothing.anisotropic_diffusion(x[i, 0].numpy(), niter=20, kappa=0.1, gamma=0.2,
                                                          option=option) for i in range(4)])
    assert np.abs(out[:, 0] - ref).max() < 1e-5


def test_large_values_and_tiny_kappa_stay_finite() -> None:
    x = _speckle(2, 16, 16) * 1e4
    out = df.perona_malik(x, iterations=5, kappa=1e-9, step=0.25)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, _eager(df.perona_malik, x, iterations=5, kappa=1e-9, step=0.25), atol=1e-3)


def test_missing_compiler_falls_back_with_one_warning(fresh_native, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    x = _speckle(2, 20, 20)
    with pytest.warns(RuntimeWarning, match="native kernel 'perona_malik' unavailable") as record:
        out = df.perona_malik(x, iterations=4, kappa=0.1, step=0.2)
    assert len([r for r in record if "native kernel" in str(r.message)]) == 1
    assert torch.allclose(out, _eager(df.perona_malik, x, iterations=4, kappa=0.1, step=0.2), atol=2e-6)
    assert _native.native_status()["perona_malik"].startswith("unavailable: ")


def test_training_without_a_compiler_falls_back_to_autograd(fresh_native, monkeypatch: pytest.MonkeyPatch) -> None:
    """No C compiler: the learnable layers still train (eager autograd), with the one warning."""
    from diffusion_filters.layers import DiffusionStem

    monkeypatch.setenv("CC", "/nonexistent/cc")
    x = _speckle(2, 16, 18)
    results = []
    for variant in ("perona_malik", "tensor"):
        torch.manual_seed(0)
        stem = DiffusionStem(out_chans=3, iterations=2, variant=variant)
        with pytest.warns(RuntimeWarning, match="native kernel"):
            out = stem(x)
        out.square().sum().backward()
        results.append(stem.params.kappa_raw.grad)
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in results)


def test_require_mode_raises_one_line(fresh_native, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("DIFFUSION_FILTERS_NATIVE", "require")
    with pytest.raises(_native.NativeBuildError) as info:
        df.perona_malik(_speckle(1, 8, 8), iterations=2, kappa=0.1, step=0.2)
    assert "\n" not in str(info.value) and "/nonexistent/cc" in str(info.value)


def test_off_mode_and_bad_mode(fresh_native, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DIFFUSION_FILTERS_NATIVE", "off")
    df.perona_malik(_speckle(1, 8, 8), iterations=2, kappa=0.1, step=0.2)
    assert not list(tmp_path.rglob("*.so")) and _native.native_status()["perona_malik"].startswith("off")
    monkeypatch.setenv("DIFFUSION_FILTERS_NATIVE", "fast")
    with pytest.raises(ValueError, match="DIFFUSION_FILTERS_NATIVE='fast' is invalid; accepted: auto, off, require"):
        _native.native_mode()


def test_build_is_cached_and_atomic(fresh_native, tmp_path) -> None:
    first = _native._build("perona_malik")
    assert first.parent == tmp_path / "native" and first.is_file()
    assert _native._build("perona_malik") == first  # no rebuild
    assert not list(first.parent.glob("*.tmp"))


@pytest.mark.parametrize("shape", [(3, 1, 37, 29), (2, 2, 64, 64), (1, 1, 3, 3), (1, 1, 5, 9)])
@pytest.mark.parametrize("q0", [None, 0.3])
def test_native_srad_equals_the_eager_scheme(shape: tuple[int, ...], q0: float | None) -> None:
    """Same operations in the same order: equal to float rounding (the block median included)."""
    x = _speckle(shape[0] * shape[1], shape[2], shape[3], seed=5).reshape(shape)
    x[0, 0, : shape[2] // 3] = 0.0  # a black band (blocks left out of the q0 estimate)
    step = torch.linspace(0.05, 0.25, shape[0] * shape[1]).reshape(shape[0], shape[1], 1, 1)
    out = df.srad(x, iterations=15, step=step, q0=q0)
    assert torch.allclose(out, _eager(df.srad, x, iterations=15, step=step, q0=q0), atol=1e-6, rtol=0)


def test_native_srad_is_used() -> None:
    assert _native.native_status()["srad"].startswith("in use: ")


@pytest.mark.parametrize("shape,patch,search,sigma", [
    ((3, 1, 40, 37), 7, 11, 0.0), ((2, 2, 64, 70), 5, 11, 0.05), ((1, 1, 20, 20), 1, 5, 0.0),
    ((1, 1, 31, 33), 15, 3, 0.02), ((1, 1, 12, 12), 3, 1, 0.0), ((1, 1, 150, 130), 7, 21, 0.0),
    ((1, 1, 60, 60), 31, 5, 0.0),
])
def test_native_nonlocal_means_equals_the_eager_scheme(shape, patch: int, search: int, sigma: float) -> None:
    """Every patch/search geometry (box sums by doubling, the running column sums, the pair symmetry)."""
    x = _speckle(shape[0] * shape[1], shape[2], shape[3], seed=11).reshape(shape)
    kw = dict(patch_size=patch, search_size=search, h=0.1, sigma=sigma)
    out = df.nonlocal_means(x, **kw)
    assert torch.allclose(out, _eager(df.nonlocal_means, x, **kw), atol=2e-6, rtol=0)


def test_native_nonlocal_means_is_used() -> None:
    assert _native.native_status()["nonlocal_means"].startswith("in use: ")


_TENSOR_CASES = [
    ("coherence_enhancing", (3, 1, 37, 29), dict(iterations=12, step=0.5, sigma=1.0, rho=4.0)),
    ("coherence_enhancing", (2, 2, 40, 64), dict(iterations=6, step=0.9, sigma=0.0, rho=0.0, alpha=0.2, C=1e-3, m=2)),
    ("coherence_enhancing", (1, 1, 3, 3), dict(iterations=5, step=0.5, sigma=2.0, rho=3.0)),  # radius > side
    ("coherence_enhancing", (1, 2, 5, 70), dict(iterations=4, step=0.4, sigma=0.5, rho=6.0, m=16, C=1e-20)),
    ("edge_enhancing", (3, 1, 37, 29), dict(iterations=12, step=0.5, sigma=1.0, lam=0.05)),
    ("edge_enhancing", (2, 2, 33, 66), dict(iterations=6, step=0.99, sigma=0.0, lam=0.2, m=1, C=0.5)),
    ("edge_enhancing", (1, 1, 3, 4), dict(iterations=5, step=0.5, sigma=3.0, lam=1e-6)),
]


@pytest.mark.parametrize("name,shape,kw", _TENSOR_CASES)
def test_native_tensor_diffusion_equals_the_eager_scheme(name: str, shape, kw: dict) -> None:
    """CED and EED: borders, radii beyond the image side (periodic mirror), both exponent paths."""
    x = _speckle(shape[0] * shape[1], shape[2], shape[3], seed=7).reshape(shape)
    fn = getattr(df, name)
    out = fn(x, **kw)
    ref = _eager(fn, x, **kw)
    assert torch.allclose(out, ref, atol=2e-6, rtol=0), (out - ref).abs().max()
    assert not torch.equal(out, x)


@pytest.mark.parametrize("name", ["coherence_enhancing", "edge_enhancing"])
def test_native_tensor_diffusion_takes_per_plane_parameters(name: str) -> None:
    """Tensor parameters differ per image and channel; one Gaussian radius per chunk, as in the torch path."""
    x = _speckle(6, 48, 40, seed=8).reshape(3, 2, 48, 40)
    per = lambda lo, hi: torch.linspace(lo, hi, 6).reshape(3, 2, 1, 1)  # noqa: E731
    kw = dict(iterations=8, step=per(0.1, 0.9), sigma=per(0.0, 2.0))
    kw.update(dict(rho=per(0.5, 4.0), alpha=per(0.001, 0.5)) if name == "coherence_enhancing" else dict(lam=per(0.01, 0.3)))
    fn = getattr(df, name)
    assert torch.allclose(fn(x, **kw), _eager(fn, x, **kw), atol=2e-6, rtol=0)


def test_native_tensor_diffusion_is_used_and_not_for_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion_filters import tensor_diffusion

    assert _native.native_status()["tensor_diffusion"].startswith("in use: ")
    calls = []
    real = tensor_diffusion._native_iterations
    monkeypatch.setattr(tensor_diffusion, "_native_iterations", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = _speckle(1, 16, 16)
    df.edge_enhancing(x, iterations=2, step=0.5, sigma=1.0, lam=0.05)
    assert calls == [1]
    lam = torch.tensor(0.05, requires_grad=True)
    df.edge_enhancing(x, iterations=2, step=0.5, sigma=1.0, lam=lam).sum().backward()
    assert calls == [1] and lam.grad is not None and torch.isfinite(lam.grad)


def _pm_grads(fn, x: torch.Tensor, **kw) -> list[torch.Tensor]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items() if isinstance(v, torch.Tensor)}
    xx = x.clone().requires_grad_(True)
    out = fn(xx, **{**kw, **leaves})
    (out * torch.linspace(-1.0, 1.0, out.numel()).view_as(out)).sum().backward()
    return [out.detach(), xx.grad, *(v.grad for v in leaves.values())]


@pytest.mark.parametrize("conductance", ["exponential", "rational", "mixture"])
def test_native_gradient_equals_eager_autograd(conductance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Perona–Malik with gradients: the C forward and backward give the eager autograd's values."""
    import importlib

    pm_mod = importlib.import_module("diffusion_filters.perona_malik")
    calls = []
    real = pm_mod._native_gradient_iterations
    monkeypatch.setattr(pm_mod, "_native_gradient_iterations", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = _speckle(6, 23, 64, seed=9).reshape(2, 3, 23, 64)
    kw = dict(iterations=5, kappa=torch.tensor([0.03, 0.2, 2.0]).view(1, 3, 1, 1),
              step=torch.tensor([0.1, 0.2, 0.25]).view(1, 3, 1, 1))
    if conductance == "mixture":
        fn = df.perona_malik_mixture
        kw["shape"] = torch.tensor([0.0, 0.4, 1.0]).view(1, 3, 1, 1)
    else:
        fn = lambda t, **k: df.perona_malik(t, conductance=conductance, **k)  # noqa: E731
    native = _pm_grads(fn, x, **kw)
    eager = _eager(_pm_grads, fn, x, **kw)
    assert calls == [1]
    for a, b in zip(native, eager):
        torch.testing.assert_close(a, b, atol=5e-6, rtol=1e-4)


def test_native_gradient_leaves_other_cases_to_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tukey, non-unit spacing and float64 keep the eager autograd scheme (no C gradient for them)."""
    import importlib

    pm_mod = importlib.import_module("diffusion_filters.perona_malik")
    monkeypatch.setattr(pm_mod, "_native_gradient_iterations", lambda *a, **k: pytest.fail("C gradient used"))
    x = _speckle(1, 12, 12)
    kappa = torch.tensor(0.1)
    for x_, kw in ((x, dict(conductance="tukey")), (x, dict(spacing=(1.0, 2.0))), (x.double(), {})):
        grads = _pm_grads(df.perona_malik, x_, iterations=3, kappa=kappa.to(x_.dtype), step=0.1, **kw)
        assert all(torch.isfinite(g).all() for g in grads)


def test_call_checks_the_kernel_status() -> None:
    lib = _native.library("perona_malik")
    u, one = torch.zeros(1, 1, 4, 4), torch.ones(1)
    _native.call(lib, "pm_planes", u, 1, 4, 4, 1, 0, one, -one, None, 1.0, 1.0)  # a valid call: no error
    with pytest.raises(RuntimeError, match="pm_planes returned -1"):
        _native.call(lib, "pm_planes", u, 1, 4, 4, 1, 9, one, -one, None, 1.0, 1.0)  # kind 9 does not exist
