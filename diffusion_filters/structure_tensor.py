"""Building blocks of tensor diffusion: symmetric padding, Gaussian smoothing, Weickert–Scharr
derivatives and their exact adjoint (the divergence), and the structure tensor.

Conventions: images are ``(B, C, H, W)``; ``x`` is the last (column, width) axis and ``y`` the row
axis; every channel is processed independently. Boundaries are *half-sample symmetric*
(``... b a | a b c ...``, scipy's ``"reflect"``), the discrete form of the homogeneous Neumann
condition on a cell-centred grid.

Derivatives use the optimised 3x3 filters of Scharr (2000) as proposed for tensor diffusion by
Weickert & Scharr (2002)::

    F_x = 1/32 [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]      F_y = F_x^T

i.e. the central difference ``[-1, 0, 1] / 2`` along the derivative axis times the smoothing
``[3, 10, 3] / 16`` across it. Everything is written as sums of shifted slices: on a CPU this is
faster than ``conv2d`` with one input channel (docs/filter-performance.md), and it keeps the
autograd graph.
The one exception: gradient-free CPU Gaussians with radius >= 4 (rho = 4: 25 taps) are products of
overlapping windows with a banded block matrix (:func:`_smooth_axis_blocked`), equal to the slice
sums up to float rounding.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DIVERGENCE_SCALE",
    "GAUSS_TRUNCATE",
    "gaussian_radius",
    "gaussian_smooth",
    "scharr_divergence",
    "scharr_divergence_unscaled",
    "scharr_gradient",
    "structure_tensor",
    "structure_tensor_anisotropy",
    "symmetric_pad",
]

DIVERGENCE_SCALE = 10.0 / 32.0
"""``scharr_divergence = raw * DIVERGENCE_SCALE`` (:func:`scharr_divergence_unscaled`)."""

GAUSS_TRUNCATE = 3.0
"""Gaussian kernels have radius ``int(GAUSS_TRUNCATE * sigma + 0.5)`` pixels (scipy's rule)."""

Scalar = float | torch.Tensor


def symmetric_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Pad ``x`` by ``r`` samples on both sides of ``dim`` with half-sample symmetry.

    ``r`` may exceed the size of ``dim``: the signal is then extended periodically with period
    ``2 n`` (mirror, copy, mirror, ...), exactly like scipy.ndimage's ``mode="reflect"``.
    """
    if r <= 0:
        return x
    n = x.shape[dim]
    if r <= n:
        left = x.narrow(dim, 0, r).flip(dim)
        right = x.narrow(dim, n - r, r).flip(dim)
        return torch.cat([left, x, right], dim=dim)
    idx = torch.arange(-r, n + r, device=x.device) % (2 * n)
    idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    return x.index_select(dim, idx)


def _gaussian_weights(sigma: Scalar, radius: int) -> list[Scalar]:
    """Normalised half kernel ``[g_0, g_1, ..., g_radius]`` of a sampled Gaussian.

    A float sigma gives floats; a tensor sigma (broadcastable to (B, C, 1, 1)) gives tensors of
    that shape, differentiable in sigma.
    """
    if isinstance(sigma, torch.Tensor):
        # Clamp keeps 1/sigma^2 finite for a zero sigma; the kernel is then a delta (exp(-k^2/2e-4) = 0).
        s2 = 2.0 * sigma.clamp_min(1e-2) ** 2
        w = [torch.exp(-(k * k) / s2) for k in range(radius + 1)]
        total = w[0] + 2.0 * sum(w[1:], torch.zeros_like(w[0]))
        return [wk / total for wk in w]
    s2 = 2.0 * float(sigma) ** 2
    wf = [math.exp(-(k * k) / s2) for k in range(radius + 1)]
    total = wf[0] + 2.0 * sum(wf[1:])
    return [wk / total for wk in wf]


def _smooth_axis(x: torch.Tensor, weights: list[Scalar], dim: int) -> torch.Tensor:
    """Correlate ``x`` along ``dim`` with the symmetric kernel given by its half ``weights``."""
    r = len(weights) - 1
    n = x.shape[dim]
    p = symmetric_pad(x, r, dim)
    out = p.narrow(dim, r, n) * weights[0]
    for k in range(1, r + 1):
        w = weights[k]
        # In place on the fresh accumulator: autograd-safe (add/addcmul never save their output),
        # and no temporary for the pair of taps.
        if isinstance(w, torch.Tensor):
            out.addcmul_(p.narrow(dim, r - k, n), w).addcmul_(p.narrow(dim, r + k, n), w)
        else:
            out.add_(p.narrow(dim, r - k, n), alpha=w).add_(p.narrow(dim, r + k, n), alpha=w)
    return out


BLOCK = 16
"""Outputs per block of the banded-matrix smoothing (:func:`_smooth_axis_blocked`)."""

_BLOCKED_MIN_RADIUS = 4
"""Kernels from this radius on (sigma >= 1.5) use the blocked matrix product when no gradient is needed."""

_TOEPLITZ: dict[tuple[tuple[float, ...], torch.dtype, torch.device], torch.Tensor] = {}


def _toeplitz_block(weights: list[float], like: torch.Tensor) -> torch.Tensor:
    """``(BLOCK, BLOCK + 2r)`` matrix ``M[t, t + j] = kernel[j]``: row ``t`` is output ``t`` of a block."""
    key = (tuple(weights), like.dtype, like.device)
    m = _TOEPLITZ.get(key)
    if m is None:
        r = len(weights) - 1
        kernel = torch.tensor(weights[::-1] + weights[1:], dtype=like.dtype, device=like.device)
        m = like.new_zeros((BLOCK, BLOCK + 2 * r))
        # Diagonal band written through a strided view: row stride BLOCK + 2r + 1 shifts by one column.
        m.as_strided((BLOCK, 2 * r + 1), (BLOCK + 2 * r + 1, 1)).copy_(kernel.expand(BLOCK, -1))
        if len(_TOEPLITZ) >= 32:  # bound the cache (many sigmas / dtypes in one process)
            _TOEPLITZ.clear()
        _TOEPLITZ[key] = m
    return m


def _smooth_axis_blocked(x: torch.Tensor, weights: list[float], dim: int) -> torch.Tensor:
    """Same result as :func:`_smooth_axis` (to float rounding) for float weights, gradient-free.

    Why: with a wide kernel (rho = 4: 25 taps) the shifted-slice sum is 25 passes through memory.
    Here the padded signal is cut into overlapping windows of ``BLOCK + 2r`` samples (a strided
    view, no copy) and each window is multiplied by the banded block matrix of
    :func:`_toeplitz_block` in one batched GEMM, which is faster on a CPU (figures:
    docs/filter-performance.md).
    """
    dim = dim % x.dim()
    if dim < x.dim() - 2:
        raise ValueError(f"_smooth_axis_blocked: dim={dim} is invalid; accepted: the last two axes")
    r = len(weights) - 1
    n = x.shape[dim]
    nb = -(-n // BLOCK)
    extra = nb * BLOCK - n
    p = symmetric_pad(x, r, dim)
    if extra:  # zero tail so that the last block is complete; its outputs are cut off below
        p = torch.cat([p, p.new_zeros(p.shape[:dim] + (extra,) + p.shape[dim:][1:])], dim=dim)
    p = p.contiguous()
    m = _toeplitz_block(weights, x)
    lead = p.shape[:-2]
    if dim == x.dim() - 1:
        length = p.shape[-1]
        rows = p.numel() // length
        windows = p.as_strided((nb, rows, BLOCK + 2 * r), (BLOCK, length, 1))
        out = p.new_empty((rows, nb, BLOCK))
        torch.bmm(windows, m.t().expand(nb, -1, -1), out=out.transpose(0, 1))
        out = out.reshape(lead + (p.shape[-2], nb * BLOCK))
        return out[..., :n] if extra else out
    # Rows (dim -2): each block of rows is M @ (BLOCK + 2r, W) window.
    # One bmm per plane writing straight into the output (a broadcast matmul would copy the
    # overlapping windows first).
    hp, w = p.shape[-2], p.shape[-1]
    planes = p.reshape(-1, hp, w)
    out = p.new_empty((planes.shape[0], nb, BLOCK, w))
    m_batch = m.expand(nb, -1, -1)
    for i in range(planes.shape[0]):
        torch.bmm(m_batch, planes[i].as_strided((nb, BLOCK + 2 * r, w), (BLOCK * w, w, 1)), out=out[i])
    out = out.reshape(lead + (nb * BLOCK, w))
    return out[..., :n, :] if extra else out


def gaussian_radius(sigma: Scalar) -> int:
    """Radius of :func:`gaussian_smooth`'s kernel: ``int(3 sigma + 0.5)`` (at least 1) for the largest
    ``sigma`` (a tensor sigma shares one radius), 0 where every sigma is 0 (no smoothing)."""
    smax = float(sigma.detach().max()) if isinstance(sigma, torch.Tensor) else float(sigma)
    return 0 if smax <= 0.0 else max(1, int(GAUSS_TRUNCATE * smax + 0.5))


def gaussian_smooth(x: torch.Tensor, sigma: Scalar) -> torch.Tensor:
    """Separable Gaussian smoothing ``K_sigma * x`` with half-sample symmetric boundaries.

    Args:
        x: ``(B, C, H, W)`` image.
        sigma: standard deviation in pixels (float, or tensor broadcastable to ``(B, C, 1, 1)``,
            differentiable). ``sigma == 0`` returns ``x`` itself.

    The kernel is the sampled Gaussian ``exp(-k^2 / (2 sigma^2))``, truncated at radius
    ``int(3 sigma + 0.5)`` and normalised to sum 1 (so constants are preserved exactly); this
    equals ``scipy.ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=3)``.
    """
    radius = gaussian_radius(sigma)
    if radius == 0:
        return x
    weights = _gaussian_weights(sigma, radius)
    if (
        not isinstance(sigma, torch.Tensor)
        and radius >= _BLOCKED_MIN_RADIUS
        and x.dim() >= 3
        and x.device.type == "cpu"  # a CPU-cache optimisation; GPUs keep the slice sums
        and not (torch.is_grad_enabled() and x.requires_grad)
    ):
        return _smooth_axis_blocked(_smooth_axis_blocked(x, weights, -1), weights, -2)
    return _smooth_axis(_smooth_axis(x, weights, -1), weights, -2)


def scharr_gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weickert–Scharr derivatives ``(u_x, u_y)`` with half-sample symmetric boundaries.

    ``u_x = F_x * u``, ``u_y = F_y * u`` (see the module docstring). This is the operator ``G``
    of the tensor-diffusion scheme; :func:`scharr_divergence` is exactly ``-G^T``.
    """
    p = symmetric_pad(symmetric_pad(u, 1, -1), 1, -2)  # (H+2, W+2)
    left, mid, right = p[..., :, :-2], p[..., :, 1:-1], p[..., :, 2:]
    dx = right - left  # (H+2, W): 2 * central difference along x
    sx = torch.add(3.0 * (left + right), mid, alpha=10.0)  # 16 * smoothing along x
    ux = (3.0 * (dx[..., :-2, :] + dx[..., 2:, :]) + 10.0 * dx[..., 1:-1, :]) * (1.0 / 32.0)
    uy = (sx[..., 2:, :] - sx[..., :-2, :]) * (1.0 / 32.0)
    return ux, uy


def scharr_divergence(j1: torch.Tensor, j2: torch.Tensor) -> torch.Tensor:
    """Discrete divergence ``-G^T (j1, j2)``, the exact negative adjoint of :func:`scharr_gradient`.

    Because it is the adjoint (transposed filters plus folding of the mirrored border back onto
    the pixels it copies), ``sum(div) = -<G 1, j> = 0``: the scheme conserves the mean exactly,
    and ``div(D grad u) = -G^T D G u`` is symmetric negative semi-definite for every symmetric
    positive semi-definite ``D`` (the basis of the L2-stability bound).
    """
    raw, scale = scharr_divergence_unscaled(j1, j2)
    return raw.mul_(scale)


def _odd_central_difference(s: torch.Tensor, dim: int) -> torch.Tensor:
    """``s[k+1] - s[k-1]`` along ``dim`` with odd reflection at the ends (``s[-1] = -s[0]``)."""
    n = s.shape[dim]
    if torch.is_grad_enabled() and s.requires_grad:  # out= is not differentiable: one cat instead
        first = s.narrow(dim, 1, 1) + s.narrow(dim, 0, 1)
        last = -(s.narrow(dim, n - 2, 1) + s.narrow(dim, n - 1, 1))
        return torch.cat([first, s.narrow(dim, 2, n - 2) - s.narrow(dim, 0, n - 2), last], dim=dim)
    out = torch.empty_like(s)
    torch.sub(s.narrow(dim, 2, n - 2), s.narrow(dim, 0, n - 2), out=out.narrow(dim, 1, n - 2))
    torch.add(s.narrow(dim, 1, 1), s.narrow(dim, 0, 1), out=out.narrow(dim, 0, 1))
    torch.add(s.narrow(dim, n - 2, 1), s.narrow(dim, n - 1, 1), out=out.narrow(dim, n - 1, 1)).neg_()
    return out


def _smooth_3_10_3(j: torch.Tensor, dim: int) -> torch.Tensor:
    """``(3 j[k-1] + 10 j[k] + 3 j[k+1]) / 10`` along ``dim``, half-sample symmetric ends."""
    p = symmetric_pad(j, 1, dim)
    n = j.shape[dim]
    return torch.add(p.narrow(dim, 0, n), p.narrow(dim, 2, n)).mul_(0.3).add_(p.narrow(dim, 1, n))


def scharr_divergence_unscaled(j1: torch.Tensor, j2: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(raw, scale)`` with ``raw * scale == scharr_divergence(j1, j2)`` (to float rounding).

    The adjoint of "half-sample symmetric pad, then filter" is, per axis: the smoothing
    ``[3, 10, 3]`` is self-adjoint (symmetric padding again), and the negated adjoint of the
    difference ``[-1, 0, 1]`` is the same difference with *odd* reflection at the ends (the
    folded border samples). ``sum(raw) = 0`` exactly in exact arithmetic (telescoping).
    The caller folds ``scale`` into its own multiply (one pass fewer).
    """
    raw = _odd_central_difference(_smooth_3_10_3(j1, -2), -1)
    t2 = _smooth_3_10_3(j2, -1)
    h = t2.shape[-2]
    raw.narrow(-2, 1, h - 2).add_(t2.narrow(-2, 2, h - 2)).sub_(t2.narrow(-2, 0, h - 2))
    raw.narrow(-2, 0, 1).add_(t2.narrow(-2, 1, 1)).add_(t2.narrow(-2, 0, 1))
    raw.narrow(-2, h - 1, 1).sub_(t2.narrow(-2, h - 2, 1)).sub_(t2.narrow(-2, h - 1, 1))
    return raw, DIVERGENCE_SCALE


def structure_tensor(
    u: torch.Tensor, sigma: Scalar, rho: Scalar
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Structure tensor ``J_rho(grad u_sigma) = K_rho * (grad u_sigma grad u_sigma^T)``.

    Returns its components ``(j11, j12, j22)`` = ``(K_rho*(u_x^2), K_rho*(u_x u_y), K_rho*(u_y^2))``
    with ``u_sigma = K_sigma * u`` and Weickert–Scharr derivatives. ``sigma`` (noise scale) and
    ``rho`` (integration scale) are in pixels.
    """
    gx, gy = scharr_gradient(gaussian_smooth(u, sigma))
    comps = torch.cat([gx * gx, gx * gy, gy * gy], dim=1)  # one pass of smoothing for all three
    if isinstance(rho, torch.Tensor) and rho.shape[1] != 1:
        # A per-channel rho must follow its channel in each of the three stacked blocks.
        rho = torch.cat([rho, rho, rho], dim=1)
    comps = gaussian_smooth(comps, rho)
    c = u.shape[1]
    return comps[:, :c], comps[:, c : 2 * c], comps[:, 2 * c :]


def structure_tensor_anisotropy(u: torch.Tensor, sigma: Scalar, rho: Scalar) -> tuple[torch.Tensor, torch.Tensor]:
    """``(j11 - j22, j12)`` of :func:`structure_tensor`, all that orientation and coherence need.

    ``mu1 - mu2 = sqrt((j11 - j22)^2 + 4 j12^2)`` and the eigenvectors follow from these two
    fields; by linearity ``j11 - j22 = K_rho * (u_x^2 - u_y^2)``, so only two fields are smoothed
    at the integration scale instead of three (the trace is never needed).
    """
    gx, gy = scharr_gradient(gaussian_smooth(u, sigma))
    # Both fields in one tensor: one smoothing call (half the op dispatches of two calls).
    comps = torch.cat([(gx - gy) * (gx + gy), gx * gy], dim=1)
    if isinstance(rho, torch.Tensor) and rho.shape[1] != 1:
        rho = torch.cat([rho, rho], dim=1)  # a per-channel rho follows its channel in both blocks
    comps = gaussian_smooth(comps, rho)
    c = u.shape[1]
    return comps[:, :c], comps[:, c:]
