"""Parameter specifications: the one place where a filter's parameters are recorded, validated
and canonicalised (in the spirit of scikit-learn's ``_parameter_constraints``).

Every filter declares a :class:`FilterSpec`: an ordered table of :class:`Param` entries (name,
kind, accepted range with an upper bound, default, whether a tensor is accepted) plus the
smallest image it accepts. :meth:`FilterSpec.canonicalise` applies the same type rules to every
filter:

* an ``int`` parameter accepts Python/numpy integers only (no floats such as ``3.0``, no
  booleans, no strings) and is returned as ``int``;
* a ``real`` parameter accepts Python/numpy integers and floats (no booleans, no strings such as
  ``'1'``), rejects NaN/Inf and is returned as ``float``, so ``1`` and ``1.0`` give one
  configuration and one hash; where ``tensor=True`` a real-valued tensor is accepted too (learnable
  layers pass per-channel tensors), checked on all its elements and kept as given (with its graph);
* a ``choice`` parameter accepts one of its strings; a ``spacing`` parameter ``None``, a number
  or a pair of numbers, returned as a ``(float, float)`` tuple;
* every numeric parameter has a documented range with an upper bound, so that a typo such as
  ``iterations: 1000000000`` or ``sigma: 1e30`` is rejected before it hangs or allocates
  gigabytes.

Every violation raises :class:`InvalidParameterError` (a ``ValueError`` and a ``TypeError``) with
one line naming the filter, the parameter and the accepted range, e.g.
``"gaussian: sigma=1e+30 is invalid; must be a number in (0, 100]"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from ._validation import _fmt

__all__ = [
    "ITERATIONS_MAX",
    "REQUIRED",
    "SIGMA_MAX",
    "FilterSpec",
    "InvalidParameterError",
    "Param",
]

ITERATIONS_MAX = 10_000
"""Upper bound of every ``iterations`` parameter (explicit schemes: diffusion time ``iterations * step``)."""

SIGMA_MAX = 100.0
"""Upper bound (pixels) of every Gaussian scale (``sigma``, ``rho``): kernels of a few hundred taps."""


class InvalidParameterError(ValueError, TypeError):
    """A filter parameter of the wrong type or outside its accepted range (one-line message)."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter that has no default."""

Bound = float | Callable[[Mapping[str, Any]], float] | None


@dataclass(frozen=True)
class Param:
    """One parameter of a filter.

    Attributes:
        name: keyword name.
        kind: ``"int"``, ``"real"``, ``"choice"`` or ``"spacing"``.
        low, high: accepted range (``None``: unbounded on that side). ``high`` may be a function
            of the other (already canonical) parameters, e.g. a stability bound that depends on
            the pixel spacing.
        low_open: ``True`` for ``low < value``, ``False`` for ``low <= value``.
        default: the default value, or :data:`REQUIRED`.
        tensor: a tensor (broadcastable to ``(B, C, 1, 1)``) is accepted and keeps its graph.
        odd: integers must be odd (window sides).
        choices: accepted strings of a ``choice`` parameter.
        nullable: ``None`` is accepted (and means what the docstring says).
        stability: ``high`` is the explicit scheme's stability bound (message says so; a relative
            slack of 1e-6 absorbs the rounding of learnable steps ``bound * sigmoid(raw)``).
        high_doc: how a computed ``high`` is stated in messages without parameters.
        doc: unit and meaning in a few words (used by the documentation table).
    """

    name: str
    kind: str
    low: float | None = None
    high: Bound = None
    low_open: bool = False
    default: Any = REQUIRED
    tensor: bool = False
    odd: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    stability: bool = False
    high_doc: str = ""
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def high_value(self, params: Mapping[str, Any]) -> float | None:
        return self.high(params) if callable(self.high) else self.high

    def accepted(self, params: Mapping[str, Any] | None = None) -> str:
        """Human form of the accepted values, e.g. ``"an odd integer in [1, 15]"``."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if callable(self.high) and params is None:
            hi = self.high_doc or "a bound set by the other parameters"
        else:
            high = self.high_value(params or {})
            hi = "inf" if high is None else f"{high:g}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if hi == "inf" else "]"
        interval = f"{left}{lo}, {hi}{right}"
        if self.kind == "int":
            text = f"{'an odd' if self.odd else 'an'} integer in {interval}"
        elif self.kind == "spacing":
            text = f"None, a number or a pair (h_y, h_x) of numbers in {interval}"
        else:
            text = f"a number{' or tensor' if self.tensor else ''} in {interval}"
        return f"None or {text}" if self.nullable and self.kind != "spacing" else text

    # ------------------------------------------------------------------ canonicalisation

    def canonical(self, value: Any, filter_name: str, params: Mapping[str, Any]) -> Any:
        """``value`` in canonical form; :class:`InvalidParameterError` if it is not accepted."""
        if value is None and (self.nullable or self.kind == "spacing"):
            return None
        if self.kind == "int":
            return self._int(value, filter_name)
        if self.kind == "real":
            return self._real(value, filter_name, params)
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise InvalidParameterError(
                    f"{filter_name}: {self.name}={value!r} is invalid; accepted: {', '.join(self.choices)}"
                )
            return value
        if self.kind == "spacing":
            return self._spacing(value, filter_name)
        raise AssertionError(f"unknown parameter kind {self.kind!r}")

    def _fail(self, value: Any, filter_name: str, params: Mapping[str, Any] | None = None) -> InvalidParameterError:
        shown = _fmt(value) if isinstance(value, (Real, np.number, torch.Tensor)) else repr(value)
        return InvalidParameterError(f"{filter_name}: {self.name}={shown} is invalid; must be {self.accepted(params)}")

    def _in_range(self, v: float, params: Mapping[str, Any]) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        high = self.high_value(params)
        if high is not None and v > high * (1.0 + 1e-6 if self.stability else 1.0):
            return False
        return True

    def _int(self, value: Any, filter_name: str) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)):
            raise self._fail(value, filter_name)
        v = int(value)
        if not self._in_range(v, {}) or (self.odd and v % 2 == 0):
            raise self._fail(value, filter_name)
        return v

    def _number(self, value: Any, filter_name: str, params: Mapping[str, Any]) -> float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.integer, np.floating)):
            raise self._fail(value, filter_name, params)
        v = float(value)
        if not math.isfinite(v) or not self._in_range(v, params):
            raise self._step_fail(value, filter_name, params)
        return v

    def _step_fail(self, value: Any, filter_name: str, params: Mapping[str, Any]) -> InvalidParameterError:
        if self.stability:
            return InvalidParameterError(
                f"{filter_name}: {self.name}={_fmt(value)} is outside the stability bound "
                f"0 < {self.name} <= {self.high_value(params):g}"
            )
        return self._fail(value, filter_name, params)

    def _real(self, value: Any, filter_name: str, params: Mapping[str, Any]) -> float | torch.Tensor:
        if isinstance(value, torch.Tensor):
            if not self.tensor:
                raise InvalidParameterError(
                    f"{filter_name}: {self.name} must be a number, not a tensor (it is not learnable); "
                    f"must be {self.accepted(params)}"
                )
            if value.is_complex() or value.dtype == torch.bool:
                raise InvalidParameterError(f"{filter_name}: {self.name} must be a real-valued tensor, got {value.dtype}")
            v = value.detach()
            if v.numel() == 0 or not bool(torch.isfinite(v).all()):
                raise self._step_fail(value, filter_name, params)
            lo_ok = self.low is None or bool(((v > self.low) if self.low_open else (v >= self.low)).all())
            high = self.high_value(params)
            hi_ok = high is None or bool((v <= high * (1.0 + 1e-6 if self.stability else 1.0)).all())
            if not (lo_ok and hi_ok):
                raise self._step_fail(value, filter_name, params)
            return value
        return self._number(value, filter_name, params)

    def _spacing(self, value: Any, filter_name: str) -> tuple[float, float]:
        if isinstance(value, (Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            pair: Sequence[Any] = (value, value)
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
            pair = value
        else:
            raise self._fail(value, filter_name)
        out = []
        for v in pair:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (Real, np.integer, np.floating)):
                raise self._fail(value, filter_name)
            f = float(v)
            if not math.isfinite(f) or not self._in_range(f, {}):
                raise self._fail(value, filter_name)
            out.append(f)
        return out[0], out[1]


@dataclass(frozen=True)
class FilterSpec:
    """The parameter table and image requirements of one filter.

    Attributes:
        name: registry name (used in every error message).
        params: the parameters in signature order.
        differentiable: gradients reach the input (and every ``tensor=True`` parameter given as
            a tensor that requires grad). Asserted for every filter by the conformance test.
        min_size: smallest accepted image side, a number or a function of the canonical
            parameters (e.g. non-local means: patch and search radii).
        identity: function of the canonical parameters that is ``True`` where the filter returns
            its input unchanged (``iterations == 0``, a 1x1 window ...).
        example: typical valid parameters, small enough for tests (the conformance test runs
            every registered filter with them).
    """

    name: str
    params: tuple[Param, ...]
    differentiable: bool = True
    min_size: int | Callable[[Mapping[str, Any]], int] = 1
    identity: Callable[[Mapping[str, Any]], bool] | None = None
    example: Mapping[str, Any] = field(default_factory=dict)
    _index: dict[str, Param] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({p.name: p for p in self.params})

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def required(self) -> list[str]:
        return [p.name for p in self.params if p.required]

    def param(self, name: str) -> Param:
        return self._index[name]

    def canonicalise(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``values`` and return every parameter (defaults filled in) in canonical form.

        Unknown or missing names raise :class:`InvalidParameterError` too. Parameters whose upper
        bound depends on others are checked after those.
        """
        unknown = [k for k in values if k not in self._index]
        if unknown:
            raise InvalidParameterError(f"{self.name}.{unknown[0]}: unknown parameter; accepted: {', '.join(self.names())}")
        missing = [p.name for p in self.params if p.required and p.name not in values]
        if missing:
            raise InvalidParameterError(
                f"{self.name}: missing required parameter(s) {', '.join(missing)}; accepted: {', '.join(self.names())}"
            )
        out: dict[str, Any] = {}
        deferred = []
        for p in self.params:
            if callable(p.high):
                deferred.append(p)
                continue
            out[p.name] = p.canonical(values.get(p.name, p.default), self.name, out)
        for p in deferred:
            out[p.name] = p.canonical(values.get(p.name, p.default), self.name, out)
        return {p.name: out[p.name] for p in self.params}

    def min_image_size(self, params: Mapping[str, Any]) -> int:
        """Smallest accepted image side for canonical ``params``."""
        return int(self.min_size(params)) if callable(self.min_size) else int(self.min_size)

    def check_image_size(self, params: Mapping[str, Any], size: int | Sequence[int]) -> None:
        """Raise ``ValueError`` naming the filter when an image of ``size`` (side or (H, W)) is too small."""
        h, w = (size, size) if isinstance(size, Integral) else (int(size[0]), int(size[1]))
        need = self.min_image_size(params)
        if h < need or w < need:
            raise ValueError(
                f"{self.name}: image of size {h}x{w} is smaller than the stencil; minimum size is {need}x{need}"
            )

    def is_identity(self, params: Mapping[str, Any]) -> bool:
        return bool(self.identity(params)) if self.identity is not None else False

    def table(self) -> str:
        """Markdown rows ``| parameter | accepted | default | meaning |`` (documentation)."""
        rows = []
        for p in self.params:
            default = "required" if p.required else repr(p.default)
            rows.append(f"| `{p.name}` | {p.accepted()} | {default} | {p.doc} |")
        return "\n".join(rows)
