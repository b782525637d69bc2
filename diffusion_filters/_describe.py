"""Formatting of filter parameters for the one-line ``describe()`` of every filter module.

One home for it so that every filter prints its parameters the same way in reports (error
messages use :func:`diffusion_filters._validation._fmt`, which shows more detail on purpose).
"""

from __future__ import annotations

import torch

__all__ = ["fmt_param"]


def fmt_param(value: float | torch.Tensor) -> str:
    """Short form of a parameter: numbers with ``:g``, a 1-element tensor by its value,
    a larger tensor by its shape (per-channel learnable parameters).

    Example:
        >>> fmt_param(0.25), fmt_param(torch.tensor([0.1])), fmt_param(torch.ones(1, 3, 1, 1))
        ('0.25', '0.1', 'tensor(1, 3, 1, 1)')
    """
    if isinstance(value, torch.Tensor):
        return f"{value.detach().item():g}" if value.numel() == 1 else f"tensor{tuple(value.shape)}"
    return f"{value:g}"
