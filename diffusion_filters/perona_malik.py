"""Perona-Malik anisotropic diffusion (Perona & Malik 1990), batched and differentiable.

PDE (Perona & Malik, IEEE TPAMI 12(7):629-639, 1990)::

    du/dt = div( g(|grad u|) grad u ),     u(0) = image,    Neumann (zero-flux) boundary

Discretisation: the 4-neighbour explicit scheme with one flux per edge, as in MedPy's
``medpy.filter.smoothing.anisotropic_diffusion`` (P. Kovesi's scheme)::

    d_y[i, j] = u[i+1, j] - u[i, j]              d_x[i, j] = u[i, j+1] - u[i, j]
    F_y = g(d_y) d_y / h_y                       F_x = g(d_x) d_x / h_x
    u <- u + step * ( F_y[i, j] - F_y[i-1, j] + F_x[i, j] - F_x[i, j-1] )

with ``F = 0`` across the image border (zero flux, i.e. reflecting/Neumann boundary). Every edge
flux is added to one pixel and subtracted from its neighbour, so the mean grey value is preserved
exactly (up to float rounding).

Conductances ``g`` (``kappa`` is the contrast threshold in grey-value units):

* ``"exponential"`` (PM eq. 1, MedPy option 1): ``g(d) = exp(-(d/kappa)^2)`` - favours
  high-contrast edges;
* ``"rational"`` (PM eq. 2, MedPy option 2): ``g(d) = 1 / (1 + (d/kappa)^2)`` - favours wide
  regions;
* ``"tukey"`` (Black et al. 1998, IEEE TIP 7(3):421-432, MedPy option 3): with
  ``kappa_s = sqrt(2) kappa``, ``g(d) = 1/2 (1 - (d/kappa_s)^2)^2`` for ``|d| <= kappa_s`` and 0
  beyond - stops diffusion completely across strong edges.

Stability: the new value is a convex combination of the old pixel and its neighbours (hence the
maximum principle: the output stays within ``[min, max]`` of the input) when
``0 < g <= 1`` and ``step * 2 * (1/h_y + 1/h_x) <= 1``, i.e. ``step <= 0.25`` for unit spacing.
A step beyond that bound is rejected.

Parameters (validated and canonicalised by the spec ``_SPEC``; the same rules as every filter):

=============== =============================== ===========================================
``iterations``  integer in [0, 10000]           number of explicit steps
``kappa``       number or tensor in [1e-9, 1e6] contrast threshold (grey values); from ~1e4 on
                                                the scheme equals linear diffusion in float32
``step``        number or tensor in (0, bound]  ``bound = step_bound(spacing)`` (0.25)
``conductance`` exponential, rational, tukey    the conductance ``g``
``spacing``     None or numbers in [1e-6, 1e6]  pixel spacing ``(h_y, h_x)``
=============== =============================== ===========================================

Performance: gradient-free float32 calls on a CPU run a C kernel that does every iteration of a
plane while the plane is in cache (:mod:`diffusion_filters._native`, built at first use); where it
cannot be built, large batches run a ``torch.compile``-fused scheme on cache-sized chunks (policy:
:mod:`diffusion_filters._compile`); calls needing gradients (learnable ``kappa``/``step`` or input)
run the same scheme with autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from . import _compile, _native
from ._describe import fmt_param
from ._filter import Filter, apply_filter
from ._image import as_param
from ._native.autograd import IterationsKernel, iterate_planes
from ._scheduler import run_planes
from ._spec import ITERATIONS_MAX, FilterSpec, Param
from .registry import register_filter

__all__ = [
    "CONDUCTANCES",
    "MIN_SIZE",
    "STEP_BOUND",
    "PeronaMalik",
    "perona_malik",
    "perona_malik_mixture",
    "step_bound",
]

CONDUCTANCES = ("exponential", "rational", "tukey")
STEP_BOUND = 0.25
"""Stability bound of ``step`` for unit pixel spacing (general: :func:`step_bound`)."""
MIN_SIZE = 3
"""Smallest accepted image side: the scheme's 3x3 cross stencil."""
_NAME = "perona_malik"
_K = 5  # iterations fused per compiled call
_EXP_CLAMP = 80.0  # exp(-80) ~ 1.8e-35 is still a normal float32: avoids slow denormals, changes nothing visible
_SQRT2 = math.sqrt(2.0)


_SPACING = Param("spacing", "spacing", low=1e-6, high=1e6, default=None, doc="pixel spacing (h_y, h_x); None = 1")


def step_bound(spacing: Sequence[float] | float | None = None) -> float:
    """Largest stable ``step`` for pixel spacing ``(h_y, h_x)``: ``1 / (2 (1/h_y + 1/h_x))``.

    With MedPy's discretisation the flux is divided by the spacing once (``g d / h``), so the
    centre weight of the stencil is ``1 - step * sum_edges g / h`` and stays >= 0 iff
    ``step <= 1 / (2 (1/h_y + 1/h_x))``; 0.25 for unit spacing.
    """
    pair = _SPACING.canonical(spacing, "step_bound", {})
    hy, hx = (1.0, 1.0) if pair is None else pair
    return 1.0 / (2.0 * (1.0 / hy + 1.0 / hx))


_SPEC = FilterSpec(
    name=_NAME,
    params=(
        Param("iterations", "int", low=0, high=ITERATIONS_MAX, doc="number of explicit steps"),
        Param("kappa", "real", low=1e-9, high=1e6, tensor=True, doc="contrast threshold (grey values)"),
        Param(
            "step", "real", low=0.0, low_open=True, high=lambda p: step_bound(p.get("spacing")),
            high_doc="step_bound(spacing) (0.25 for unit spacing)", tensor=True, stability=True,
            doc="time step per iteration",
        ),
        Param("conductance", "choice", choices=CONDUCTANCES, default="exponential", doc="conductance g"),
        _SPACING,
    ),
    differentiable=True,
    min_size=MIN_SIZE,
    identity=lambda p: p["iterations"] == 0,
    example={"iterations": 3, "kappa": 0.1, "step": 0.2},
)

_MIXTURE_SPEC = FilterSpec(
    name="perona_malik_mixture",
    params=(
        _SPEC.param("iterations"),
        _SPEC.param("kappa"),
        Param("step", "real", low=0.0, low_open=True, high=STEP_BOUND, tensor=True, stability=True, doc="time step"),
        Param("shape", "real", low=0.0, high=1.0, tensor=True, doc="mixing weight (1 = exponential, 0 = rational)"),
    ),
    differentiable=True,
    min_size=MIN_SIZE,
    identity=lambda p: p["iterations"] == 0,
)


# --------------------------------------------------------------------------------------- fluxes
# Each returns g(d) * d, written in MedPy's operation order so float32 results agree to ~1e-6.


def _flux_exponential(d: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    return torch.exp(-torch.clamp((d / kappa) ** 2, max=_EXP_CLAMP)) * d


def _flux_rational(d: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + (d / kappa) ** 2) * d


def _flux_tukey(d: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    kappa_s = kappa * _SQRT2
    top = 0.5 * (1.0 - (d / kappa_s) ** 2) ** 2
    return torch.where(d.abs() <= kappa_s, top, torch.zeros_like(top)) * d


def _flux_mixture(d: torch.Tensor, kappa: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    r2 = (d / kappa) ** 2
    return (shape * torch.exp(-torch.clamp(r2, max=_EXP_CLAMP)) + (1.0 - shape) / (1.0 + r2)) * d


_FLUXES: dict[str, Callable[..., torch.Tensor]] = {
    "exponential": _flux_exponential,
    "rational": _flux_rational,
    "tukey": _flux_tukey,
    "mixture": _flux_mixture,
}


def _pm_step(
    u: torch.Tensor,
    flux: Callable[..., torch.Tensor],
    step: torch.Tensor,
    wy: torch.Tensor | None,
    wx: torch.Tensor | None,
    params: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """One explicit iteration; ``params`` are the flux's parameters (kappa[, shape])."""
    fy = flux(u[..., 1:, :] - u[..., :-1, :], *params)
    fx = flux(u[..., :, 1:] - u[..., :, :-1], *params)
    if wy is not None and wx is not None:
        fy = fy * wy
        fx = fx * wx
    # Zero flux across the border (Neumann): pad the edge fluxes with zeros on both sides.
    fy = F.pad(fy, (0, 0, 1, 1))
    fx = F.pad(fx, (1, 1))
    return u + step * ((fy[..., 1:, :] - fy[..., :-1, :]) + (fx[..., :, 1:] - fx[..., :, :-1]))


# Fluxes of the compiled path. They take ``nq = -1 / kappa^2`` (per plane, computed once) instead
# of ``kappa``: ``-(d / kappa)^2`` costs a vector division per edge, ``d * d * nq`` two multiplies,
# and a division is several times slower than a multiply. This differs from MedPy's order of
# operations only in the last bits of the exponent's argument (the effect on the agreement with
# MedPy is recorded in docs/filter-performance.md).


def _cflux_exponential(d: torch.Tensor, nq: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.clamp(d * d * nq, min=-_EXP_CLAMP)) * d


def _cflux_rational(d: torch.Tensor, nq: torch.Tensor) -> torch.Tensor:
    return d / (1.0 - d * d * nq)


def _cflux_tukey(d: torch.Tensor, nq: torch.Tensor) -> torch.Tensor:
    r = -0.5 * d * d * nq  # (d / kappa_s)^2 with kappa_s = sqrt(2) kappa
    top = 0.5 * (1.0 - r) ** 2
    return torch.where(r <= 1.0, top, torch.zeros_like(top)) * d


def _cflux_mixture(d: torch.Tensor, nq: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    r2 = d * d * nq  # -(d / kappa)^2
    return (shape * torch.exp(torch.clamp(r2, min=-_EXP_CLAMP)) + (1.0 - shape) / (1.0 - r2)) * d


# ---------------------------------------------------------------- compiled (gradient-free) path
# The fast path works on flattened planes framed by _K zero rows above and below: E = (n, L),
# L = W (H + 2 _K). Fluxes are computed between flat neighbours (k, k+1) and (k, k+W) and
# multiplied by static masks that are zero across row ends, across the core/frame boundary and in
# the frame, which gives exactly the zero-flux border of _pm_step without any padding or masked
# load in the loop. Each iteration only updates the range whose neighbours are available, so the
# array shrinks by one row per side per iteration and, after _K iterations, is the image again.
# Results equal the eager scheme up to float rounding (same operations; compiled exp/FMA differ in the last bits).


def _flat_block(
    e: torch.Tensor, step: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, w: int, flux: Callable[..., torch.Tensor], params: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    off = 0
    for _ in range(_K):
        n = e.shape[1]
        fx = flux(e[:, 1:] - e[:, :-1], *params) * mx[off : off + n - 1]
        fy = flux(e[:, w:] - e[:, :-w], *params) * my[off : off + n - w]
        e = e[:, w : n - w] + step * ((fy[:, w : n - w] - fy[:, 0 : n - 2 * w]) + (fx[:, w : n - w] - fx[:, w - 1 : n - w - 1]))
        off += w
    return e


# One function per kind so each has its own torch.compile cache.
def _k_exponential(e: torch.Tensor, step: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, w: int, nq: torch.Tensor) -> torch.Tensor:
    return _flat_block(e, step, mx, my, w, _cflux_exponential, (nq,))


def _k_rational(e: torch.Tensor, step: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, w: int, nq: torch.Tensor) -> torch.Tensor:
    return _flat_block(e, step, mx, my, w, _cflux_rational, (nq,))


def _k_tukey(e: torch.Tensor, step: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, w: int, nq: torch.Tensor) -> torch.Tensor:
    return _flat_block(e, step, mx, my, w, _cflux_tukey, (nq,))


def _k_mixture(
    e: torch.Tensor, step: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, w: int, nq: torch.Tensor, shape: torch.Tensor
) -> torch.Tensor:
    return _flat_block(e, step, mx, my, w, _cflux_mixture, (nq, shape))


_K_STEPS = {"exponential": _k_exponential, "rational": _k_rational, "tukey": _k_tukey, "mixture": _k_mixture}


_MASKS: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def _flat_masks(h: int, w: int, wy: float, wx: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux weights of the framed flat layout: ``1/h`` on valid core edges, 0 elsewhere.

    Cached per layout (read-only): rebuilt per chunk, its dozen small eager ops in both workers
    would contend for the GIL (figures: docs/filter-performance.md).
    """
    key = (h, w, wy, wx, _K, like.dtype, like.device)
    masks = _MASKS.get(key)
    if masks is None:
        rows = torch.arange(h + 2 * _K, device=like.device).view(-1, 1)
        cols = torch.arange(w, device=like.device).view(1, -1)
        core = (rows >= _K) & (rows < _K + h)
        mx = (core & (cols < w - 1)).to(like.dtype) * wx
        my = ((rows >= _K) & (rows < _K + h - 1)).expand(-1, w).to(like.dtype) * wy
        if len(_MASKS) >= 16:  # bound the cache (many image sizes in one process)
            _MASKS.clear()
        masks = _MASKS[key] = (mx.reshape(-1), my.reshape(-1))
    return masks


def _compiled_iterations(
    planes: torch.Tensor, blocks: int, kind: str, step: torch.Tensor, wyx: tuple[float, float], params: tuple[torch.Tensor, ...]
) -> torch.Tensor | None:
    """``blocks * _K`` iterations of the compiled flat scheme on ``planes`` (n, 1, H, W)."""
    n, _, h, w = planes.shape
    mx, my = _flat_masks(h, w, wyx[0], wyx[1], planes)
    frame = planes.new_zeros((n, _K * w))
    # kappa (first parameter) enters the compiled fluxes as -1 / kappa^2 (see _cflux_exponential).
    flat_params = tuple(p.reshape(n, 1) for p in (-1.0 / (params[0] * params[0]), *params[1:]))
    s = step.reshape(n, 1)
    e = planes.reshape(n, h * w)
    for _ in range(blocks):
        framed = torch.cat([frame, e, frame], dim=1)
        e = _compile.run_compiled(_K_STEPS[kind], framed, s, mx, my, w, *flat_params, release_gil=True, fast_exp=True)
        if e is None:
            return None
    return e.reshape(n, 1, h, w)


_NATIVE_KINDS = {"exponential": 0, "rational": 1, "tukey": 2, "mixture": 3}


def _native_iterations(
    planes: torch.Tensor, iterations: int, kind: str, step: torch.Tensor, wyx: tuple[float, float],
    params: tuple[torch.Tensor, ...],
) -> torch.Tensor | None:
    """All ``iterations`` on float32 CPU ``planes`` (n, 1, H, W) by the C kernel, every iteration of a
    plane while it is in cache (:mod:`diffusion_filters._native`); None where the kernel is unavailable."""
    n = planes.shape[0]
    nq = _native.plane_values(-1.0 / (params[0] * params[0]), n)  # -1 / kappa^2, as the compiled fluxes take it
    shape = _native.plane_values(params[1], n) if kind == "mixture" else None
    return _native.run_in_place("perona_malik", "pm_planes", planes, iterations, _NATIVE_KINDS[kind],
                                _native.plane_values(step, n), nq, shape, wyx[0], wyx[1])


_NATIVE_GRAD_SHAPE = {"mixture": None, "exponential": 1.0, "rational": 0.0}
"""Conductances the C gradient covers, as mixtures (``None``: the mixture's own ``shape``)."""

MIXTURE_KERNEL = IterationsKernel("perona_malik", "pm_mixture_planes", "pm_mixture_backward")
"""The mixture scheme (unit spacing) and its gradient in C (:mod:`diffusion_filters._native.autograd`)."""


def native_gradient_applies(u: torch.Tensor, iterations: int, kind: str = "mixture",
                            spacing: tuple[float, float] | None = None) -> bool:
    """Whether a call that needs gradients runs forward and backward in the C kernel
    (:data:`MIXTURE_KERNEL`): float32 on a CPU, unit spacing, the exponential, rational or mixed
    conductance, and the kernel available (:mod:`diffusion_filters._native`)."""
    return (kind in _NATIVE_GRAD_SHAPE and (spacing is None or spacing == (1.0, 1.0)) and u.dim() == 4
            and _compile.use_native(u, iterations) and MIXTURE_KERNEL.available())


def _native_gradient_iterations(u: torch.Tensor, iterations: int, kind: str, step: torch.Tensor,
                                params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``iterations`` steps of ``u`` (B, C, H, W) by :data:`MIXTURE_KERNEL`, differentiable; the
    exponential and rational conductances are the mixtures with shape 1 and 0."""
    fixed = _NATIVE_GRAD_SHAPE[kind]
    return iterate_planes(MIXTURE_KERNEL, u, iterations, step, params[0], params[1] if fixed is None else fixed)


def _mixture_step(u: torch.Tensor, step: torch.Tensor, kappa: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    """One mixture step with unit spacing: the unit :func:`_diffuse` compiles for training."""
    return _pm_step(u, _flux_mixture, step, None, None, (kappa, shape))


def _diffuse(
    u: torch.Tensor,
    iterations: int,
    kind: str,
    step: torch.Tensor,
    spacing: tuple[float, float] | None,
    params: tuple[torch.Tensor, ...],
) -> torch.Tensor:
    """Run ``iterations`` steps on ``u`` (B, C, H, W); parameters are 4-D tensors like ``u``."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (u, step, *params))
    wy = wx = None
    if spacing is not None and spacing != (1.0, 1.0):
        wy = torch.full((1, 1, 1, 1), 1.0 / spacing[0], dtype=u.dtype, device=u.device)
        wx = torch.full((1, 1, 1, 1), 1.0 / spacing[1], dtype=u.dtype, device=u.device)
    flux = _FLUXES[kind]
    if needs_grad:
        if native_gradient_applies(u, iterations, kind, spacing):
            return _native_gradient_iterations(u, iterations, kind, step, params)
        if kind == "mixture" and min(u.shape[-2:]) >= 3 and _compile.use_compiled(u, iterations, needs_grad=True):
            # No C kernel (no compiler): large training calls of the layers' mixture compile each step,
            # forward and backward fused (docs/filter-performance.md); eager if compiling fails.
            v = _compile.run_compiled_iterations(_mixture_step, u, iterations, step, *params)
            if v is not None:
                return v
        for _ in range(iterations):
            u = _pm_step(u, flux, step, wy, wx, params)
        return u
    compiled = _compile.use_compiled(u, iterations) and min(u.shape[-2], u.shape[-1]) >= 2
    native = _compile.use_native(u, iterations)
    wyx = (1.0, 1.0) if spacing is None else (1.0 / spacing[0], 1.0 / spacing[1])

    def run(planes: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        s, rest = p["step"], tuple(p[f"p{i}"] for i in range(len(params)))
        if native:
            out = _native_iterations(planes, iterations, kind, s, wyx, rest)
            if out is not None:  # None: no C compiler (warned once); the torch paths below
                return out
        n_eager = iterations
        if compiled and iterations >= _K:
            out = _compiled_iterations(planes, iterations // _K, kind, s, wyx, rest)
            if out is not None:  # None: compilation failed, the eager scheme does everything
                planes, n_eager = out, iterations % _K
        for _ in range(n_eager):
            planes = _pm_step(planes, flux, s, wy, wx, rest)
        return planes

    # Gradient-free: cache-sized chunks of planes, one single-threaded worker per core (OpenMP
    # barriers inside each kernel stall badly when the cores are shared with other processes).
    tensors = {"step": step, **{f"p{i}": t for i, t in enumerate(params)}}
    return run_planes(u, tensors, run)


def _kernel(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """Perona-Malik on a validated ``(B, C, H, W)`` tensor with canonical parameters."""
    k = as_param(p["kappa"], t, "kappa", _NAME)
    s = as_param(p["step"], t, "step", _NAME)
    return _diffuse(t, p["iterations"], p["conductance"], s, p["spacing"], (k,))


def _mixture_kernel(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    name = _MIXTURE_SPEC.name
    k = as_param(p["kappa"], t, "kappa", name)
    s = as_param(p["step"], t, "step", name)
    shape = as_param(p["shape"], t, "shape", name)
    return _diffuse(t, p["iterations"], "mixture", s, None, (k, shape))


def perona_malik(
    x: Any,
    *,
    iterations: int,
    kappa: float | torch.Tensor,
    step: float | torch.Tensor,
    conductance: str = "exponential",
    spacing: Sequence[float] | float | None = None,
) -> Any:
    """Perona-Malik anisotropic diffusion (4-neighbour explicit scheme, Neumann boundary).

    Equations, conductances and stability: see the module docstring. Equals
    ``medpy.filter.smoothing.anisotropic_diffusion(img, niter=iterations, kappa=kappa,
    gamma=step, voxelspacing=spacing, option=1|2|3)`` for ``conductance="exponential"|"rational"|
    "tukey"`` (to ~1e-6 on float32 images in [0, 1]), applied to every 2-D plane.

    Args:
        x: image(s), ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or numpy array
            (uint8/uint16 are scaled to [0, 1]); each channel is diffused independently.
        iterations: number of explicit steps, integer in [0, 10000] (0 returns the input).
        kappa: contrast threshold in grey-value units, in [1e-9, 1e6]: gradients well below
            ``kappa`` are smoothed, gradients above it are preserved. Float or tensor
            broadcastable to ``(B, C, 1, 1)`` (gradients flow to it).
        step: time step per iteration, ``0 < step <= step_bound(spacing)`` (0.25 for unit
            spacing); the diffusion time is ``t = iterations * step``. Float or tensor.
        conductance: ``"exponential"``, ``"rational"`` or ``"tukey"``.
        spacing: pixel spacing ``(h_y, h_x)`` (or one number for both), each in [1e-6, 1e6];
            ``None`` = 1.

    Returns:
        The diffused image, same shape, kind (numpy/tensor) and device as ``x``.

    Raises:
        InvalidParameterError: a parameter of the wrong type or outside its range (one line
            naming the filter, the parameter and the accepted range).
        ValueError: NaN/Inf input, image smaller than 3x3; a NaN/Inf output (overflow).

    Example:
        >>> import torch
        >>> y = perona_malik(torch.rand(2, 1, 64, 64), iterations=10, kappa=0.1, step=0.2)
        >>> y.shape
        torch.Size([2, 1, 64, 64])
    """
    params = dict(iterations=iterations, kappa=kappa, step=step, conductance=conductance, spacing=spacing)
    return apply_filter(_SPEC, _kernel, x, params)


def perona_malik_mixture(
    x: Any,
    *,
    iterations: int,
    kappa: float | torch.Tensor,
    step: float | torch.Tensor,
    shape: float | torch.Tensor,
) -> Any:
    """Perona-Malik diffusion with a learnable mixture of the two PM conductances.

    ``g(d) = shape * exp(-(d/kappa)^2) + (1 - shape) / (1 + (d/kappa)^2)`` with ``shape`` in
    ``[0, 1]`` (1 = exponential, 0 = rational); ``0 < g <= 1`` so the scheme (same as
    :func:`perona_malik`, unit spacing) is stable for ``step <= 0.25``. Used by the learnable
    layers (:mod:`diffusion_filters.layers`), which pass per-channel tensors ``(1, C, 1, 1)``.

    Args:
        x: ``(B, C, H, W)`` (or any shape :func:`perona_malik` accepts) image/feature map.
        iterations: number of explicit steps, integer in [0, 10000].
        kappa: contrast threshold in [1e-9, 1e6], float or tensor broadcastable to ``(B, C, 1, 1)``.
        step: time step, ``0 < step <= 0.25``.
        shape: mixing weight in ``[0, 1]``.
    """
    params = dict(iterations=iterations, kappa=kappa, step=step, shape=shape)
    return apply_filter(_MIXTURE_SPEC, _mixture_kernel, x, params)


@register_filter("perona_malik")
class PeronaMalik(Filter):
    """Module form of :func:`perona_malik` (same parameters, keywords only; validated at construction).

    Example:
        >>> m = PeronaMalik(iterations=10, kappa=0.1, step=0.2, conductance="rational")
        >>> m.describe()
        'Perona–Malik (rational, 10 it., κ=0.1, Δt=0.2)'
    """

    spec = _SPEC
    kernel = staticmethod(_kernel)
    function = staticmethod(perona_malik)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        extra = "" if self.spacing is None else f", spacing={self.spacing[0]:g}×{self.spacing[1]:g}"
        return (
            f"Perona–Malik ({self.conductance}, {self.iterations} it., κ={fmt_param(self.kappa)}, "
            f"Δt={fmt_param(self.step)}{extra})"
        )
