"""The one filter contract: a function and an ``nn.Module`` over one parameter spec and one kernel.

Every registered filter is written as

* a :class:`~diffusion_filters._spec.FilterSpec` (its parameters, ranges, defaults, smallest
  image, whether it is differentiable);
* a kernel ``kernel(t, params) -> tensor`` that computes the filter on a validated
  ``(B, C, H, W)`` float tensor with canonical parameters;
* a public function ``f(x, *, param=..., ...)`` (parameters after the image are keyword-only)
  that calls :func:`apply_filter`, and a :class:`Filter` subclass with the same parameters.

:func:`apply_filter` is the shared tail of every filter: canonicalise the parameters, convert the
image (:func:`~diffusion_filters._image.as_bchw`), reject NaN/Inf input, check the image size,
return the input where the parameters make the filter the identity, run the kernel, and reject a
non-finite output (an overflow inside the filter, e.g. intensities near the float range) with an
error naming the filter, before giving the result back in the input's shape and kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ._image import as_bchw
from ._spec import REQUIRED, FilterSpec
from ._validation import check_finite

__all__ = ["Filter", "NonFiniteOutputError", "apply_filter", "check_output_finite"]

Kernel = Callable[[torch.Tensor, Mapping[str, Any]], torch.Tensor]


class NonFiniteOutputError(FloatingPointError, ValueError):
    """A filter produced NaN/Inf from a finite input (overflow inside the filter)."""


def check_output_finite(y: torch.Tensor, x: torch.Tensor, filter_name: str) -> None:
    """Raise :class:`NonFiniteOutputError` naming the filter when ``y`` holds NaN/Inf.

    One reduction pass (numpy's single-threaded sum on CPU, as in
    :func:`~diffusion_filters._validation.check_finite`); the exact element-wise test only runs
    when the sum is not finite.
    """
    v = y.detach()
    if v.device.type == "cpu" and v.dtype in (torch.float32, torch.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            total_finite = bool(np.isfinite(v.numpy().sum()))
    else:
        total_finite = bool(torch.isfinite(v.sum()))
    if total_finite or bool(torch.isfinite(v).all()):
        return
    n_bad = int((~torch.isfinite(v)).sum())
    peak = float(x.detach().abs().max())
    raise NonFiniteOutputError(
        f"{filter_name}: the output has {n_bad} NaN/Inf value(s) from a finite input (largest |input| = "
        f"{peak:g}): an overflow inside the filter; scale the image to [0, 1] (or check the parameters)"
    )


def apply_filter(
    spec: FilterSpec,
    kernel: Kernel,
    x: Any,
    params: Mapping[str, Any],
    *,
    validated: bool = False,
    check_input: Callable[[torch.Tensor], None] | None = None,
) -> Any:
    """The shared tail of every filter (see the module docstring).

    Args:
        spec: the filter's parameter spec.
        kernel: ``kernel(t, params)`` on the ``(B, C, H, W)`` float tensor ``t``.
        x: the image as given by the caller.
        params: parameter values (canonicalised here unless ``validated``).
        validated: ``params`` are already canonical (a module validated them at construction).
        check_input: extra check of the converted image (e.g. SRAD: non-negative intensities).
    """
    p = params if validated else spec.canonicalise(params)
    t, restore = as_bchw(x, spec.name)
    check_finite(t, spec.name)
    spec.check_image_size(p, (t.shape[-2], t.shape[-1]))
    if check_input is not None:
        check_input(t)
    if spec.is_identity(p):
        return restore(t.clone())
    y = kernel(t, p)
    check_output_finite(y, t, spec.name)
    return restore(y)


class Filter(nn.Module):
    """Base of every registered filter module: parameters recorded, validated and canonicalised
    once, from the subclass's :attr:`spec`.

    Subclasses set ``spec`` (a :class:`FilterSpec`), ``kernel`` (``staticmethod``) and
    ``function`` (the public function, for introspection) and implement :meth:`describe`. The
    constructor takes the spec's parameters as keywords; each becomes an attribute holding its
    canonical value (``int``/``float``/``str``/tuple, or the tensor given). The constructor's
    signature (``inspect.signature``) is generated from the spec.
    """

    spec: ClassVar[FilterSpec]
    kernel: ClassVar[Kernel]
    function: ClassVar[Callable[..., Any]]
    filter_name: ClassVar[str]
    check_input: ClassVar[Callable[[torch.Tensor], None] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
                inspect.Parameter(
                    p.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=inspect.Parameter.empty if p.default is REQUIRED else p.default,
                )
                for p in spec.params
            ]
            if "__init__" not in cls.__dict__:  # a per-class constructor, so the signature is its own

                def __init__(self: Filter, **values: Any) -> None:
                    Filter.__init__(self, **values)

                __init__.__qualname__ = f"{cls.__qualname__}.__init__"
                __init__.__doc__ = f"Validate and record the parameters of {spec.name} (keywords only)."
                cls.__init__ = __init__  # type: ignore[method-assign]
            cls.__init__.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]

    def __init__(self, **params: Any) -> None:
        super().__init__()
        canonical = type(self).spec.canonicalise(params)
        self._param_names = tuple(canonical)
        for name, value in canonical.items():
            setattr(self, name, value)

    def get_params(self) -> dict[str, Any]:
        """The canonical parameters, in signature order (as scikit-learn's ``get_params``)."""
        return {name: getattr(self, name) for name in self._param_names}

    def min_image_size(self) -> int:
        """Smallest image side this filter accepts with its parameters."""
        return type(self).spec.min_image_size(self.get_params())

    def forward(self, x: Any) -> Any:
        cls = type(self)
        return apply_filter(cls.spec, cls.kernel, x, self.get_params(), validated=True, check_input=cls.check_input)

    def describe(self) -> str:
        """One line with the parameter values, for reports."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.describe()
