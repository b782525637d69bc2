"""Differentiable C kernels: iterated per-plane schemes with a forward and a backward entry point.

A kernel pair (:class:`IterationsKernel`) runs ``iterations`` steps of a scheme whose parameters are
one ``step``, ``kappa`` and ``shape`` per plane, and its gradient:

* ``forward(u, out, n, h, w, iterations, step, kappa, shape, *constants)`` writes the result of
  ``n`` planes of ``h x w`` to ``out``;
* ``backward(u0, grad, lam, n, h, w, iterations, step, kappa, shape, dstep, dkappa, dshape,
  *constants)`` writes dL/d(input) to ``lam`` from ``grad`` = dL/d(output), and the per-plane
  parameter gradients, recomputing the forward states from the input ``u0`` plane by plane (in
  cache) instead of keeping them.

``constants`` are fixed (non-learned) arguments of the scheme shared by every plane of a call.

Both copy a plane while it comes into cache (no separate pass over the batch for a copy).

:func:`iterate_planes` applies one to a ``(B, C, H, W)`` tensor through :class:`NativeIterations`,
a ``torch.autograd.Function`` whose forward and backward run the kernel's chunks of planes on the
scheduler's workers (:func:`diffusion_filters._scheduler.for_each_chunk`); only the input is saved.
Used by the learnable layers' two variants (Perona–Malik mixture, tensor) on float32 CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._scheduler import CPU_CHUNK_ELEMENTS, for_each_chunk
from . import call, library, plane_values

__all__ = ["IterationsKernel", "NativeIterations", "iterate_planes"]


@dataclass(frozen=True)
class IterationsKernel:
    """The library and the two entry points of a differentiable iterated scheme (see the module)."""

    library: str
    forward: str
    backward: str

    def available(self) -> bool:
        """Whether the library can be built and loaded here (see :func:`diffusion_filters._native.library`)."""
        return library(self.library) is not None


def _planes_per_chunk(h: int, w: int) -> int:
    return max(1, CPU_CHUNK_ELEMENTS // (h * w))


class NativeIterations(torch.autograd.Function):
    """``kernel`` on planes ``(n, 1, H, W)`` with per-plane ``step``, ``kappa``, ``shape`` ``(n,)``
    (all float32, contiguous)."""

    @staticmethod
    def forward(ctx: Any, kernel: IterationsKernel, planes: torch.Tensor, step: torch.Tensor, kappa: torch.Tensor,
                shape: torch.Tensor, iterations: int, constants: tuple[int | float, ...]) -> torch.Tensor:
        lib = library(kernel.library)
        n, _, h, w = planes.shape
        out = torch.empty_like(planes, memory_format=torch.contiguous_format)

        def task(_: int, i: int, j: int) -> None:
            call(lib, kernel.forward, planes[i:j], out[i:j], j - i, h, w, iterations, step[i:j], kappa[i:j],
                 shape[i:j], *constants)

        for_each_chunk(n, _planes_per_chunk(h, w), task)
        ctx.save_for_backward(planes, step, kappa, shape)
        ctx.kernel, ctx.iterations, ctx.constants = kernel, iterations, constants
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        planes, step, kappa, shape = ctx.saved_tensors
        lib = library(ctx.kernel.library)
        n, _, h, w = planes.shape
        grad = grad.to(torch.float32).contiguous()
        lam = torch.empty_like(grad)
        dstep, dkappa, dshape = (torch.empty(n, dtype=torch.float32) for _ in range(3))

        def task(_: int, i: int, j: int) -> None:
            call(lib, ctx.kernel.backward, planes[i:j], grad[i:j], lam[i:j], j - i, h, w, ctx.iterations, step[i:j],
                 kappa[i:j], shape[i:j], dstep[i:j], dkappa[i:j], dshape[i:j], *ctx.constants)

        for_each_chunk(n, _planes_per_chunk(h, w), task)
        return None, lam, dstep, dkappa, dshape, None, None


def iterate_planes(kernel: IterationsKernel, u: torch.Tensor, iterations: int, step: torch.Tensor | float,
                   kappa: torch.Tensor | float, shape: torch.Tensor | float,
                   constants: tuple[int | float, ...] = ()) -> torch.Tensor:
    """``kernel`` on ``u`` (B, C, H, W), float32 on a CPU; parameters are floats or tensors
    broadcastable to ``(B, C, 1, 1)``, spread to one value per plane (autograd sums their gradients
    back); ``constants`` are passed to the kernel as they are. Differentiable in ``u`` and every
    tensor parameter."""
    b, c, h, w = u.shape
    n = b * c

    def per_plane(t: torch.Tensor | float) -> torch.Tensor:
        return plane_values(t.expand(b, c, 1, 1) if isinstance(t, torch.Tensor) else t, n)

    planes = u.reshape(n, 1, h, w).contiguous()
    out = NativeIterations.apply(kernel, planes, per_plane(step), per_plane(kappa), per_plane(shape), iterations,
                                 constants)
    return out.reshape(b, c, h, w)
