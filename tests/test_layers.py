"""Learnable diffusion layers: values, gradients (float64 gradcheck), stability, freezing, saving."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.func import functional_call
from torch.nn import functional as F

from diffusion_filters.layers import (
    TENSOR_SIGMA,
    KAPPA_MIN,
    STEP_BOUNDS,
    DiffusionBlock,
    DiffusionPrepend,
    DiffusionStem,
    scale_space_init,
)
from diffusion_filters.structure_tensor import scharr_gradient
from diffusion_filters.tensor_diffusion import tensor_diffusion

VARIANTS = ["perona_malik", "tensor"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _image(b: int = 2, h: int = 12, w: int = 11, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, h, w, generator=g, dtype=dtype) * 0.2
    x[..., :, w // 2:] += 0.6  # a step edge
    return x


# ----------------------------------------------------------------------------- initialisation
def test_scale_space_initialisation_is_the_documented_one() -> None:
    stem = DiffusionStem(out_chans=32, variant="perona_malik")
    p = stem.learned_params()
    kappas = sorted({round(k, 6) for k in p["kappa"]})
    assert len(kappas) == 8
    assert kappas[0] == pytest.approx(0.02, rel=1e-5) and kappas[-1] == pytest.approx(0.5, rel=1e-5)
    ratios = [b / a for a, b in itertools.pairwise(kappas)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-4)  # log-spaced
    assert sorted({round(s, 5) for s in p["step"]}) == [0.1, 0.24]
    assert sorted({round(s, 5) for s in p["shape"]}) == [0.1, 0.9]
    tensor = DiffusionStem(out_chans=32, variant="tensor").learned_params()
    assert sorted({round(s, 4) for s in tensor["step"]}) == [round(0.4 * 0.99, 4), round(0.96 * 0.99, 4)]
    k, s, sh = scale_space_init(5)
    assert k.shape == s.shape == sh.shape == (5,)


def test_block_starts_near_identity_and_prepend_is_a_diffusion() -> None:
    x = torch.randn(2, 6, 10, 10)
    block = DiffusionBlock(6, iterations=2)
    assert block.learned_params()["gate"] == pytest.approx([0.02] * 6, rel=1e-5)
    with torch.no_grad():
        y = block(x)
    rel = float((y - x).norm() / x.norm())
    assert 0 < rel < 0.02
    img = _image()
    with torch.no_grad():
        out = DiffusionPrepend(iterations=3)(img)
    assert out.shape == img.shape
    assert float(out.std()) < float(img.std())  # it smooths
    torch.testing.assert_close(out.mean((2, 3)), img.mean((2, 3)), atol=1e-5, rtol=0)  # and conserves the mean


@pytest.mark.parametrize("size", [(32, 32), (33, 31), (7, 8), (65, 64)])
def test_stem_output_shape_matches_stride2_conv(size: tuple[int, int]) -> None:
    conv = torch.nn.Conv2d(1, 32, 3, stride=2, padding=1)
    x = torch.rand(2, 1, *size)
    assert DiffusionStem(iterations=1)(x).shape == conv(x).shape


# ----------------------------------------------------------------------------- values vs references
def _eed_reference(u: torch.Tensor, iterations: int, kappa: float, step: float, sigma: float) -> torch.Tensor:
    """Reference for the tensor variant with the exponential conductance, written through the
    eigen-decomposition D = g n n^T + (I - n n^T) (a different route than the layer's closed form),
    with n from the gradient of u smoothed by scipy's Gaussian (mode "reflect", truncate 3)."""
    from scipy.ndimage import gaussian_filter

    def fn(v: torch.Tensor):
        vs = v if sigma == 0 else torch.from_numpy(
            gaussian_filter(v.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3.0))
        gx, gy = scharr_gradient(vs)
        s2 = gx * gx + gy * gy
        g = torch.exp(-s2 / kappa**2)
        norm = torch.sqrt(s2).clamp_min(1e-300)
        nx, ny = torch.where(s2 > 0, gx / norm, 1.0), torch.where(s2 > 0, gy / norm, 0.0)
        a = g * nx * nx + (1 - nx * nx)
        b = g * nx * ny - nx * ny
        c = g * ny * ny + (1 - ny * ny)
        return a, b, c

    return tensor_diffusion(u, fn, iterations, step)


@pytest.mark.parametrize("sigma", [None, 0.0, 2.0])
def test_tensor_stem_channel_equals_reference_eed(sigma: float | None) -> None:
    stem = DiffusionStem(in_chans=1, out_chans=2, iterations=3, variant="tensor", sigma=sigma).double()
    assert stem.sigma == (TENSOR_SIGMA if sigma is None else sigma)
    with torch.no_grad():
        stem.params.shape_raw.fill_(60.0)  # shape -> 1: pure exponential conductance
    x = _image(dtype=torch.float64)
    out = stem(x)
    pooled = F.avg_pool2d(F.pad(x, (0, 1, 0, 0), mode="replicate"), 2)
    p = stem.learned_params()
    for c in range(2):
        ref = _eed_reference(pooled, 3, p["kappa"][c], p["step"][c], stem.sigma)
        torch.testing.assert_close(out[:, c:c + 1], ref, atol=1e-10, rtol=1e-8)


def test_tensor_variant_is_anisotropic_only_with_presmoothing() -> None:
    """sigma = 0: the flux D grad u is g(z) grad u exactly (an isotropic scheme); sigma > 0 turns it
    along the edges: a noisy straight edge keeps its contrast while the noise along it is smoothed more."""
    from diffusion_filters.layers import _tensor_variant
    from diffusion_filters.structure_tensor import scharr_divergence

    torch.manual_seed(0)
    edge = torch.zeros(1, 1, 48, 48, dtype=torch.float64)
    edge[..., 24:] = 1.0
    noisy = edge + 0.08 * torch.randn_like(edge)
    k, s, one = (torch.tensor(v, dtype=torch.float64).view(1, 1, 1, 1) for v in (0.15, 0.5, 1.0))
    gx, gy = scharr_gradient(noisy)
    g = torch.exp(-(gx * gx + gy * gy) / k**2)
    isotropic = noisy + s * scharr_divergence(g * gx, g * gy)
    torch.testing.assert_close(_tensor_variant(noisy, 1, k, s, one, 0.0), isotropic, atol=1e-12, rtol=0)
    assert (_tensor_variant(noisy, 1, k, s, one, 1.0) - isotropic).abs().max() > 1e-3
    cols = [22, 23, 24, 25]  # the columns at the edge
    along = {sigma: _tensor_variant(noisy, 20, k, s, one, sigma)[0, 0, :, cols].std(0).mean() for sigma in (0.0, 1.0)}
    assert along[1.0] < 0.92 * along[0.0]
    out = _tensor_variant(noisy, 20, k, s, one, 1.0)[0, 0]
    assert float(out[:, 26:].mean() - out[:, :22].mean()) > 0.99


@pytest.mark.parametrize("sigma", [0.0, 2.5, 12.0])  # 12: radius 36, beyond the 21 x 26 image (mirror period)
def test_native_tensor_variant_matches_float64_autograd(sigma: float) -> None:
    """The C forward and backward of the tensor variant (Gaussian adjoint included) against eager float64."""
    from diffusion_filters import _compile
    from diffusion_filters.layers import _tensor_variant

    u = torch.rand(3, 4, 21, 26, generator=torch.Generator().manual_seed(4))
    results = []
    for dtype, mode in ((torch.float32, "auto"), (torch.float64, "off")):
        leaves = [torch.tensor(v, dtype=dtype).view(1, 4, 1, 1).requires_grad_(True)
                  for v in ([0.02, 0.1, 0.3, 1.0], [0.2, 0.5, 0.9, 0.99], [0.0, 0.3, 0.9, 1.0])]
        x = u.to(dtype).clone().requires_grad_(True)
        _compile.set_compile(mode)
        try:
            y = _tensor_variant(x, 4, leaves[0], leaves[1], leaves[2], sigma)
        finally:
            _compile.set_compile("auto")
        (y * torch.linspace(-1, 1, y.numel(), dtype=dtype).view_as(y)).sum().backward()
        results.append([y.detach(), x.grad, *(t.grad for t in leaves)])
    for a, b in zip(*results):
        torch.testing.assert_close(a.double(), b, atol=5e-6, rtol=1e-4)


def test_sigma_belongs_to_the_tensor_variant() -> None:
    with pytest.raises(ValueError, match="sigma=1.0 applies to variant 'tensor' only"):
        DiffusionStem(variant="perona_malik", sigma=1.0)
    for bad in (-1.0, 101.0, True, "1"):
        with pytest.raises(ValueError, match=r"sigma=.* is invalid; accepted: a number of pixels in \[0, 100\]"):
            DiffusionBlock(4, variant="tensor", sigma=bad)
    assert "sigma=2" in repr(DiffusionPrepend(variant="tensor", sigma=2.0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_large_kappa_is_linear_diffusion_and_mean_is_conserved(variant: str) -> None:
    block = DiffusionBlock(1, iterations=3, variant=variant).double()
    with torch.no_grad():
        block.params.kappa_raw.fill_(1e4)  # kappa ~ 1e4: conductance 1 everywhere
        block.gate_raw.fill_(60.0)  # gate 1: the block's output is the diffusion itself
    x = _image(dtype=torch.float64)
    out = block(x)
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)), atol=1e-12, rtol=0)
    if variant == "tensor":
        step = block.learned_params()["step"][0]
        ones = lambda v: (torch.ones_like(v), torch.zeros_like(v), torch.ones_like(v))
        torch.testing.assert_close(out, tensor_diffusion(x, ones, 3, step), atol=1e-9, rtol=1e-7)
    else:
        # Linear 4-neighbour heat equation with reflecting borders, written out directly.
        step = block.learned_params()["step"][0]
        u = x.clone()
        for _ in range(3):
            p = F.pad(u, (1, 1, 1, 1), mode="replicate")
            lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * u
            u = u + step * lap
        torch.testing.assert_close(out, u, atol=1e-9, rtol=1e-7)


def test_small_kappa_preserves_the_edge_large_kappa_blurs_it() -> None:
    x = _image(b=1, h=16, w=16)
    contrast = []
    for raw in (-8.0, 8.0):  # kappa ~ KAPPA_MIN vs ~8
        layer = DiffusionPrepend(iterations=6)
        with torch.no_grad():
            layer.params.kappa_raw.fill_(raw)
        with torch.no_grad():
            y = layer(x)
        contrast.append(float(y[..., 8].mean() - y[..., 7].mean()))
    assert contrast[0] > 0.5 > contrast[1]


# ----------------------------------------------------------------------------- gradients
def _gradcheck(module: torch.nn.Module, x: torch.Tensor) -> None:
    module = module.double()
    params = {k: v.detach().clone().requires_grad_(True) for k, v in module.named_parameters()}
    names = list(params)

    def f(inp: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return functional_call(module, dict(zip(names, values)), (inp,))

    assert torch.autograd.gradcheck(f, (x.double().requires_grad_(True), *params.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_stem(variant: str) -> None:
    _gradcheck(DiffusionStem(in_chans=1, out_chans=3, iterations=2, variant=variant), _image(1, 6, 7))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_prepend(variant: str) -> None:
    _gradcheck(DiffusionPrepend(iterations=2, variant=variant), _image(1, 6, 6))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_block(variant: str) -> None:
    torch.manual_seed(0)
    _gradcheck(DiffusionBlock(2, iterations=2, variant=variant), torch.randn(1, 2, 5, 6))


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameters_learn_a_target_diffusion(variant: str) -> None:
    """Fit a 1-channel layer to the output of a stronger diffusion: kappa and step must move there."""
    x = _image(4, 16, 16, seed=1)
    target_layer = DiffusionPrepend(iterations=3, variant=variant)
    with torch.no_grad():
        target_layer.params.kappa_raw.fill_(1.0)
        target_layer.params.step_raw.fill_(3.0)
        target = target_layer(x)
    layer = DiffusionPrepend(iterations=3, variant=variant)
    before = layer.learned_params()
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    first = None
    for _ in range(40):
        loss = F.mse_loss(layer(x), target)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = layer.learned_params()
    assert float(loss.detach()) < 0.2 * first
    assert after["kappa"][0] > before["kappa"][0] and after["step"][0] > before["step"][0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_extreme_raw_values_stay_finite(variant: str) -> None:
    stem = DiffusionStem(out_chans=4, iterations=4, variant=variant)
    block = DiffusionBlock(4, iterations=2, variant=variant)
    with torch.no_grad():
        for i, p in enumerate([*stem.params.parameters(), *block.params.parameters(), block.gate_raw]):
            p.copy_(torch.tensor([50.0, -50.0, 50.0, -50.0]) * (1 if i % 2 else -1))
    # The raw diffusion parameters only (the stem's 1x1 mixing is an ordinary, unbounded conv).
    params = [*stem.params.parameters(), *block.params.parameters(), block.gate_raw]
    opt = torch.optim.SGD(params, lr=100.0)
    x = _image(2, 16, 16)
    for _ in range(30):
        y = block(stem(x))
        assert bool(torch.isfinite(y).all())
        loss = (y - 0.5).pow(2).mean() + y.std()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
        opt.step()
    for layer in (stem, block):
        for values in layer.learned_params().values():
            assert all(math.isfinite(v) for v in values)
        k, s = torch.tensor(layer.learned_params()["kappa"]), torch.tensor(layer.learned_params()["step"])
        assert bool((k >= KAPPA_MIN).all()) and bool((s <= STEP_BOUNDS[variant]).all())


def test_frozen_parameters_do_not_change() -> None:
    from harness.models import create_model
    from harness.suite import BlocksConfig, ModelConfig, StemConfig

    model = create_model(ModelConfig(stem=StemConfig(iterations=1, trainable=False),
                                     diffusion_blocks=BlocksConfig(after_stages=[1], iterations=1, trainable=False)))
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(("conv_stem", "blocks.1.2"))}
    head = model.conv_head.weight.detach().clone()
    assert frozen and not any(p.requires_grad for k, p in model.named_parameters() if k in frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
    for _ in range(1):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    now = dict(model.named_parameters())
    for k, v in frozen.items():
        assert torch.equal(now[k], v), k
    assert not torch.equal(now["conv_head.weight"], head)  # the rest of the network trains


def test_model_with_stem_saves_and_reloads_identically(tmp_path: Path) -> None:
    from harness.models import create_model, load_weights
    from harness.suite import BlocksConfig, ModelConfig, StemConfig

    cfg = ModelConfig(stem=StemConfig(iterations=2), diffusion_blocks=BlocksConfig(after_stages=[2]))
    torch.manual_seed(0)
    model = create_model(cfg)
    with torch.no_grad():
        model.conv_stem.params.kappa_raw.add_(torch.linspace(-1, 1, 32))
        model.blocks[2][-1].gate_raw.fill_(0.3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    torch.manual_seed(1)
    again = create_model(cfg)
    load_weights(again, path)
    assert set(load_file(str(path))) == set(model.state_dict())
    model.eval()
    again.eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
    assert again.conv_stem.learned_params() == model.conv_stem.learned_params()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"variant 'ced' is not supported \(accepted: perona_malik, tensor\)"):
        DiffusionStem(variant="ced")
    with pytest.raises(ValueError, match=r"DiffusionStem: expected \(B, 1, H, W\)"):
        DiffusionStem()(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"DiffusionBlock: expected \(B, 4, H, W\)"):
        DiffusionBlock(4)(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiled_training_path_matches_eager(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    """Without the C kernels, large CPU training calls run the same scheme through torch.compile:
    same values and gradients."""
    from diffusion_filters import _compile

    monkeypatch.setenv("DIFFUSION_FILTERS_NATIVE", "off")  # the fallback when no C compiler exists
    compiled: list[int] = []
    real = _compile.run_compiled_iterations
    monkeypatch.setattr(_compile, "run_compiled_iterations", lambda *a, **k: compiled.append(1) or real(*a, **k))
    x = _image(2, 12, 13)
    grads = []
    outs = []
    for threshold, mode in ((0, "auto"), (2**62, "auto")):
        monkeypatch.setattr(_compile, "GRAD_MIN_WORK", threshold)
        _compile.set_compile(mode)
        torch.manual_seed(0)
        stem = DiffusionStem(out_chans=4, iterations=2, variant=variant)
        out = stem(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in stem.params.parameters()])
    _compile.set_compile("auto")
    assert compiled == [1], "the compiled path was not taken (exactly once: below the threshold it is eager)"
    assert not _compile._broken, "torch.compile failed: the compiled path was not exercised"
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(12, 13), (6, 80), (81, 7)])  # 3 x 40 and 41 x 4 after the stride
def test_native_training_path_matches_eager(monkeypatch: pytest.MonkeyPatch, variant: str,
                                            size: tuple[int, int]) -> None:
    """Float32 CPU layers run forward and backward in the C kernels: same values and gradients as the
    eager torch scheme (every parameter, the input, a stem and a block with gates)."""
    import importlib

    from diffusion_filters import _compile, _native
    from diffusion_filters import layers as layers_mod

    pm_mod = importlib.import_module("diffusion_filters.perona_malik")  # the package exports the function

    assert _native.native_status()["perona_malik"].startswith("in use")
    calls: list[str] = []
    for mod, name in ((pm_mod, "_native_gradient_iterations"), (layers_mod, "_native_tensor_iterations")):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    x = _image(2, *size, seed=3)
    results = []
    for mode in ("auto", "off"):
        _compile.set_compile(mode)
        try:
            torch.manual_seed(0)
            stem = DiffusionStem(out_chans=4, iterations=3, variant=variant)
            block = DiffusionBlock(4, iterations=2, variant=variant, gate_init=0.5)
            xx = x.clone().requires_grad_(True)
            out = block(stem(xx))
            weights = torch.linspace(-1.0, 1.0, out.numel()).view_as(out)
            (out * weights).sum().backward()
            grads = [p.grad.clone() for p in (*stem.params.parameters(), *block.params.parameters(), block.gate_raw)]
            results.append((out.detach(), xx.grad.clone(), grads))
        finally:
            _compile.set_compile("auto")
    assert len(calls) == 2  # the stem and the block took the C path once each (in "auto" only)
    (out_n, gx_n, g_n), (out_e, gx_e, g_e) = results
    torch.testing.assert_close(out_n, out_e, atol=2e-6, rtol=0)
    torch.testing.assert_close(gx_n, gx_e, atol=2e-6, rtol=1e-5)
    for a, b in zip(g_n, g_e):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
