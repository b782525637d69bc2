"""Tensor-driven anisotropic diffusion: one discretisation of ``div(D grad u)``, two tensors.

* :func:`coherence_enhancing` — coherence-enhancing diffusion, CED (Weickert 1999);
* :func:`edge_enhancing` — edge-enhancing diffusion, EED (Weickert 1994/1998);
* :func:`tensor_diffusion_step` / :func:`tensor_diffusion` — the shared explicit scheme.

The PDE is ``du/dt = div(D grad u)`` with a symmetric positive semi-definite diffusion tensor
``D = [[a, b], [b, c]]`` (``a`` acts along ``x`` = image columns, ``c`` along ``y`` = rows) and
reflecting (Neumann) boundaries. One explicit step is ::

    u^{k+1} = u^k + step * ( -G^T D(u^k) G u^k )

where ``G = (F_x, F_y)`` are the optimised 3x3 derivative filters of Weickert & Scharr (2002)
with half-sample symmetric boundaries and ``-G^T`` is its exact negative adjoint (a divergence).

Guarantees of the scheme (proved in docs/theory-tensor-nlm.md, asserted in the tests):

* **Mean preserved exactly** (up to float rounding): ``sum(G^T j) = <G 1, j> = 0``.
* **L2 stability / no growth of any mode**: ``L = -G^T D G`` is symmetric negative semi-definite
  with ``||L|| <= lambda_max(D) * ||G||^2 <= 1.00908`` (``||G||^2 = max_w |F_x(w)|^2 + |F_y(w)|^2
  = 1.00908``, eigenvalues of ``D`` in ``[0, 1]`` for CED and EED). For ``0 < step <= STEP_BOUND
  = 0.99`` every step is ``u <- (I + step L) u`` with ``I + step L`` symmetric and its spectrum in
  ``[0, 1]``: the variance never increases and no component changes sign between steps (no
  time-stepping oscillation).
* **No checkerboard artefacts**: central differences are blind to the frequencies ``(pi, 0)``,
  ``(0, pi)``, ``(pi, pi)`` (the kernel of ``G`` for periodic data, up to the border rows here), so
  the band around them is damped only weakly; by the L2 bound it is never amplified. The tests
  check that its energy decreases on noisy images and that the scheme creates no visible
  checkerboard from smooth data (band RMS below one 8-bit grey level after 50 iterations).
* **No maximum principle**: a rotation-invariant 3x3 scheme has negative stencil weights, so
  over/undershoots are possible; the tests bound them on band-limited and noisy images (< 1% of
  the grey-value range; < 2% for EED with sigma = 1, lam = 0.05). Binary images with pixel
  staircases reach ~15%.

Implementation: the torch functions below are the reference and the path for gradients;
gradient-free float32 CPU calls run every iteration of a plane in a C kernel
(``_native/tensor_diffusion.c``: the same operations, equal within float rounding) while the plane
is in cache (:mod:`diffusion_filters._native`; measurements in docs/filter-performance.md).

Parameters (specs ``_CED_SPEC`` / ``_EED_SPEC``, the same type rules as every filter):
``iterations`` integer in [0, 10000]; ``step`` in (0, 0.99]; ``sigma``, ``rho`` in [0, 100] pixels
(Gaussian kernels of radius ``int(3 sigma + 0.5)``); ``alpha`` in (0, 1]; ``lam`` in [1e-6, 1e3]
grey values per pixel; ``C`` in [1e-20, 1e6]; ``m`` integer in [1, 16]. ``step``, ``sigma``,
``rho``, ``alpha`` and ``lam`` may be tensors (learnable). Constants that depend on the image's
value range (``C`` of CED, ``lam`` of EED) are stated for the library's [0, 1] range.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from . import _compile, _native
from ._describe import fmt_param
from ._filter import Filter, apply_filter
from ._image import as_param
from ._scheduler import run_planes
from ._spec import ITERATIONS_MAX, SIGMA_MAX, FilterSpec, Param
from .registry import register_filter
from .structure_tensor import (
    DIVERGENCE_SCALE as _DIVERGENCE_SCALE,
    gaussian_radius,
    gaussian_smooth,
    scharr_divergence_unscaled,
    scharr_gradient,
    structure_tensor_anisotropy,
)

__all__ = [
    "CED_C_DEFAULT",
    "CoherenceEnhancing",
    "EdgeEnhancing",
    "MIN_SIZE",
    "STEP_BOUND",
    "ced_tensor",
    "coherence_enhancing",
    "edge_enhancing",
    "eed_tensor",
    "tensor_diffusion",
    "tensor_diffusion_step",
]

STEP_BOUND = 0.99
"""Largest validated time step: ``1 / (lambda_max(D) ||G||^2) = 1 / 1.00908`` rounded down."""

MIN_SIZE = 3
"""Smallest image side: the 3x3 Weickert–Scharr stencil."""

EXP_CUTOFF = 80.0
"""``exp(-t)`` is treated as 0 for ``t > 80`` (< 2e-35): keeps values and gradients finite."""

CED_C_DEFAULT = 1e-6
"""Default contrast constant ``C`` of CED for images in [0, 1] (see :func:`coherence_enhancing`)."""

Scalar = float | torch.Tensor
TensorFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------------------- core


def tensor_diffusion_step(
    u: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, step: Scalar
) -> torch.Tensor:
    """One explicit step ``u + step * div(D grad u)`` with ``D = [[a, b], [b, c]]``.

    Args:
        u: ``(B, C, H, W)`` image.
        a, b, c: diffusion-tensor fields broadcastable to ``u`` (``a``: x-x, ``b``: x-y, ``c``: y-y).
        step: time step (float or tensor broadcastable to ``(B, C, 1, 1)``). Stable (no mode
            grows or flips sign) for ``step <= 1 / (1.00908 * lambda_max(D))``; callers validate.

    Returns:
        The updated image. Its pixel sum equals ``u``'s (reflecting boundaries).
    """
    ux, uy = scharr_gradient(u)
    j1 = torch.addcmul(a * ux, b, uy)
    j2 = torch.addcmul(b * ux, c, uy)
    raw, scale = scharr_divergence_unscaled(j1, j2)  # div = raw * scale; scale folded into step
    if isinstance(step, torch.Tensor):
        return torch.addcmul(u, raw, step * scale)
    return torch.add(u, raw, alpha=float(step) * scale)


def tensor_diffusion(u: torch.Tensor, tensor_fn: TensorFn, iterations: int, step: Scalar) -> torch.Tensor:
    """Run ``iterations`` explicit steps, recomputing ``D = tensor_fn(u)`` before each one."""
    for _ in range(iterations):
        a, b, c = tensor_fn(u)
        u = tensor_diffusion_step(u, a, b, c, step)
    return u


def _exp_neg_reciprocal(num: float, q: torch.Tensor, m: int, scale: Scalar = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-num / (q / scale)^m)``, exactly 0 where that ratio exceeds :data:`EXP_CUTOFF`.

    Returns ``(value, q_safe)`` with ``q_safe = max(q, threshold)`` (``q`` wherever the value is
    nonzero), so that neither the value nor its gradient meets 0/0 or inf; the value is masked
    to exactly 0 below the threshold.
    ``scale`` may be a tensor (EED's ``lam^2``); ``num`` is a positive float.
    """
    threshold = (num / EXP_CUTOFF) ** (1.0 / m) * scale
    ok = q > threshold
    # Clamping (not ``where``) keeps q_safe >= threshold > 0, so the ratio and exp stay finite and
    # the gradient below the threshold is 0; the values there are zeroed by the mask below.
    # Why not torch.where: with a data-dependent mask it is much slower than a multiply on CPU.
    q_safe = torch.maximum(q, threshold) if isinstance(threshold, torch.Tensor) else q.clamp_min(threshold)
    ratio = scale / q_safe if isinstance(scale, torch.Tensor) or scale != 1.0 else q_safe.reciprocal()
    ratio = _int_power(ratio, m)
    e = torch.exp(ratio.mul_(-num)) if not ratio.requires_grad else torch.exp(ratio * -num)
    return e * ok, q_safe


def _int_power(x: torch.Tensor, m: int) -> torch.Tensor:
    """``x ** m`` for an integer ``m >= 1`` by repeated squaring (``pow`` is much slower on CPU)."""
    result: torch.Tensor | None = None
    base = x
    while True:
        if m & 1:
            result = base if result is None else result * base
        m >>= 1
        if not m:
            return result
        base = base * base


def ced_tensor(
    u: torch.Tensor, sigma: Scalar, rho: Scalar, alpha: Scalar, C: float, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weickert's coherence-enhancing diffusion tensor ``(a, b, c)``.

    With ``J_rho = [[j11, j12], [j12, j22]]`` (eigenvalues ``mu1 >= mu2``, eigenvector ``v1``
    across the structures), ``D`` has eigenvector ``v1`` with eigenvalue ``lambda1 = alpha`` and
    ``v2`` (along the structures) with ::

        lambda2 = alpha + (1 - alpha) exp(-C / (mu1 - mu2)^(2m))   (alpha where mu1 = mu2)

    Computed without eigenvectors: ``(mu1 - mu2)^2 = (j11 - j22)^2 + 4 j12^2`` and
    ``v1 v1^T = (I + [[cos2t, sin2t], [sin2t, -cos2t]]) / 2`` with
    ``cos2t = (j11 - j22) / (mu1 - mu2)``, ``sin2t = 2 j12 / (mu1 - mu2)``.
    """
    d, j12 = structure_tensor_anisotropy(u, sigma, rho)  # j11 - j22, j12
    gap2 = torch.addcmul(d * d, j12, j12, value=4.0)  # (mu1 - mu2)^2
    e, gap2_safe = _exp_neg_reciprocal(C, gap2, m)
    k = e * ((1.0 - alpha) * 0.5)  # (lambda2 - lambda1) / 2
    r = k * torch.rsqrt(gap2_safe)  # k / (mu1 - mu2)
    kc = r * d  # k cos(2 theta)
    a = (k - kc) + alpha
    c = (k + kc) + alpha
    b = r * j12 * -2.0  # -k sin(2 theta)
    return a, b, c


def eed_tensor(
    u: torch.Tensor, sigma: Scalar, lam: Scalar, m: int, C: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weickert's edge-enhancing diffusion tensor ``(a, b, c)``.

    ``D`` has eigenvector ``n = grad u_sigma / |grad u_sigma|`` (across the edge) with eigenvalue
    ``lambda1 = g(|grad u_sigma|^2) = 1 - exp(-C / (|grad u_sigma| / lam)^(2m))`` (1 where the
    gradient vanishes) and eigenvalue ``lambda2 = 1`` along the edge, i.e.
    ``D = I - exp(-C / (|grad u_sigma|^2 / lam^2)^m) n n^T``.
    """
    gx, gy = scharr_gradient(gaussian_smooth(u, sigma))
    s2 = torch.addcmul(gx * gx, gy, gy)
    e, s2_safe = _exp_neg_reciprocal(C, s2, m, lam * lam)
    w = e / s2_safe  # exp(...) / |grad u_sigma|^2 (0 where the gradient is ~0)
    wx = w * gx
    a = 1.0 - wx * gx
    b = -(wx * gy)
    c = 1.0 - w * gy * gy
    return a, b, c


# ------------------------------------------------------------------------- specifications

_ITER = Param("iterations", "int", low=0, high=ITERATIONS_MAX, doc="number of explicit steps")
_STEP = Param("step", "real", low=0.0, low_open=True, high=STEP_BOUND, tensor=True, stability=True, doc="time step")
_SIGMA = Param("sigma", "real", low=0.0, high=SIGMA_MAX, tensor=True, doc="noise scale (pixels)")
_C_RANGE = {"low": 1e-20, "high": 1e6}
_M = {"low": 1, "high": 16}

_CED_SPEC = FilterSpec(
    name="coherence_enhancing",
    params=(
        _ITER,
        _STEP,
        _SIGMA,
        Param("rho", "real", low=0.0, high=SIGMA_MAX, tensor=True, doc="integration scale (pixels)"),
        Param("alpha", "real", low=0.0, low_open=True, high=1.0, default=0.001, tensor=True,
              doc="diffusivity across the structures"),
        Param("C", "real", default=CED_C_DEFAULT, doc="coherence threshold, (grey/pixel)^(4m) for [0, 1] images", **_C_RANGE),
        Param("m", "int", default=1, doc="exponent of the coherence", **_M),
    ),
    differentiable=True,
    min_size=MIN_SIZE,
    identity=lambda p: p["iterations"] == 0,
    example={"iterations": 2, "step": 0.5, "sigma": 1.0, "rho": 2.0},
)

_EED_SPEC = FilterSpec(
    name="edge_enhancing",
    params=(
        _ITER,
        _STEP,
        _SIGMA,
        Param("lam", "real", low=1e-6, high=1e3, tensor=True, doc="contrast parameter (grey values per pixel)"),
        Param("m", "int", default=4, doc="exponent of the diffusivity", **_M),
        Param("C", "real", default=3.31488, doc="the constant C_m (3.31488 for m = 4)", **_C_RANGE),
    ),
    differentiable=True,
    min_size=MIN_SIZE,
    identity=lambda p: p["iterations"] == 0,
    example={"iterations": 2, "step": 0.5, "sigma": 1.0, "lam": 0.05},
)


# ----------------------------------------------------------------------- shared filter body


def _param(value: Scalar, like: torch.Tensor, name: str, filter_name: str) -> Scalar:
    """Floats stay floats (cheaper arithmetic); tensors become (1|B, 1|C, 1, 1) like ``like``."""
    if isinstance(value, torch.Tensor):
        return as_param(value, like, name, filter_name)
    return float(value)


def _run(
    t: torch.Tensor,
    name: str,
    iterations: int,
    params: dict[str, Scalar],
    tensor_fn_of: Callable[[dict[str, Scalar]], TensorFn],
    constants: tuple[float, int],
) -> torch.Tensor:
    """The planewise run shared by both filters.

    ``params`` (``"step"`` among them) become per-plane values; ``tensor_fn_of(p)`` builds the
    diffusion-tensor function of one chunk of planes from its values ``p``. ``constants`` are
    ``(C, m)``. Gradient-free float32 CPU calls run every iteration of a plane in the C kernel.
    """
    plane_params = {k: _param(v, t, k, name) for k, v in params.items()}
    needs_grad = torch.is_grad_enabled() and (
        t.requires_grad or any(isinstance(v, torch.Tensor) and v.requires_grad for v in plane_params.values())
    )
    native = not needs_grad and _compile.use_native(t, iterations)

    def run(u: torch.Tensor, p: dict[str, Scalar]) -> torch.Tensor:
        if native:
            out = _native_iterations(u, name, iterations, p, *constants)
            if out is not None:  # None: no C compiler (warned once); the torch scheme below
                return out
        return tensor_diffusion(u, tensor_fn_of(p), iterations, p["step"])

    return run_planes(t, plane_params, run, autograd=needs_grad)


_NATIVE_KINDS = {"coherence_enhancing": 0, "edge_enhancing": 1}


def _native_iterations(
    planes: torch.Tensor, name: str, iterations: int, p: dict[str, Scalar], c_val: float, m: int
) -> torch.Tensor | None:
    """All ``iterations`` on float32 CPU ``planes`` (n, 1, H, W) by the C kernel, every iteration of a
    plane while it is in cache (:mod:`diffusion_filters._native`); None where it is unavailable.

    The Gaussian radii are those :func:`gaussian_smooth` takes for the same chunk of planes.
    """
    n = planes.shape[0]
    ced = name == _CED_SPEC.name
    step = p["step"]
    coef = step * _DIVERGENCE_SCALE if isinstance(step, torch.Tensor) else float(step) * _DIVERGENCE_SCALE
    second = p["rho"] if ced else p["lam"]
    values = [_native.plane_values(v, n) for v in (coef, p["sigma"], second)]
    alpha = _native.plane_values(p["alpha"], n) if ced else None
    return _native.run_in_place("tensor_diffusion", "tensor_planes", planes, iterations, _NATIVE_KINDS[name], *values,
                                alpha, gaussian_radius(p["sigma"]), gaussian_radius(second) if ced else 0, c_val, m)


def _ced_kernel(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    c_val, m = p["C"], p["m"]
    return _run(
        t, _CED_SPEC.name, p["iterations"], {"step": p["step"], "sigma": p["sigma"], "rho": p["rho"], "alpha": p["alpha"]},
        lambda q: partial(ced_tensor, sigma=q["sigma"], rho=q["rho"], alpha=q["alpha"], C=c_val, m=m), (c_val, m),
    )


def _eed_kernel(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    c_val, m = p["C"], p["m"]
    return _run(
        t, _EED_SPEC.name, p["iterations"], {"step": p["step"], "sigma": p["sigma"], "lam": p["lam"]},
        lambda q: partial(eed_tensor, sigma=q["sigma"], lam=q["lam"], m=m, C=c_val), (c_val, m),
    )


# ----------------------------------------------------------------------------------- CED


def coherence_enhancing(
    x: Any,
    *,
    iterations: int,
    step: Scalar,
    sigma: Scalar,
    rho: Scalar,
    alpha: Scalar = 0.001,
    C: float = CED_C_DEFAULT,
    m: int = 1,
) -> Any:
    r"""Coherence-enhancing diffusion (Weickert 1999), explicit Weickert–Scharr scheme.

    Solves :math:`\partial_t u = \operatorname{div}(D(J_\rho(\nabla u_\sigma))\,\nabla u)` for
    ``t = iterations * step`` with reflecting boundaries. ``D`` shares its eigenvectors with the
    structure tensor :math:`J_\rho = K_\rho * (\nabla u_\sigma \nabla u_\sigma^T)`; across the
    flow-like structures (eigenvector ``v1``) it diffuses with ``lambda1 = alpha``, along them
    (``v2``) with :math:`\lambda_2 = \alpha + (1-\alpha)\exp(-C/(\mu_1-\mu_2)^{2m})`
    (``alpha`` where :math:`\mu_1 = \mu_2`), so coherent line structures are completed and
    sharpened while isotropic regions barely change.

    Reference: J. Weickert, "Coherence-enhancing diffusion filtering", IJCV 31 (1999) 111-127;
    scheme: J. Weickert, H. Scharr, "A scheme for coherence-enhancing diffusion filtering with
    optimized rotation invariance", JVCIR 13 (2002) 103-118.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or numpy array (uint8/uint16 become
            float32 in [0, 1]). Channels are filtered independently.
        iterations: number of explicit steps, integer in [0, 10000] (0 returns the input).
        step: time step per iteration, ``0 < step <= 0.99`` (:data:`STEP_BOUND`); float or
            tensor broadcastable to ``(B, C, 1, 1)`` (differentiable).
        sigma: noise scale in pixels, in [0, 100]: Gaussian pre-smoothing before the gradient.
        rho: integration scale in pixels, in [0, 100]: Gaussian averaging of the structure
            tensor (about the size of the structures' orientation neighbourhood).
        alpha: diffusivity across the structures, ``0 < alpha <= 1`` (keeps D positive definite).
        C: contrast threshold in squared-structure-tensor units, ``(grey/pixel)^(4m)``, for
            grey values in [0, 1] (the library's range), in [1e-20, 1e6]: coherence
            ``(mu1 - mu2)^2`` well above ``C^(1/m)`` gives full diffusion along the structures.
            Default ``1e-6`` (:data:`CED_C_DEFAULT`). Why: Weickert's ``C = 1`` assumes grey
            values in [0, 255]; on [0, 1] images it puts the transition at ``mu1 - mu2 = 1``,
            which no structure reaches, so ``lambda2 ~ alpha`` everywhere and the filter does
            (almost) nothing. ``C = 1e-6`` (``m = 1``) puts it at ``mu1 - mu2 = C^(1/2m) = 1e-3``,
            in the upper tail of the coherence of speckled ultrasound-like images in [0, 1] at
            ``sigma = 1``, ``rho = 3``-``4`` (docs/theory-tensor-nlm.md): line structures are
            diffused along, incoherent speckle is not. The shipped suites use this value.
        m: exponent of the coherence in the ``exp`` (sharpness of the transition), integer in [1, 16].

    Returns:
        The filtered image, same shape, kind (numpy/tensor) and device as ``x``.

    Raises:
        InvalidParameterError: a parameter of the wrong type or outside its range.
        ValueError: NaN/Inf input, image smaller than 3x3; a NaN/Inf output (overflow).

    Example:
        >>> import torch, diffusion_filters as df
        >>> img = torch.rand(1, 1, 64, 64)
        >>> out = df.coherence_enhancing(img, iterations=10, step=0.5, sigma=1.0, rho=4.0)
        >>> out.shape
        torch.Size([1, 1, 64, 64])
    """
    params = dict(iterations=iterations, step=step, sigma=sigma, rho=rho, alpha=alpha, C=C, m=m)
    return apply_filter(_CED_SPEC, _ced_kernel, x, params)


@register_filter("coherence_enhancing")
class CoherenceEnhancing(Filter):
    """Module form of :func:`coherence_enhancing` (same parameters, keywords only).

    Example:
        >>> import diffusion_filters as df
        >>> df.create("coherence_enhancing", iterations=10, step=0.5, sigma=1.0, rho=4.0).describe()
        'coherence-enhancing diffusion (10 it., Δt=0.5, σ=1, ρ=4, α=0.001, C=1e-06, m=1)'
    """

    spec = _CED_SPEC
    kernel = staticmethod(_ced_kernel)
    function = staticmethod(coherence_enhancing)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        return (
            f"coherence-enhancing diffusion ({self.iterations} it., Δt={fmt_param(self.step)}, "
            f"σ={fmt_param(self.sigma)}, ρ={fmt_param(self.rho)}, α={fmt_param(self.alpha)}, "
            f"C={fmt_param(self.C)}, m={self.m})"
        )


# ----------------------------------------------------------------------------------- EED


def edge_enhancing(
    x: Any,
    *,
    iterations: int,
    step: Scalar,
    sigma: Scalar,
    lam: Scalar,
    m: int = 4,
    C: float = 3.31488,
) -> Any:
    r"""Edge-enhancing diffusion (Weickert), explicit Weickert–Scharr scheme.

    Solves :math:`\partial_t u = \operatorname{div}(D(\nabla u_\sigma)\,\nabla u)` with ``D``
    having eigenvectors :math:`v_1 \parallel \nabla u_\sigma`, :math:`v_2 \perp \nabla u_\sigma`
    and eigenvalues :math:`\lambda_1 = g(|\nabla u_\sigma|^2) = 1 - \exp(-C_m / (|\nabla
    u_\sigma| / \lambda)^{2m})` (1 where the gradient is 0), :math:`\lambda_2 = 1`: full smoothing
    along edges and in flat regions, almost none across edges whose contrast exceeds ``lam``.
    ``C_m`` is chosen so that the flux :math:`s\,g(s^2)` is increasing for ``s < lam`` and
    decreasing above (``C_4 = 3.31488``).

    Reference: J. Weickert, "Theoretical foundations of anisotropic diffusion in image processing",
    Computing Suppl. 11 (1996) 221-236; J. Weickert, "Anisotropic Diffusion in Image Processing",
    Teubner 1998, sec. 5.2; scheme: Weickert & Scharr, JVCIR 13 (2002) 103-118.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or numpy array (uint8/uint16 become
            float32 in [0, 1]). Channels are filtered independently.
        iterations: number of explicit steps, integer in [0, 10000] (0 returns the input).
        step: time step, ``0 < step <= 0.99`` (:data:`STEP_BOUND`); float or tensor (differentiable).
        sigma: noise scale in pixels, in [0, 100], of the Gaussian pre-smoothing of the gradient.
        lam: contrast parameter ``lambda`` in grey values per pixel for images in [0, 1], in
            [1e-6, 1e3] (gradients of [0, 1] images stay below ~1): edges with
            ``|grad u_sigma| > lam`` are enhanced, lower contrasts are smoothed. Float or tensor.
        m: exponent of the diffusivity, integer in [1, 16]; Weickert uses 4.
        C: the constant ``C_m``, in [1e-20, 1e6] (dimensionless); 3.31488 is the value for ``m = 4``.

    Returns:
        The filtered image, same shape, kind and device as ``x``.

    Raises:
        InvalidParameterError: a parameter of the wrong type or outside its range.
        ValueError: NaN/Inf input, image smaller than 3x3; a NaN/Inf output (overflow).

    Example:
        >>> import torch, diffusion_filters as df
        >>> out = df.edge_enhancing(torch.rand(64, 64), iterations=10, step=0.5, sigma=1.0, lam=0.05)
        >>> out.shape
        torch.Size([64, 64])
    """
    params = dict(iterations=iterations, step=step, sigma=sigma, lam=lam, m=m, C=C)
    return apply_filter(_EED_SPEC, _eed_kernel, x, params)


@register_filter("edge_enhancing")
class EdgeEnhancing(Filter):
    """Module form of :func:`edge_enhancing` (same parameters, keywords only).

    Example:
        >>> import diffusion_filters as df
        >>> df.create("edge_enhancing", iterations=10, step=0.5, sigma=1.0, lam=0.05).describe()
        'edge-enhancing diffusion (10 it., Δt=0.5, σ=1, λ=0.05, m=4, C=3.31488)'
    """

    spec = _EED_SPEC
    kernel = staticmethod(_eed_kernel)
    function = staticmethod(edge_enhancing)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        return (
            f"edge-enhancing diffusion ({self.iterations} it., Δt={fmt_param(self.step)}, "
            f"σ={fmt_param(self.sigma)}, λ={fmt_param(self.lam)}, m={self.m}, C={fmt_param(self.C)})"
        )
