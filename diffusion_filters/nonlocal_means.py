"""Non-local means (Buades, Coll & Morel 2005), batched, with a cost that does not grow with the patch area.

For every pixel ``p`` and every offset ``t`` of the ``search_size x search_size`` window ::

    d^2(p, t) = 1/s^2 sum_{q in W} [(u(p + q) - u(p + t + q))^2 - 2 sigma^2]   (s = patch_size)
    w(p, t)   = exp(-max(d^2(p, t), 0) / h^2)
    NL[u](p)  = sum_t w(p, t) u(p + t) / sum_t w(p, t)

Cost: for each offset ``t`` the squared difference image ``(u - u(. + t))^2`` is box-filtered
separably with binary-doubling window sums (:func:`box_sum`), so the work per pixel and offset
is ``O(log s)`` elementwise passes instead of the ``O(s^2)`` of explicit patch comparisons — the
same idea as the integral-image form (Darbon et al. 2008; Froment 2014), cheaper on a CPU.
The pair symmetry ``d^2(p, t) = d^2(p + t, -t)`` halves the offsets visited: each weight image
is accumulated at ``p`` (value ``u(p + t)``) and at ``p + t`` (value ``u(p)``).

Conventions follow ``skimage.restoration.denoise_nl_means`` (``fast_mode=True``) so that the same
parameters give the same filter: ``patch_distance = search_size // 2``, the same ``h`` and
``sigma`` (grey values), whole-sample symmetric padding (numpy ``"reflect"``), weight 1 for the
reference pixel, and scikit-image's fast-mode patch window ``W = {-o+1, ..., o}^2`` (the
``(s-1) x (s-1)`` square its integral image sums) with the ``1/s^2`` normalisation. Buades'
centred ``s x s`` mean differs by a factor ``((s-1)/s)^2`` in ``d^2``, i.e. an ``h`` larger by
``s/(s-1)``; matching scikit-image matters more here (same parameters, same result; the PSNR
comparison is in docs/theory-tensor-nlm.md). The only other difference is that scikit-image
drops weights below ``exp(-5)``; they are kept here.

Performance: gradient-free float32 calls on a CPU with a number ``h`` run the same scheme as a C
kernel (:mod:`diffusion_filters._native`, built at first use) that streams each offset row by row
instead of making a dozen passes over whole planes; the torch form below is the reference and the
path for gradients, tensor ``h`` and other devices.

Gradients: the filter is differentiable with respect to the input and ``h`` (given as a tensor).
Both directions run the same in-place loop over the offsets: the backward pass is written by
hand (``_WeightedSums``) and recomputes each offset's weights instead of storing them, so the
memory stays a few images per plane instead of several per search offset.

Parameters (spec ``_SPEC``): ``patch_size`` odd integer in [1, 31]; ``search_size`` odd integer in
[1, 51]; ``h`` number or tensor in [1e-6, 1e3] (grey values); ``sigma`` number in [0, 1e3]
(grey values). The image must be at least ``patch_size // 2 + search_size // 2 + 1`` pixels on
each side (:func:`min_image_size`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from . import _compile, _native
from ._describe import fmt_param
from ._filter import Filter, apply_filter
from ._image import as_param
from ._scheduler import run_planes
from ._spec import FilterSpec, Param
from .registry import register_filter

__all__ = ["NonlocalMeans", "box_sum", "min_image_size", "nlm_offsets", "nonlocal_means"]

_NAME = "nonlocal_means"


def min_image_size(patch_size: int, search_size: int) -> int:
    """Smallest image side for ``patch_size`` and ``search_size``: reflect padding by the patch
    plus search radius needs a larger side (``patch_size // 2 + search_size // 2 + 1``)."""
    return patch_size // 2 + search_size // 2 + 1


_SPEC = FilterSpec(
    name=_NAME,
    params=(
        Param("patch_size", "int", low=1, high=31, odd=True, doc="side of the compared patches (pixels)"),
        Param("search_size", "int", low=1, high=51, odd=True, doc="side of the search window (pixels)"),
        Param("h", "real", low=1e-6, high=1e3, tensor=True, doc="filtering strength (grey values)"),
        Param("sigma", "real", low=0.0, high=1e3, default=0.0, doc="noise standard deviation (grey values)"),
    ),
    differentiable=True,
    min_size=lambda p: min_image_size(p["patch_size"], p["search_size"]),
    identity=lambda p: p["search_size"] == 1,
    example={"patch_size": 3, "search_size": 5, "h": 0.1},
)

def nlm_offsets(search_size: int) -> list[tuple[int, int]]:
    """The half set of search offsets visited (the other half follows by pair symmetry).

    ``(dr, dc)`` with ``dc > 0``, or ``dc == 0`` and ``dr > 0``; the zero offset (weight 1) is
    handled separately. ``len(nlm_offsets(k)) == (k * k - 1) // 2``.
    """
    d = search_size // 2
    return [(dr, dc) for dr in range(-d, d + 1) for dc in range(0, d + 1) if dc > 0 or dr > 0]


def box_sum(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sums over all windows of ``size`` consecutive samples along ``dim`` (length ``n - size + 1``).

    Binary doubling: windows of width 1, 2, 4, ... are built by one addition each and the set
    bits of ``size`` are combined, so a box of side ``s`` costs ``floor(log2 s) + popcount(s) - 1``
    additions (4 for s = 7, 6 for s = 15) instead of ``s - 1``; on a CPU this is faster than a
    cumulative-sum integral image, whose scans cost about ten additions each.
    """
    n = x.shape[dim]
    out_len = n - size + 1
    result: torch.Tensor | None = None
    cur, width, offset, remaining = x, 1, 0, size
    while True:
        if remaining & 1:
            part = cur.narrow(dim, offset, out_len)
            result = part if result is None else result + part
            offset += width
        remaining >>= 1
        if not remaining:
            break
        m = cur.shape[dim] - width
        cur = cur.narrow(dim, 0, m) + cur.narrow(dim, width, m)
        width *= 2
    assert result is not None
    return result


def _anchor_window(dr: int, dc: int, hh: int, ww: int, o: int, pad: int, box: int) -> tuple[int, ...]:
    """Geometry of offset ``(dr, dc)``: anchors ``(r0, c0, lr, lc)`` (the image and the image
    shifted by ``-t``, pair symmetry) and the window ``(ra, ca, ha, wa)`` of padded rows/columns
    whose squared differences their patch sums need."""
    r0, c0 = min(0, -dr), min(0, -dc)
    lr, lc = hh + abs(dr), ww + abs(dc)
    return r0, c0, lr, lc, r0 - o + 1 + pad, c0 - o + 1 + pad, lr + box - 1, lc + box - 1


def _accumulate(
    p: torch.Tensor, q: torch.Tensor, shift: float | torch.Tensor | None, s: int, k: int, acc: torch.Tensor
) -> None:
    """Add ``sum_t w(., t) u(. + t)`` to ``acc[:, 0]`` and ``sum_t w(., t)`` to ``acc[:, 1]`` in place.

    ``p`` is the reflect-padded image ``(N, H + 2 pad, W + 2 pad)``, ``q = p / (s h)`` (so the box
    sums of squared differences are ``d^2 / h^2``), ``shift`` the noise correction
    ``sum_W 2 sigma^2 / (s^2 h^2)`` (``None``: no correction), ``acc`` ``(N, 2, H, W)``.
    """
    n, hh, ww = acc.shape[0], acc.shape[-2], acc.shape[-1]
    o, d = s // 2, k // 2
    pad = o + d
    vals = torch.stack([p, torch.ones_like(p)], dim=1)
    box = s - 1  # scikit-image's patch window: offsets -o+1 .. o on each axis (see module doc)
    for dr, dc in nlm_offsets(k):
        r0, c0, lr, lc, ra, ca, ha, wa_ = _anchor_window(dr, dc, hh, ww, o, pad, box)
        if box == 0:
            z = p.new_zeros(n, lr, lc)
        else:
            sq = q[:, ra : ra + ha, ca : ca + wa_] - q[:, ra + dr : ra + dr + ha, ca + dc : ca + dc + wa_]
            sq.mul_(sq)
            z = box_sum(box_sum(sq, box, 1), box, 2)  # (N, lr, lc): d^2 / h^2
        if shift is not None:
            z = z.sub(shift).clamp_(min=0.0)  # max(d^2, 0) / h^2
        w = z.neg().exp_()[:, None]
        # Pixel p gets w(p, t) * u(p + t); pixel p + t gets the same weight times u(p).
        wa = w[:, :, -r0 : -r0 + hh, -c0 : -c0 + ww]
        wb = w[:, :, -dr - r0 : -dr - r0 + hh, -dc - c0 : -dc - c0 + ww]
        acc.addcmul_(wa, vals[:, :, pad + dr : pad + dr + hh, pad + dc : pad + dc + ww])
        acc.addcmul_(wb, vals[:, :, pad - dr : pad - dr + hh, pad - dc : pad - dc + ww])


def _nlm_planes(u: torch.Tensor, s: int, k: int, h: float, sigma: float) -> torch.Tensor:
    """Non-local means of ``u`` (N, H, W): every plane independently (no autograd)."""
    pad = s // 2 + k // 2
    p = F.pad(u[:, None], (pad, pad, pad, pad), mode="reflect")[:, 0]  # (N, H + 2 pad, W + 2 pad)
    # Accumulators: channel 0 = sum_t w u(p + t), channel 1 = sum_t w (reference pixel: weight 1).
    acc = torch.stack([u, torch.ones_like(u)], dim=1)
    box = s - 1
    shift = 2.0 * sigma * sigma * (box * box) / (s * s * h * h)
    _accumulate(p, p * (1.0 / (s * h)), shift if shift > 0.0 else None, s, k, acc)
    return acc[:, 0] / acc[:, 1]


def _native_planes(u: torch.Tensor, s: int, k: int, h: float, sigma: float) -> torch.Tensor | None:
    """:func:`_nlm_planes` by the C kernel (:mod:`diffusion_filters._native`); None where it is unavailable."""
    lib = _native.library("nonlocal_means")
    if lib is None:
        return None
    n, hh, ww = u.shape
    pad = s // 2 + k // 2
    p = F.pad(u[:, None], (pad, pad, pad, pad), mode="reflect")[:, 0].contiguous()
    out = torch.empty((n, hh, ww), dtype=torch.float32)
    box = s - 1
    shift = 2.0 * sigma * sigma * (box * box) / (s * s * h * h)
    _native.call(lib, "nlm_planes", p, out, n, hh, ww, s, k, 1.0 / (s * h), shift)
    return out


def _box_sum_adjoint(g: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Adjoint of :func:`box_sum` (length ``n - size + 1`` -> ``n``): a full box sum of ``g``."""
    if size == 1:
        return g
    shape = list(g.shape)
    shape[dim] = size - 1
    z = g.new_zeros(shape)
    return box_sum(torch.cat([z, g, z], dim=dim), size, dim)


class _WeightedSums(torch.autograd.Function):
    """``(sum_t w u(. + t), sum_t w)`` over every nonzero offset, with a hand-written backward.

    Inputs: the padded image ``p`` (N, Hp, Wp), ``inv = 1 / (s h)`` (N, 1, 1) and the noise
    correction ``shift`` (N, 1, 1) or ``None``. Why a custom backward: autograd through the loop
    would keep several images per search offset and allocate a zero-filled padded image for
    every slice it differentiates; here nothing per offset is saved and the backward pass
    recomputes each offset's weights once, accumulating the gradients in place.
    """

    @staticmethod
    def forward(ctx, p, inv, shift, s, k, hh, ww):  # type: ignore[override]
        acc = p.new_zeros(p.shape[0], 2, hh, ww)
        _accumulate(p, p * inv, shift, s, k, acc)
        ctx.save_for_backward(p, inv, shift)
        ctx.geometry = (s, k, hh, ww)
        return acc[:, 0], acc[:, 1]

    @staticmethod
    def backward(ctx, gn, gd):  # type: ignore[override]
        # One intra-op thread: the loop is many small passes, and OpenMP barriers between them
        # stall when the cores are shared (the same reason as the forward's chunk scheduler).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per-thread setting, restored below
        try:
            return _WeightedSums._backward(ctx, gn, gd)
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _backward(ctx, gn, gd):  # type: ignore[no-untyped-def]
        p, inv, shift = ctx.saved_tensors
        s, k, hh, ww = ctx.geometry
        n = p.shape[0]
        o, d = s // 2, k // 2
        pad = o + d
        box = s - 1
        q = p * inv
        gp = torch.zeros_like(p)
        gq = torch.zeros_like(p)
        gshift = p.new_zeros(n, 1, 1) if shift is not None else None
        gn = gn.contiguous() if gn is not None else p.new_zeros(n, hh, ww)
        gd = gd.contiguous() if gd is not None else p.new_zeros(n, hh, ww)
        for dr, dc in nlm_offsets(k):
            r0, c0, lr, lc, ra, ca, ha, wa_ = _anchor_window(dr, dc, hh, ww, o, pad, box)
            diff = None
            if box == 0:
                z = p.new_zeros(n, lr, lc)
            else:
                diff = q[:, ra : ra + ha, ca : ca + wa_] - q[:, ra + dr : ra + dr + ha, ca + dc : ca + dc + wa_]
                z = box_sum(box_sum(diff * diff, box, 1), box, 2)
            mask = None
            if shift is not None:
                mask = z > shift
                z = z.sub(shift).clamp_(min=0.0)
            w = z.neg().exp_()
            ia = (slice(None), slice(-r0, -r0 + hh), slice(-c0, -c0 + ww))
            ib = (slice(None), slice(-dr - r0, -dr - r0 + hh), slice(-dc - c0, -dc - c0 + ww))
            va = p[:, pad + dr : pad + dr + hh, pad + dc : pad + dc + ww]
            vb = p[:, pad - dr : pad - dr + hh, pad - dc : pad - dc + ww]
            # Values: d/dV of w V is w (times the incoming gradient of the numerator).
            gp[:, pad + dr : pad + dr + hh, pad + dc : pad + dc + ww].addcmul_(gn, w[ia])
            gp[:, pad - dr : pad - dr + hh, pad - dc : pad - dc + ww].addcmul_(gn, w[ib])
            # Weights: dL/dw = gn V + gd at both anchors; dL/dz = -w dL/dw (0 where clamped).
            gw = p.new_zeros(n, lr, lc)
            gw[ia].addcmul_(gn, va).add_(gd)
            gw[ib].addcmul_(gn, vb).add_(gd)
            t = gw.mul_(w)  # = -dL/dz
            if mask is not None:
                t.mul_(mask)
                gshift += t.sum(dim=(1, 2), keepdim=True)  # dz/dshift = -1
            if diff is not None:
                # z = box(box(diff^2)): dL/d(diff) = 2 diff box^T(box^T(dL/dz)).
                gdiff = _box_sum_adjoint(_box_sum_adjoint(t, box, 2), box, 1).mul_(diff).mul_(-2.0)
                gq[:, ra : ra + ha, ca : ca + wa_].add_(gdiff)
                gq[:, ra + dr : ra + dr + ha, ca + dc : ca + dc + wa_].sub_(gdiff)
        ginv = (gq * p).sum(dim=(1, 2), keepdim=True) if ctx.needs_input_grad[1] else None
        gp.addcmul_(gq, inv)
        return gp, ginv, gshift, None, None, None, None


def _nlm_planes_autograd(u: torch.Tensor, s: int, k: int, h: float | torch.Tensor, sigma: float) -> torch.Tensor:
    """Non-local means of ``u`` (N, H, W) keeping the autograd graph (``h``: float or (N, 1, 1))."""
    n, hh, ww = u.shape
    pad = s // 2 + k // 2
    p = F.pad(u[:, None], (pad, pad, pad, pad), mode="reflect")[:, 0]
    h_t = h if isinstance(h, torch.Tensor) else u.new_full((1, 1, 1), float(h))
    h_t = h_t.to(u.dtype).expand(n, 1, 1)
    inv = 1.0 / (s * h_t)
    box = s - 1
    shift = 2.0 * sigma * sigma * (box * box) * inv * inv if sigma > 0.0 else None  # sum_W 2 sigma^2 / (s h)^2
    num, den = _WeightedSums.apply(p, inv, shift, s, k, hh, ww)
    return (u + num) / (1.0 + den)


def _kernel(t: torch.Tensor, p: Mapping[str, Any]) -> torch.Tensor:
    """Non-local means on a validated ``(B, C, H, W)`` tensor with canonical parameters."""
    s, k, sf = p["patch_size"], p["search_size"], p["sigma"]
    h = p["h"]
    if isinstance(h, torch.Tensor):
        h = as_param(h, t, "h", _NAME)
    needs_grad = torch.is_grad_enabled() and (t.requires_grad or (isinstance(h, torch.Tensor) and h.requires_grad))
    if not needs_grad and not isinstance(h, torch.Tensor):
        # Gradient-free, scalar h: the C kernel where it applies, else the in-place torch loop.
        native = _compile.use_native(t)

        def run_free(planes: torch.Tensor, _: dict[str, Any]) -> torch.Tensor:
            out = _native_planes(planes[:, 0], s, k, h, sf) if native else None
            return (out if out is not None else _nlm_planes(planes[:, 0], s, k, h, sf))[:, None]

        return run_planes(t, {}, run_free)

    def run(planes: torch.Tensor, pp: dict[str, Any]) -> torch.Tensor:
        hp = pp["h"][:, 0] if isinstance(pp["h"], torch.Tensor) else pp["h"]
        return _nlm_planes_autograd(planes[:, 0], s, k, hp, sf)[:, None]

    return run_planes(t, {"h": h}, run, autograd=needs_grad)


def nonlocal_means(
    x: Any, *, patch_size: int, search_size: int, h: float | torch.Tensor, sigma: float = 0.0
) -> Any:
    r"""Non-local means denoising (Buades, Coll & Morel 2005), fast box-filtered form.

    .. math::
        NL[u](p) = \frac{\sum_{t} w(p,t)\,u(p+t)}{\sum_t w(p,t)},\quad
        w(p,t) = \exp\!\Big(-\frac{\max(d^2(p,t),\,0)}{h^2}\Big),\quad
        d^2(p,t) = \frac{1}{s^2}\sum_{q\in W}\big[(u(p+q)-u(p+t+q))^2 - 2\sigma^2\big]

    where ``t`` ranges over the ``search_size x search_size`` window, ``s = patch_size`` and
    ``W`` is scikit-image's fast-mode patch window (offsets ``-o+1 .. o``, ``o = s // 2``; see
    the module docstring): ``d^2`` is the noise-corrected mean squared patch difference.
    The cost is ``O(H W search_size^2 log(patch_size))``: box-filtered squared differences
    per search offset instead of per-patch sums (``O(patch_size^2)``).

    Reference: A. Buades, B. Coll, J.-M. Morel, "A non-local algorithm for image denoising",
    CVPR 2005, vol. 2, pp. 60-65; fast form: J. Darbon et al., ISBI 2008; J. Froment, IPOL 2014.
    Parameters match ``skimage.restoration.denoise_nl_means(img, patch_size, search_size // 2,
    h, fast_mode=True, sigma=sigma)``.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` tensor or numpy array (uint8/uint16 become
            float32 in [0, 1]); channels are denoised independently.
        patch_size: side of the square patches compared, odd integer in [1, 31] (pixels).
        search_size: side of the square search window, odd integer in [1, 51] (pixels); 1
            returns the input.
        h: filtering strength in grey values, in [1e-6, 1e3]: patches whose RMS difference is
            well below ``h`` are averaged. For Gaussian noise of standard deviation ``sigma`` use
            ``h ~ 0.8 sigma`` together with ``sigma``, or ``h ~ sigma`` without it. Float or
            tensor broadcastable to ``(B, C, 1, 1)`` (gradients flow to it).
        sigma: noise standard deviation in grey values, in [0, 1e3]; the expected ``2 sigma^2``
            per pixel pair is subtracted from the patch distances (Buades et al., IPOL 2011).

    Returns:
        The denoised image, same shape, kind and device as ``x``. Differentiable with respect to
        ``x`` and a tensor ``h`` (see the module docstring for the cost).

    Raises:
        InvalidParameterError: a parameter of the wrong type or outside its range.
        ValueError: NaN/Inf input; an image side below ``patch_size // 2 + search_size // 2 + 1``
            (:func:`min_image_size`); a NaN/Inf output (overflow).

    Example:
        >>> import torch, diffusion_filters as df
        >>> noisy = (0.5 + 0.1 * torch.randn(64, 64)).clamp(0, 1)
        >>> df.nonlocal_means(noisy, patch_size=7, search_size=11, h=0.08, sigma=0.1).shape
        torch.Size([64, 64])
    """
    params = dict(patch_size=patch_size, search_size=search_size, h=h, sigma=sigma)
    return apply_filter(_SPEC, _kernel, x, params)


@register_filter("nonlocal_means")
class NonlocalMeans(Filter):
    """Module form of :func:`nonlocal_means` (same parameters, keywords only).

    Example:
        >>> import diffusion_filters as df
        >>> df.create("nonlocal_means", patch_size=7, search_size=11, h=0.08).describe()
        'non-local means (patch 7×7, search 11×11, h=0.08, σ=0)'
    """

    spec = _SPEC
    kernel = staticmethod(_kernel)
    function = staticmethod(nonlocal_means)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        p, k = self.patch_size, self.search_size
        return f"non-local means (patch {p}×{p}, search {k}×{k}, h={fmt_param(self.h)}, σ={fmt_param(self.sigma)})"
