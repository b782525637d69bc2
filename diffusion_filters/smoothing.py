"""Non-diffusion comparators: Gaussian blur and median filter.

They let a study ask "is it the anisotropic diffusion that helps, or just smoothing?": a Gaussian
of standard deviation ``sigma`` is the solution of the *linear* (isotropic) heat equation
``du/dt = lap u`` at time ``t = sigma^2 / 2``, i.e. what Perona-Malik becomes when
``kappa -> inf``; the median is the classic non-linear, edge-preserving
denoiser for impulse and speckle noise.

Both use half-sample symmetric reflection at the border (``d c b a | a b c d | d c b a``, SciPy's
``mode="reflect"``), the discrete analogue of the Neumann boundary of the diffusion filters, and
match ``scipy.ndimage.gaussian_filter(mode="reflect", truncate=4.0)`` and
``scipy.ndimage.median_filter(size=size, mode="reflect")``.

Parameters (specs ``_GAUSSIAN_SPEC``, ``_MEDIAN_SPEC``): ``sigma`` a number in (0, 100] pixels
(the kernel has ``2 int(4 sigma + 0.5) + 1`` taps); ``size`` an odd integer in [1, 15] (the
unfolded window costs ``size^2`` times the image's memory; wider windows are the Gaussian's or
non-local means' job).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ._describe import fmt_param
from ._filter import Filter, apply_filter
from ._scheduler import run_planes
from ._spec import SIGMA_MAX, FilterSpec, Param
from .registry import register_filter

__all__ = ["MEDIAN_SIZE_MAX", "TRUNCATE", "Gaussian", "Median", "gaussian", "median", "symmetric_pad"]

TRUNCATE = 4.0
"""The Gaussian kernel is cut at ``TRUNCATE * sigma`` (SciPy's default)."""

MEDIAN_SIZE_MAX = 15
"""Largest median window side."""

_GAUSSIAN_SPEC = FilterSpec(
    name="gaussian",
    params=(Param("sigma", "real", low=0.0, low_open=True, high=SIGMA_MAX, doc="standard deviation (pixels)"),),
    differentiable=True,
    example={"sigma": 1.0},
)

_MEDIAN_SPEC = FilterSpec(
    name="median",
    params=(Param("size", "int", low=1, high=MEDIAN_SIZE_MAX, odd=True, doc="window side (pixels)"),),
    differentiable=True,
    identity=lambda p: p["size"] == 1,
    example={"size": 3},
)


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a half-sample symmetric extension of ``range(n)`` by ``before``/``after``."""
    i = torch.arange(-before, n + after, device=device)
    m = torch.remainder(i, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


def symmetric_pad(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad the last two dims of ``x`` by half-sample symmetric reflection (any pad size)."""
    if pad_h:
        x = x.index_select(-2, _reflect_index(x.shape[-2], pad_h, pad_h, x.device))
    if pad_w:
        x = x.index_select(-1, _reflect_index(x.shape[-1], pad_w, pad_w, x.device))
    return x


def _gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = int(TRUNCATE * sigma + 0.5)
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (r / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _gaussian_kernel_fn(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    k = _gaussian_kernel(p["sigma"], t.dtype, t.device)
    return _per_plane(t, lambda planes: _separable(planes, k))


def gaussian(x: Any, *, sigma: float) -> Any:
    """Gaussian blur ``G_sigma * u`` with symmetric (reflecting) borders.

    ``G_sigma(y, x) = exp(-(x^2 + y^2) / (2 sigma^2)) / (2 pi sigma^2)``, sampled on
    ``[-r, r]``, ``r = int(4 sigma + 0.5)``, normalised to sum 1, applied separably. Equals the
    heat equation ``du/dt = lap u`` run to ``t = sigma^2 / 2``.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or numpy array.
        sigma: standard deviation in pixels, a number in (0, 100] (not learnable).

    Example:
        >>> import torch
        >>> gaussian(torch.ones(8, 8), sigma=1.5).allclose(torch.ones(8, 8))
        True
    """
    return apply_filter(_GAUSSIAN_SPEC, _gaussian_kernel_fn, x, {"sigma": sigma})


def _separable(planes: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Correlate ``(N, 1, H, W)`` planes with ``k`` along both axes (symmetric padding).

    A weighted sum of shifted views: on a CPU a single-channel ``conv2d`` is slower.
    """
    r = (k.numel() - 1) // 2
    p = symmetric_pad(planes, r, r)
    h, w = planes.shape[-2], planes.shape[-1]
    weights = [float(v) for v in k]
    acc = p[..., 0:h, :] * weights[0]
    for i in range(1, 2 * r + 1):
        acc = acc + p[..., i : i + h, :] * weights[i]
    out = acc[..., :, 0:w] * weights[0]
    for i in range(1, 2 * r + 1):
        out = out + acc[..., :, i : i + w] * weights[i]
    return out


def _per_plane(t: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to the ``(N, 1, H, W)`` planes of ``t``: in cache-sized chunks on one
    single-threaded worker per core when no gradient is needed, directly otherwise."""
    if torch.is_grad_enabled() and t.requires_grad:
        b, c, h, w = t.shape
        return fn(t.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
    return run_planes(t, {}, lambda planes, _: fn(planes))


def _median_kernel(t: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    size = p["size"]
    r = size // 2

    def window_median(planes: torch.Tensor) -> torch.Tensor:
        if size == 3:
            return _median3x3(planes)
        n, _, h, w = planes.shape
        cols = F.unfold(symmetric_pad(planes, r, r), size)  # (n, size*size, h*w)
        return cols.median(dim=1).values.reshape(n, 1, h, w)

    return _per_plane(t, window_median)


def median(x: Any, *, size: int) -> Any:
    """Median filter over a ``size x size`` window with symmetric (reflecting) borders.

    ``y(p) = median{ u(q) : |q - p|_inf <= size // 2 }``; ``size`` is odd, so the median is one
    of the window's values. ``size=3`` uses a min/max network (separable sorted triples), larger
    windows sort the unfolded window. Not differentiable in a useful sense (gradients pass to the
    selected pixel only).

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or numpy array.
        size: odd window side in pixels, in [1, 15] (1 returns the input).

    Example:
        >>> import torch
        >>> median(torch.tensor([[0., 0, 0], [0, 9, 0], [0, 0, 0]]), size=3).max().item()
        0.0
    """
    return apply_filter(_MEDIAN_SPEC, _median_kernel, x, {"size": size})


def _med3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def _median3x3(planes: torch.Tensor) -> torch.Tensor:
    """3x3 median with min/max only (much faster than sorting unfolded windows).

    Sort every horizontal triple into (lo, mid, hi); the window median is then
    ``med3(max of the 3 lows, med3 of the 3 mids, min of the 3 highs)`` (the classic
    sorted-rows/sorted-columns/anti-diagonal argument for 3x3 medians).
    """
    h, w = planes.shape[-2], planes.shape[-1]
    p = symmetric_pad(planes, 1, 1)
    a, b, c = p[..., :, 0:w], p[..., :, 1 : w + 1], p[..., :, 2 : w + 2]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    mid = torch.minimum(hi, c)
    hi = torch.maximum(hi, c)
    mid, lo = torch.maximum(lo, mid), torch.minimum(lo, mid)
    max_lo = torch.maximum(torch.maximum(lo[..., 0:h, :], lo[..., 1 : h + 1, :]), lo[..., 2 : h + 2, :])
    min_hi = torch.minimum(torch.minimum(hi[..., 0:h, :], hi[..., 1 : h + 1, :]), hi[..., 2 : h + 2, :])
    med_mid = _med3(mid[..., 0:h, :], mid[..., 1 : h + 1, :], mid[..., 2 : h + 2, :])
    return _med3(max_lo, med_mid, min_hi)


@register_filter("gaussian")
class Gaussian(Filter):
    """Module form of :func:`gaussian`.

    Example:
        >>> Gaussian(sigma=1.5).describe()
        'Gaussian (σ=1.5)'
    """

    spec = _GAUSSIAN_SPEC
    kernel = staticmethod(_gaussian_kernel_fn)
    function = staticmethod(gaussian)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        return f"Gaussian (σ={fmt_param(self.sigma)})"


@register_filter("median")
class Median(Filter):
    """Module form of :func:`median`.

    Example:
        >>> Median(size=3).describe()
        'median (3×3)'
    """

    spec = _MEDIAN_SPEC
    kernel = staticmethod(_median_kernel)
    function = staticmethod(median)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        return f"median ({self.size}×{self.size})"
