"""Input/output normalisation shared by every filter.

Every public filter accepts ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` torch tensors or numpy
arrays. :func:`as_bchw` turns any of them into a ``(B, C, H, W)`` floating-point tensor once, and
the :class:`Restore` it returns gives the filter's result back in the caller's shape, kind
(numpy in -> numpy out) and device.

dtype rules (documented once, here):

* ``float32`` / ``float64`` are kept;
* ``uint8`` is divided by 255 and ``uint16`` by 65535, giving ``float32`` in ``[0, 1]``;
* ``bool`` and every other integer or floating dtype (``float16``, ``bfloat16``, ``int32`` ...)
  become ``float32`` with unchanged values.

The output keeps the *converted* float dtype: a ``uint8`` image comes back as ``float32`` in
``[0, 1]``, never re-quantised (re-quantising would silently undo small diffusion steps).

Diffusion parameters (``kappa``, ``step``, ...) go through :func:`as_param`, which accepts a Python
number or a tensor broadcastable to ``(B, C, 1, 1)`` and keeps the autograd graph, so learnable
layers can pass their ``nn.Parameter``-derived tensors straight through.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch

__all__ = ["Restore", "as_bchw", "as_param"]

_KEPT_FLOATS = (torch.float32, torch.float64)


@dataclass(frozen=True)
class Restore:
    """Give a ``(B, C, H, W)`` result back in the shape, kind and device of the original input."""

    ndim: int
    """Number of dimensions of the original input (2, 3 or 4)."""
    numpy: bool
    """True when the original input was a numpy array (the result is then a numpy array)."""
    device: torch.device
    """Device of the original input (a numpy input counts as CPU)."""

    def __call__(self, y: torch.Tensor) -> torch.Tensor | np.ndarray:
        if y.dim() != 4:
            raise ValueError(f"restore expects a (B, C, H, W) tensor, got shape {tuple(y.shape)}")
        if self.ndim == 2:
            y = y[0, 0]
        elif self.ndim == 3:
            y = y[0]
        if self.numpy:
            return y.detach().cpu().numpy()
        return y.to(self.device)


def _numpy_to_tensor(a: np.ndarray, filter_name: str) -> torch.Tensor:
    if a.dtype.kind not in "biuf":
        raise TypeError(
            f"{filter_name}: unsupported numpy dtype {a.dtype}; accepted: bool, integer or float arrays"
        )
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint8:
        return torch.from_numpy(a.astype(np.float32) / np.float32(255.0))
    if a.dtype == np.uint16:
        return torch.from_numpy(a.astype(np.float32) / np.float32(65535.0))
    if a.dtype in (np.float32, np.float64):
        # Copy when needed: read-only memmaps and negative strides are not valid torch storage.
        if not a.flags.writeable or not a.flags.c_contiguous:
            a = np.array(a, copy=True, order="C")
        return torch.from_numpy(a)
    return torch.from_numpy(a.astype(np.float32))


def _tensor_to_float(t: torch.Tensor, filter_name: str) -> torch.Tensor:
    if t.dtype in _KEPT_FLOATS:
        return t
    if t.is_complex():
        raise TypeError(f"{filter_name}: complex tensors are not supported; accepted: real-valued images")
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if t.dtype == torch.uint16:
        return t.to(torch.float32) / 65535.0
    return t.to(torch.float32)


def as_bchw(x: Any, filter_name: str = "filter") -> tuple[torch.Tensor, Restore]:
    """Convert an image or batch to a ``(B, C, H, W)`` float tensor plus a :class:`Restore`.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` torch tensor or numpy array.
        filter_name: used in error messages.

    Returns:
        ``(t, restore)`` where ``t`` is float32/float64 ``(B, C, H, W)`` on the input's device and
        ``restore(y)`` maps a ``(B, C, H, W)`` result back to the input's shape, kind and device.
        ``t`` may share memory with ``x``: filters must not write into it.

    Example:
        >>> t, restore = as_bchw(np.zeros((4, 5), dtype=np.uint8))
        >>> t.shape, t.dtype, restore(t).shape
        (torch.Size([1, 1, 4, 5]), torch.float32, (4, 5))
    """
    if isinstance(x, np.ndarray):
        is_numpy, device = True, torch.device("cpu")
        t = _numpy_to_tensor(x, filter_name)
    elif isinstance(x, torch.Tensor):
        is_numpy, device = False, x.device
        t = _tensor_to_float(x, filter_name)
    else:
        raise TypeError(
            f"{filter_name}: expected a torch.Tensor or numpy.ndarray image, got {type(x).__name__}"
        )
    ndim = t.dim()
    if ndim == 2:
        t = t[None, None]
    elif ndim == 3:
        t = t[None]
    elif ndim != 4:
        raise ValueError(
            f"{filter_name}: image must have shape (H, W), (C, H, W) or (B, C, H, W); "
            f"got {ndim} dimensions {tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{filter_name}: empty image of shape {tuple(x.shape)}")
    return t, Restore(ndim=ndim, numpy=is_numpy, device=device)


def as_param(value: Any, like: torch.Tensor, name: str = "parameter", filter_name: str = "filter") -> torch.Tensor:
    """Turn a number or a tensor broadcastable to ``(B, C, 1, 1)`` into a 4-D tensor like ``like``.

    Python/numpy numbers become a ``(1, 1, 1, 1)`` tensor of ``like``'s dtype and device. Tensors
    are cast with ``.to`` (which keeps the autograd graph) and left-padded to 4 dimensions, so a
    per-channel ``(C, 1, 1)`` tensor becomes ``(1, C, 1, 1)``.

    Raises:
        ValueError: when the tensor does not broadcast to ``(B, C, 1, 1)`` of ``like``.
        TypeError: for values that are neither real numbers nor tensors.
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{filter_name}: {name} must be a real-valued tensor, got dtype {value.dtype}")
        b, c = like.shape[0], like.shape[1]
        target = (b, c, 1, 1)
        shape = tuple(value.shape)
        ok = len(shape) <= 4
        if ok:
            padded = (1,) * (4 - len(shape)) + shape
            ok = all(s in (1, t) for s, t in zip(padded, target))
        if not ok:
            raise ValueError(
                f"{filter_name}: {name} tensor of shape {shape} does not broadcast to (B, C, 1, 1) = {target}"
            )
        out = value.to(dtype=like.dtype, device=like.device)
        return out.reshape(padded)
    if isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_)):
        return torch.full((1, 1, 1, 1), float(value), dtype=like.dtype, device=like.device)
    raise TypeError(
        f"{filter_name}: {name} must be a number or a tensor broadcastable to (B, C, 1, 1), "
        f"got {type(value).__name__}"
    )
