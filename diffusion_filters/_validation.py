"""Argument validation shared by every filter.

Every check raises :class:`ValueError` (or :class:`TypeError` for a wrong Python type) with one
line of the form ``"<filter>: <parameter>=<value> ...; <what is accepted>"``. Tensor-valued
parameters (learnable layers pass tensors) are checked on all their elements.

The registered filters declare their parameters in a spec (:mod:`diffusion_filters._spec`), which
applies the same rules and message format from one table; :func:`check_finite` is the input
check of the shared filter tail (:func:`diffusion_filters._filter.apply_filter`). The other
helpers remain for code outside the registry that validates a single value.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_choice",
    "check_finite",
    "check_min_size",
    "check_nonneg_int",
    "check_odd_int",
    "check_positive",
    "check_step",
]


def _fmt(value: Any) -> str:
    """Short printable form of a number or tensor for an error message."""
    if isinstance(value, torch.Tensor):
        v = value.detach()
        if v.numel() == 1:
            return f"{v.item():g}"
        return f"tensor(min={v.min().item():g}, max={v.max().item():g}, shape={tuple(v.shape)})"
    if isinstance(value, float):
        # Keep "3.0" visible (an integer parameter given as a float), shorten other floats.
        return repr(value) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return repr(value)


def _as_real_tensor(name: str, value: Any, filter_name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{filter_name}: {name} must be real-valued, got a {value.dtype} tensor")
        return value.detach()
    if isinstance(value, (Real, np.number)) and not isinstance(value, (bool, np.bool_)):
        return torch.tensor(float(value), dtype=torch.float64)
    raise TypeError(f"{filter_name}: {name} must be a number or a tensor, got {type(value).__name__}")


def check_finite(x: torch.Tensor, filter_name: str) -> None:
    """Reject images containing NaN or +/-Inf."""
    # One reduction pass: the sum is finite unless a value is NaN/Inf (or the sum overflows,
    # in which case the exact element-wise test decides). On CPU numpy's single-threaded sum
    # avoids OpenMP barriers, which stall when other processes share the cores.
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            total_finite = bool(np.isfinite(x.detach().numpy().sum()))
    else:
        total_finite = bool(torch.isfinite(x.sum()))
    if not total_finite and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{filter_name}: input image contains {n_bad} NaN/Inf value(s); only finite values are accepted")


def check_positive(name: str, value: Any, filter_name: str) -> None:
    """Require a finite value > 0 (every element for a tensor)."""
    t = _as_real_tensor(name, value, filter_name)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{filter_name}: {name}={_fmt(value)} is invalid; must be finite and > 0")


def check_nonneg_int(name: str, value: Any, filter_name: str) -> int:
    """Require a Python/numpy integer >= 0 and return it as ``int``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)):
        raise ValueError(f"{filter_name}: {name}={_fmt(value)} is invalid; must be an integer >= 0")
    if value < 0:
        raise ValueError(f"{filter_name}: {name}={value} is invalid; must be an integer >= 0")
    return int(value)


def check_odd_int(name: str, value: Any, filter_name: str, minimum: int = 1) -> int:
    """Require an odd integer >= ``minimum`` (window sizes) and return it as ``int``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)):
        raise ValueError(f"{filter_name}: {name}={_fmt(value)} is invalid; must be an odd integer >= {minimum}")
    if value < minimum or value % 2 == 0:
        raise ValueError(f"{filter_name}: {name}={value} is invalid; must be an odd integer >= {minimum}")
    return int(value)


def check_step(step: Any, bound: float, filter_name: str, name: str = "step") -> None:
    """Require ``0 < step <= bound`` (the explicit scheme's stability bound), elementwise.

    A relative slack of 1e-6 absorbs float rounding of learnable steps parameterised as
    ``bound * sigmoid(raw)``.
    """
    t = _as_real_tensor(name, step, filter_name)
    ok = t.numel() > 0 and bool(torch.isfinite(t).all()) and bool((t > 0).all())
    ok = ok and bool((t <= bound * (1.0 + 1e-6)).all())
    if not ok:
        raise ValueError(
            f"{filter_name}: {name}={_fmt(step)} is outside the stability bound 0 < {name} <= {bound:g}"
        )


def check_min_size(x: torch.Tensor, min_hw: int | Sequence[int], filter_name: str) -> None:
    """Require the image's spatial size ``(H, W)`` to be at least ``min_hw`` (int or (h, w))."""
    if isinstance(min_hw, Integral):
        mh = mw = int(min_hw)
    else:
        mh, mw = (int(v) for v in min_hw)
    h, w = x.shape[-2], x.shape[-1]
    if h < mh or w < mw:
        raise ValueError(
            f"{filter_name}: image of size {h}x{w} is smaller than the stencil; minimum size is {mh}x{mw}"
        )


def check_choice(name: str, value: Any, choices: Sequence[str], filter_name: str) -> str:
    """Require ``value`` to be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{filter_name}: {name}={value!r} is invalid; accepted: {', '.join(choices)}")
    return value
