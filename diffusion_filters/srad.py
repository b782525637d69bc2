"""Speckle-reducing anisotropic diffusion (SRAD; Yu & Acton, IEEE TIP 11(11):1260-1270, 2002).

SRAD is the ultrasound member of the family: the diffusion coefficient is driven by the
*instantaneous coefficient of variation* ``q`` (an edge detector for multiplicative speckle)
instead of the plain gradient::

    du/dt = div( c(q) grad u ),                     Neumann boundary

    q^2 = ( 1/2 (|grad u| / u)^2 - 1/16 (lap u / u)^2 ) / ( 1 + 1/4 (lap u / u) )^2

    c(q) = 1 / ( 1 + (q^2 - q0^2) / (q0^2 (1 + q0^2)) ),      clamped to [0, 1]

``q0(t)`` is the speckle scale: the coefficient of variation ``sqrt(var z) / mean z`` of a
homogeneous speckle region of the current image ``z(t)``. In homogeneous speckle ``q ~ q0`` and
``c ~ 1`` (full smoothing); at edges ``q >> q0`` and ``c -> 0`` (diffusion stops).

Discretisation (the paper's; unit spacing): with the four neighbour differences
``d_N = u[i-1,j] - u[i,j]``, ``d_S = u[i+1,j] - u[i,j]``, ``d_W``, ``d_E`` (zero across the
border)::

    |grad u|^2 = d_N^2 + d_S^2 + d_W^2 + d_E^2,        lap u = d_N + d_S + d_W + d_E
    div        = c[i+1,j] d_S + c[i,j] d_N + c[i,j+1] d_E + c[i,j] d_W
    u         <- u + step * div

The flux between two neighbours uses one coefficient (the lower/right pixel's) for both, so the
scheme is conservative (the mean is preserved) and, as ``c`` is in ``[0, 1]``, it is a convex
combination of neighbours for ``step <= 0.25`` (maximum principle; the bound is enforced). Some
presentations fold a factor 1/4 into the time step; here ``step`` multiplies ``div`` directly.

Estimating ``q0(t)`` (``q0=None``): the paper takes the coefficient of variation of a user-chosen
homogeneous region of the current image at every iteration. We choose the region automatically:
the image is cut into non-overlapping 8x8 blocks, each block's squared coefficient of variation
``var/mean^2`` is computed, and ``q0(t)^2`` is their median (per image and channel, blocks with
mean <= 1e-6 - e.g. the black background outside an ultrasound sector - excluded). In a speckle
image most blocks are homogeneous speckle, so the median picks the speckle scale and ignores the
minority of blocks straddling edges. It is recomputed at every iteration, so ``q0`` decreases as
the speckle is smoothed, as in the paper. Passing ``q0`` fixes it for all iterations.

Intensities must be non-negative (SRAD models multiplicative noise on an amplitude image). The
implementation uses the algebraically equal form ``q^2 = (8 S2 - S1^2) / (4u + S1)^2`` with
``S1 = lap u``, ``S2 = |grad u|^2`` (``4u + S1`` is the sum of the four neighbours), which is
finite where ``u = 0``, and ``c = q0^2 (1 + q0^2) / (q^2 + q0^4)``.

Parameters (spec ``_SPEC``): ``iterations`` integer in [0, 10000]; ``step`` number or tensor in
(0, 0.25]; ``q0`` ``None`` or a number or tensor in (0, 10] (a coefficient of variation; fully
developed speckle has 0.52).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from . import _compile, _native
from ._describe import fmt_param
from ._filter import Filter, apply_filter
from ._image import as_param
from ._scheduler import run_planes
from ._spec import ITERATIONS_MAX, FilterSpec, Param
from .registry import register_filter

__all__ = ["BLOCK", "MIN_SIZE", "Q0_MAX", "SRAD", "STEP_BOUND", "estimate_q0_squared", "srad"]

STEP_BOUND = 0.25
"""Stability (maximum-principle) bound of ``step``."""
MIN_SIZE = 3
"""Smallest accepted image side (3x3 stencil)."""
BLOCK = 8
"""Side of the blocks whose median coefficient of variation estimates ``q0``."""
_EPS = 1e-6  # blocks with a smaller mean are ignored by the q0 estimate
_NAME = "srad"
Q0_MAX = 10.0
"""Upper bound of ``q0`` (coefficients of variation of speckle are below ~1)."""

_SPEC = FilterSpec(
    name=_NAME,
    params=(
        Param("iterations", "int", low=0, high=ITERATIONS_MAX, doc="number of explicit steps"),
        Param("step", "real", low=0.0, low_open=True, high=STEP_BOUND, tensor=True, stability=True, doc="time step"),
        Param("q0", "real", low=0.0, low_open=True, high=Q0_MAX, tensor=True, nullable=True, default=None,
              doc="speckle coefficient of variation; None = estimated every iteration"),
    ),
    differentiable=True,
    min_size=MIN_SIZE,
    identity=lambda p: p["iterations"] == 0,
    example={"iterations": 3, "step": 0.2},
)


def estimate_q0_squared(u: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """``q0^2`` of each plane of ``u`` (B, C, H, W): median over ``block x block`` blocks of var/mean^2.

    Returns a ``(B, C, 1, 1)`` tensor (differentiable). Blocks with mean <= 1e-6 are ignored; a
    plane without any valid block gets ``q0^2 = 0`` (then ``c = 1`` where ``q = 0``).
    """
    b, c, h, w = u.shape
    k = (min(block, h), min(block, w))
    m1 = F.avg_pool2d(u, k)
    m2 = F.avg_pool2d(u * u, k)
    var = (m2 - m1 * m1).clamp_min(0.0)
    valid = m1 > _EPS
    cv2 = torch.where(valid, var / torch.where(valid, m1 * m1, torch.ones_like(m1)), torch.full_like(m1, float("nan")))
    q0sq = cv2.reshape(b, c, -1).nanmedian(dim=-1).values
    return torch.nan_to_num(q0sq, nan=0.0).reshape(b, c, 1, 1)


def _srad_step(u: torch.Tensor, step: torch.Tensor, q0sq: torch.Tensor | None) -> torch.Tensor:
    if q0sq is None:
        q0sq = estimate_q0_squared(u)
    # Guard q0 = 0 (constant image): c is then clamped to 1 where q = 0 and 0 elsewhere.
    q0sq = q0sq.clamp_min(1e-12)
    up = F.pad(u, (1, 1, 1, 1), mode="replicate")  # zero differences across the border
    north, south, west, east = up[..., :-2, 1:-1], up[..., 2:, 1:-1], up[..., 1:-1, :-2], up[..., 1:-1, 2:]
    d_n, d_s, d_w, d_e = north - u, south - u, west - u, east - u
    # q^2 of the module docstring with |grad u|^2 = S2 = sum d^2 and lap u = S1 = sum d, simplified:
    # (S2/2u^2 - S1^2/16u^2) / (1 + S1/4u)^2 = (8 S2 - S1^2) / (4u + S1)^2, and 4u + S1 is the sum
    # of the four neighbours. Same value for u > 0, fewer passes, and finite where u = 0.
    neighbours = north + south + west + east
    s1 = neighbours - 4.0 * u
    s2 = d_n * d_n + d_s * d_s + d_w * d_w + d_e * d_e
    qsq = ((8.0 * s2 - s1 * s1) / (neighbours * neighbours).clamp_min(1e-12)).clamp_min(0.0)
    # c = 1 / (1 + (q^2 - q0^2) / (q0^2 (1 + q0^2))) = q0^2 (1 + q0^2) / (q^2 + q0^4)
    coef = (q0sq * (1.0 + q0sq) / (qsq + q0sq * q0sq)).clamp(0.0, 1.0)
    cp = F.pad(coef, (0, 1, 0, 1), mode="replicate")  # c[i+1, j] / c[i, j+1] (unused at the border)
    div = cp[..., 1:, :-1] * d_s + coef * (d_n + d_w) + cp[..., :-1, 1:] * d_e
    return u + step * div


def _run(u: torch.Tensor, step: torch.Tensor, q0: torch.Tensor | None, iterations: int) -> torch.Tensor:
    q0sq = None if q0 is None else q0 * q0
    for _ in range(iterations):
        u = _srad_step(u, step, q0sq)
    return u


def _check_non_negative(t: torch.Tensor) -> None:
    if bool((t < 0).any()):
        raise ValueError(f"{_NAME}: input has negative values (min {t.min().item():g}); SRAD needs a non-negative intensity image")


def _kernel(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    """SRAD on a validated, non-negative ``(B, C, H, W)`` tensor with canonical parameters."""
    iterations = p["iterations"]
    s = as_param(p["step"], t, "step", _NAME)
    q = None if p["q0"] is None else as_param(p["q0"], t, "q0", _NAME)
    needs_grad = torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in (t, s, q))
    if needs_grad:
        return _run(t, s, q, iterations)
    # Gradient-free: cache-sized plane chunks on a thread per core (q0 is estimated per plane); the C
    # kernel where it applies, else the torch scheme.
    tensors = {"step": s} if q is None else {"step": s, "q0": q}
    native = _compile.use_native(t, iterations)

    def run(planes: torch.Tensor, pp: dict[str, Any]) -> torch.Tensor:
        out = _native_iterations(planes, iterations, pp["step"], pp.get("q0")) if native else None
        return out if out is not None else _run(planes, pp["step"], pp.get("q0"), iterations)

    return run_planes(t, tensors, run)


def _native_iterations(planes: torch.Tensor, iterations: int, step: torch.Tensor,
                       q0: torch.Tensor | None) -> torch.Tensor | None:
    """All ``iterations`` on float32 CPU ``planes`` (n, 1, H, W) by the C kernel, every iteration of a
    plane while it is in cache (:mod:`diffusion_filters._native`); None where it is unavailable."""
    n = planes.shape[0]
    q0sq = None if q0 is None else _native.plane_values(q0 * q0, n)
    return _native.run_in_place("srad", "srad_planes", planes, iterations, _native.plane_values(step, n), q0sq)


def srad(x: Any, *, iterations: int, step: float | torch.Tensor, q0: float | torch.Tensor | None = None) -> Any:
    """Speckle-reducing anisotropic diffusion (Yu & Acton 2002); equations in the module docstring.

    Args:
        x: non-negative intensity image(s), ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or
            numpy array (uint8/uint16 scaled to [0, 1]); channels are diffused independently.
        iterations: number of explicit steps, integer in [0, 10000] (0 returns the input).
        step: time step, ``0 < step <= 0.25``; float or tensor broadcastable to ``(B, C, 1, 1)``
            (gradients flow to it).
        q0: speckle coefficient of variation (dimensionless, in (0, 10]; 0.52 for fully developed
            speckle amplitude, lower after log compression). ``None``: estimated from the
            current image at every iteration (median block coefficient of variation).

    Returns:
        The despeckled image, same shape, kind and device as ``x``.

    Raises:
        InvalidParameterError: a parameter of the wrong type or outside its range.
        ValueError: NaN/Inf or negative input, image smaller than 3x3; a NaN/Inf output (overflow,
            e.g. intensities near the float range).

    Example:
        >>> import torch
        >>> y = srad(torch.rand(1, 1, 64, 64) + 0.5, iterations=10, step=0.2)
        >>> y.shape
        torch.Size([1, 1, 64, 64])
    """
    return apply_filter(_SPEC, _kernel, x, dict(iterations=iterations, step=step, q0=q0), check_input=_check_non_negative)


@register_filter("srad")
class SRAD(Filter):
    """Module form of :func:`srad` (same parameters, keywords only; validated at construction).

    Example:
        >>> SRAD(iterations=20, step=0.2).describe()
        'SRAD (20 it., Δt=0.2, q0 estimated)'
    """

    spec = _SPEC
    kernel = staticmethod(_kernel)
    function = staticmethod(srad)
    check_input = staticmethod(_check_non_negative)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        q = "q0 estimated" if self.q0 is None else f"q0={fmt_param(self.q0)}"
        return f"SRAD ({self.iterations} it., Δt={fmt_param(self.step)}, {q})"
