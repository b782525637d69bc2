"""Learnable diffusion layers: the diffusion stem, the prepended diffusion and diffusion blocks.

The layers unroll ``iterations`` explicit steps of a nonlinear diffusion, every channel with its
own parameters, and are differentiable end to end (they call the library's differentiable
filters with tensor parameters). Equations and parameterisations: docs/layers.md.

Parameterisation (stable for ANY value of the raw, unconstrained parameters):

* ``kappa = kappa_min + softplus(kappa_raw)`` (contrast threshold, intensity units; the floor
  ``kappa_min`` keeps ``|grad u| / kappa`` and its derivative finite);
* ``step = step_bound * sigmoid(step_raw)`` with ``step_bound`` the explicit scheme's stability
  bound, so every learned step is stable;
* ``shape = sigmoid(shape_raw)`` in (0, 1): the conductance is the mixture
  ``g = shape * exp(-(s/kappa)^2) + (1 - shape) / (1 + (s/kappa)^2)`` of Perona-Malik's two
  conductances (both in (0, 1], so the mixture is too, and the scheme stays stable);
* ``gate = sigmoid(gate_raw)`` for ``DiffusionBlock``'s residual mix.

``trainable=False`` registers the same parameters with ``requires_grad=False``: they are saved
and reloaded, but never optimised.

Example:
    >>> import torch
    >>> stem = DiffusionStem(in_chans=1, out_chans=32, iterations=2)
    >>> stem(torch.rand(2, 1, 33, 31)).shape
    torch.Size([2, 32, 17, 16])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import perona_malik as _pm
from . import tensor_diffusion as _td
from ._native.autograd import IterationsKernel, iterate_planes
from ._spec import SIGMA_MAX
from .structure_tensor import gaussian_radius, gaussian_smooth, scharr_gradient
from .tensor_diffusion import tensor_diffusion_step

__all__ = [
    "KAPPA_MIN",
    "STEP_BOUNDS",
    "TENSOR_SIGMA",
    "DiffusionBlock",
    "DiffusionPrepend",
    "DiffusionStem",
    "scale_space_init",
]

#: Floor of every learned kappa (intensity units), see the module docstring.
KAPPA_MIN: float = 1e-3
#: Largest stable time step per variant: Perona-Malik's explicit 4-neighbour scheme with a
#: conductance in [0, 1] (0.25), and the Weickert-Scharr tensor scheme with eigenvalues of D in
#: [0, 1] (diffusion_filters.tensor_diffusion.STEP_BOUND = 0.99). Both bounds are the same
#: diffusion time per iteration for smooth images (the Scharr derivative spans 2 pixels).
STEP_BOUNDS: dict[str, float] = {"perona_malik": float(_pm.STEP_BOUND), "tensor": float(_td.STEP_BOUND)}

_VARIANTS = ("perona_malik", "tensor")

#: Default noise scale (pixels) of the tensor variant: the Gaussian that smooths the gradient which
#: steers the diffusion tensor (Weickert's sigma; without it the variant is isotropic, see
#: :func:`_tensor_variant`).
TENSOR_SIGMA: float = 1.0

TENSOR_MIXTURE_KERNEL = IterationsKernel("tensor_diffusion", "tpm_planes", "tpm_backward")
"""The tensor variant (:func:`_tensor_variant`) and its gradient in C."""


def _inv_softplus(y: torch.Tensor) -> torch.Tensor:
    """softplus^{-1}(y) for y > 0, numerically safe for large y."""
    return torch.where(y > 20, y, torch.log(torch.expm1(y)))


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


class _DiffusionParams(nn.Module):
    """Per-channel raw parameters of a bank of diffusions and their human-unit views."""

    def __init__(self, kappa: torch.Tensor, step_fraction: torch.Tensor, shape: torch.Tensor,
                 step_bound: float, trainable: bool):
        super().__init__()
        n = kappa.numel()
        if not (step_fraction.numel() == shape.numel() == n):
            raise ValueError("_DiffusionParams: kappa, step and shape need one value per channel")
        if bool((kappa <= KAPPA_MIN).any()) or bool((step_fraction <= 0).any()) or bool((step_fraction >= 1).any()):
            raise ValueError(f"initial kappa must exceed {KAPPA_MIN} and step fractions lie in (0, 1)")
        self.step_bound = float(step_bound)
        self.kappa_raw = nn.Parameter(_inv_softplus(kappa.double() - KAPPA_MIN).float(), requires_grad=trainable)
        self.step_raw = nn.Parameter(_logit(step_fraction.double()).float(), requires_grad=trainable)
        self.shape_raw = nn.Parameter(_logit(shape.double()).float(), requires_grad=trainable)

    def kappa(self) -> torch.Tensor:
        return KAPPA_MIN + F.softplus(self.kappa_raw)

    def step(self) -> torch.Tensor:
        return self.step_bound * torch.sigmoid(self.step_raw)

    def shape(self) -> torch.Tensor:
        return torch.sigmoid(self.shape_raw)

    def human(self) -> dict[str, torch.Tensor]:
        return {"kappa": self.kappa(), "step": self.step(), "shape": self.shape()}


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


def _conductance_ratio(z: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """``(1 - g(z)) / z`` for the mixed conductance ``g`` (see the module docstring), ``z = s^2/kappa^2``.

    Closed forms without cancellation: ``(1 - 1/(1+z))/z = 1/(1+z)`` and
    ``(1 - exp(-z))/z = -expm1(-z)/z`` (-> 1 as z -> 0, series ``1 - z/2`` below 1e-4).
    """
    small = z < 1e-4
    z_safe = torch.where(small, torch.ones_like(z), z)
    exp_part = torch.where(small, 1.0 - 0.5 * z, -torch.expm1(-z_safe) / z_safe)
    return shape * exp_part + (1.0 - shape) / (1.0 + z)


def _tensor_variant(u: torch.Tensor, iterations: int, kappa: torch.Tensor, step: torch.Tensor,
                    shape: torch.Tensor, sigma: float) -> torch.Tensor:
    """Edge-enhancing tensor diffusion (Weickert) with the learnable Perona-Malik conductance.

    ``D = I - (1 - g(|grad u_sigma|^2 / kappa^2)) n n^T``, ``n = grad u_sigma / |grad u_sigma|``,
    ``u_sigma`` the input smoothed at the noise scale ``sigma`` (pixels): conductance ``g`` across
    edges, 1 along them (eigenvalues in (0, 1], so ``step <= 0.99`` is stable in the library's
    Weickert-Scharr scheme). Written as ``D = I - w grad u_sigma grad u_sigma^T / kappa^2`` with
    ``w = (1 - g(z)) / z`` finite at ``grad u_sigma = 0``. With ``sigma = 0`` the flux is exactly
    ``D grad u = g(z) grad u`` (``n`` is the direction of ``grad u`` itself): an isotropic scheme;
    the smoothing is what lets the flux turn along the edges.

    Float32 CPU calls run forward and backward in the library's C kernel
    (:data:`TENSOR_MIXTURE_KERNEL`; equal to the torch form to float rounding). Without it, large
    calls that need gradients run each step through ``torch.compile`` (forward and backward
    fused), under the same policy as :func:`_pm_variant`; otherwise (or if compiling fails) eager.
    """
    from diffusion_filters import _compile

    if _native_tensor_applies(u, iterations):
        return _native_tensor_iterations(u, iterations, kappa, step, shape, sigma)
    inv_k2 = 1.0 / (kappa * kappa)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, kappa, step, shape))
    if needs_grad and _compile.use_compiled(u, iterations, needs_grad=True):
        v = _compile.run_compiled_iterations(_tensor_mixture_step, u, iterations, step, inv_k2, shape, sigma)
        if v is not None:
            return v
    for _ in range(iterations):
        u = _tensor_mixture_step(u, step, inv_k2, shape, sigma)
    return u


def _native_tensor_applies(u: torch.Tensor, iterations: int) -> bool:
    from diffusion_filters import _compile

    return (u.dim() == 4 and min(u.shape[-2:]) >= 3 and _compile.use_native(u, iterations)
            and TENSOR_MIXTURE_KERNEL.available())


def _native_tensor_iterations(u: torch.Tensor, iterations: int, kappa: torch.Tensor, step: torch.Tensor,
                              shape: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`_tensor_variant` by :data:`TENSOR_MIXTURE_KERNEL`, differentiable."""
    return iterate_planes(TENSOR_MIXTURE_KERNEL, u, iterations, step, kappa, shape,
                          (gaussian_radius(sigma), float(sigma)))


def _tensor_mixture_step(u: torch.Tensor, step: torch.Tensor, inv_k2: torch.Tensor, shape: torch.Tensor,
                         sigma: float) -> torch.Tensor:
    """One step of :func:`_tensor_variant` (``inv_k2 = 1 / kappa^2``)."""
    gx, gy = scharr_gradient(gaussian_smooth(u, sigma))
    z = torch.addcmul(gx * gx, gy, gy) * inv_k2
    w = _conductance_ratio(z, shape) * inv_k2
    wx = w * gx
    return tensor_diffusion_step(u, 1.0 - wx * gx, -(wx * gy), 1.0 - w * gy * gy, step)


def _pm_variant(u: torch.Tensor, iterations: int, kappa: torch.Tensor, step: torch.Tensor,
                shape: torch.Tensor) -> torch.Tensor:
    """The library's Perona-Malik scheme with the mixed conductance
    (:func:`diffusion_filters.perona_malik.perona_malik_mixture`).

    Training on CPU is memory-bound: eager autograd sweeps memory tens of times per iteration, so
    the library runs float32 CPU training calls forward and backward in its C kernel
    (:func:`diffusion_filters.perona_malik.native_gradient_applies`) and, without a C compiler,
    compiles each step of large calls (the compile policy: :func:`diffusion_filters._compile.use_compiled`,
    threshold ``GRAD_MIN_WORK``; speed-ups in docs/filter-performance.md).
    """
    from diffusion_filters.perona_malik import perona_malik_mixture

    return perona_malik_mixture(u, iterations=iterations, kappa=kappa, step=step, shape=shape)


def _diffuse(u: torch.Tensor, params: _DiffusionParams, iterations: int, variant: str,
             sigma: float = 0.0) -> torch.Tensor:
    """Unrolled diffusion of ``u`` (B, C, H, W), channel c with parameter set c (``sigma``: the tensor
    variant's noise scale)."""
    kappa, step, shape = _per_channel(params.kappa()), _per_channel(params.step()), _per_channel(params.shape())
    kappa, step, shape = (t.to(u.dtype) for t in (kappa, step, shape))
    if variant == "perona_malik":
        return _pm_variant(u, iterations, kappa, step, shape)
    return _tensor_variant(u, iterations, kappa, step, shape, sigma)


def _mix_channels_last(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The 1x1 convolution ``weight`` (C_out, C, 1, 1) of ``y`` (B, C, H, W), returned channels-last.

    Why a matmul and not ``conv2d``: the diffusion writes channels-first planes and the network runs
    channels-last; one batched GEMM ``(B, HW, C) @ (C, C_out)`` reads the planes as they are and
    writes the channels-last layout directly, where a 1x1 convolution converts the layouts first
    (forward and backward 2.5x faster here; docs/filter-performance.md). Same values as
    ``F.conv2d(y, weight)`` up to float rounding.
    """
    b, c, h, w = y.shape
    out = torch.matmul(y.reshape(b, c, h * w).transpose(1, 2), weight.reshape(weight.shape[0], c).t())
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


class _DiffusionLayer(nn.Module):
    """Shared parts: variant check, float32 computation under autocast, parameter reports."""

    variant: str
    sigma: float

    def _check_variant(self, variant: str, sigma: float | None) -> str:
        """Validate ``variant`` and set ``self.sigma`` (the tensor variant's noise scale; 0 otherwise)."""
        if variant not in _VARIANTS:
            raise ValueError(f"{type(self).__name__}: variant '{variant}' is not supported "
                             f"(accepted: {', '.join(_VARIANTS)})")
        if variant != "tensor":
            if sigma is not None:
                raise ValueError(f"{type(self).__name__}: sigma={sigma!r} applies to variant 'tensor' only "
                                 f"(variant '{variant}' has no pre-smoothing)")
            self.sigma = 0.0
            return variant
        value = TENSOR_SIGMA if sigma is None else sigma
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= SIGMA_MAX:
            raise ValueError(f"{type(self).__name__}: sigma={sigma!r} is invalid; accepted: a number of pixels "
                             f"in [0, {SIGMA_MAX:g}]")
        self.sigma = float(value)
        return variant

    def _run(self, u: torch.Tensor, params: _DiffusionParams, iterations: int) -> torch.Tensor:
        # Iterated explicit schemes lose accuracy in bf16/fp16: always diffuse in float32 (or float64).
        dtype = u.dtype if u.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=u.device.type, enabled=False):
            return _diffuse(u.to(dtype), params, iterations, self.variant, self.sigma)

    def _variant_repr(self) -> str:
        return f"variant={self.variant}" + (f", sigma={self.sigma:g}" if self.variant == "tensor" else "")

    def named_diffusion_parameters(self) -> dict[str, torch.Tensor]:
        """Parameters in human units (kappa, step, shape, ...), as tensors keeping the graph."""
        raise NotImplementedError

    def learned_params(self) -> dict[str, list[float]]:
        """``named_diffusion_parameters`` as plain lists of floats (for the results store)."""
        return {k: [float(v) for v in t.detach().flatten().cpu()] for k, t in self.named_diffusion_parameters().items()}


def scale_space_init(n: int, kappa_range: tuple[float, float] = (0.02, 0.5),
                     steps: tuple[float, ...] = (0.4, 0.96)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Initial (kappa, step fraction, shape) of an ``n``-channel bank: a documented scale-space.

    Channels cycle through the combinations of ``n_k`` log-spaced kappas in ``kappa_range``,
    the two conductances (shape 0.9: mostly exponential, edge-preserving; 0.1: mostly rational,
    smoother) and the time steps ``steps`` as fractions of the variant's stability bound (for
    Perona-Malik 0.1 and 0.24). For n = 32: 8 kappas (0.02 ... 0.5) x 2 conductances x 2 steps.
    """
    combos = 2 * len(steps)
    n_k = max(1, math.ceil(n / combos))
    kappas = torch.logspace(math.log10(kappa_range[0]), math.log10(kappa_range[1]), n_k, dtype=torch.float64)
    kappa = torch.empty(n, dtype=torch.float64)
    step = torch.empty(n, dtype=torch.float64)
    shape = torch.empty(n, dtype=torch.float64)
    for c in range(n):
        kappa[c] = kappas[c // combos % n_k]
        shape[c] = 0.9 if c % 2 == 0 else 0.1
        step[c] = steps[(c // 2) % len(steps)]
    return kappa, step, shape


class DiffusionStem(_DiffusionLayer):
    """A bank of ``out_chans`` learnable diffusions standing where EfficientNet's ``conv_stem`` stands.

    ``x`` (B, in_chans, H, W) intensities in [0, 1]
    -> area-average subsampling by ``stride`` (after replicate-padding odd sizes, so the output is
    ``ceil(H / stride)`` like the 3x3/stride-2/padding-1 ``conv_stem``)
    -> channel c = input channel ``c mod in_chans``, diffused with its own (kappa, step, shape)
    -> a learnable 1x1 mixing (``out_chans x out_chans``, initialised to the identity) so the
    network can form differences of scales (band-pass, DoG-like features) as well as the scales.

    Diffusing after the subsampling costs a quarter of diffusing at full resolution; the
    area average is the anti-aliasing a stride-2 stem needs anyway.
    """

    def __init__(self, in_chans: int = 1, out_chans: int = 32, iterations: int = 4,
                 variant: str = "perona_malik", stride: int = 2, trainable: bool = True,
                 sigma: float | None = None):
        super().__init__()
        if in_chans < 1 or out_chans < 1 or iterations < 1 or stride < 1:
            raise ValueError(f"DiffusionStem: in_chans, out_chans, iterations and stride must be >= 1, got "
                             f"{in_chans}, {out_chans}, {iterations}, {stride}")
        self.in_chans, self.out_chans, self.iterations, self.stride = in_chans, out_chans, iterations, stride
        self.variant = self._check_variant(variant, sigma)
        self.params = _DiffusionParams(*scale_space_init(out_chans), step_bound=STEP_BOUNDS[self.variant],
                                       trainable=trainable)
        self.mix = nn.Conv2d(out_chans, out_chans, 1, bias=False)  # holds the weight; applied by _mix_channels_last
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(out_chans).view(out_chans, out_chans, 1, 1))
        self.mix.weight.requires_grad_(trainable)
        self.register_buffer("_channel_source", torch.arange(out_chans) % in_chans, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"DiffusionStem: expected (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if self.stride > 1:
            s = self.stride
            ph, pw = (-x.shape[-2]) % s, (-x.shape[-1]) % s
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            x = F.avg_pool2d(x, s)
        u = x.contiguous()[:, self._channel_source] if self.in_chans > 1 else x.expand(-1, self.out_chans, -1, -1)
        y = self._run(u.contiguous(), self.params, self.iterations).to(self.mix.weight.dtype)
        return _mix_channels_last(y, self.mix.weight)

    def named_diffusion_parameters(self) -> dict[str, torch.Tensor]:
        return self.params.human()

    def extra_repr(self) -> str:
        return (f"in_chans={self.in_chans}, out_chans={self.out_chans}, iterations={self.iterations}, "
                f"{self._variant_repr()}, stride={self.stride}")


class DiffusionPrepend(_DiffusionLayer):
    """A learnable 1-channel diffusion of the input image before the unchanged (pretrained) stem.

    Initialised to a mild edge-preserving smoothing (kappa 0.1, step 0.6 of the stability bound,
    i.e. 0.15 for Perona-Malik, shape 0.5), i.e. the
    kind of preprocessing the fixed Perona-Malik arm applies; trained, it finds its own.
    """

    def __init__(self, iterations: int = 4, variant: str = "perona_malik", trainable: bool = True,
                 kappa: float = 0.1, step_fraction: float = 0.6, shape: float = 0.5, sigma: float | None = None):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"DiffusionPrepend: iterations must be >= 1, got {iterations}")
        self.iterations = iterations
        self.variant = self._check_variant(variant, sigma)
        self.params = _DiffusionParams(torch.tensor([kappa]), torch.tensor([step_fraction]), torch.tensor([shape]),
                                       step_bound=STEP_BOUNDS[self.variant], trainable=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"DiffusionPrepend: expected (B, 1, H, W), got {tuple(x.shape)}")
        return self._run(x, self.params, self.iterations).to(x.dtype)

    def named_diffusion_parameters(self) -> dict[str, torch.Tensor]:
        return self.params.human()

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, {self._variant_repr()}"


class DiffusionBlock(_DiffusionLayer):
    """Depthwise learnable diffusion of feature maps with a gated residual connection.

    ``y = x + gate_c * (D_c(x) - x)``, ``D_c`` channel c's own unrolled diffusion, ``gate_c =
    sigmoid(gate_raw_c)`` initialised to ``gate_init`` (0.02), so an inserted block starts as
    (nearly) the identity and the pretrained network is undisturbed; the convex mix
    ``(1 - gate) x + gate D(x)`` is bounded for any learned value. Feature maps are roughly unit
    scale after the stages' batch norms: kappas are initialised log-spaced in 0.1 ... 2.
    Maps smaller than 3x3 (deep stages of tiny images) pass through unchanged.
    """

    def __init__(self, channels: int, iterations: int = 2, trainable: bool = True,
                 variant: str = "perona_malik", gate_init: float = 0.02, sigma: float | None = None):
        super().__init__()
        if channels < 1 or iterations < 1:
            raise ValueError(f"DiffusionBlock: channels and iterations must be >= 1, got {channels}, {iterations}")
        if not 0.0 < gate_init < 1.0:
            raise ValueError(f"DiffusionBlock: gate_init must lie in (0, 1), got {gate_init}")
        self.channels, self.iterations = channels, iterations
        self.variant = self._check_variant(variant, sigma)
        self.params = _DiffusionParams(*scale_space_init(channels, kappa_range=(0.1, 2.0)),
                                       step_bound=STEP_BOUNDS[self.variant], trainable=trainable)
        self.gate_raw = nn.Parameter(torch.full((channels,), math.log(gate_init / (1 - gate_init))),
                                     requires_grad=trainable)

    def gate(self) -> torch.Tensor:
        return torch.sigmoid(self.gate_raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"DiffusionBlock: expected (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 3:  # below the schemes' 3x3 stencil: nothing to diffuse
            return x
        d = self._run(x, self.params, self.iterations).to(x.dtype)
        return torch.lerp(x, d, _per_channel(self.gate()).to(x.dtype))

    def named_diffusion_parameters(self) -> dict[str, torch.Tensor]:
        return {**self.params.human(), "gate": self.gate()}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, iterations={self.iterations}, {self._variant_repr()}"

