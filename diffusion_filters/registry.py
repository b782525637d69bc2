"""Name -> filter-module registry: the "toolbox" entry point used by pipelines and suites.

Filters register themselves with :func:`register_filter` when their module is imported
(``diffusion_filters/__init__.py`` imports all built-in filter modules)::

    @register_filter("perona_malik")
    class PeronaMalik(Filter):
        spec = _SPEC            # the parameter table (diffusion_filters._spec)
        kernel = staticmethod(_kernel)
        function = staticmethod(perona_malik)

    create("perona_malik", iterations=10, kappa=0.1, step=0.2)   # -> PeronaMalik module

The accepted parameters of a filter are those of its spec (for a plain ``nn.Module`` without
one: the keyword parameters of its ``__init__``); :func:`create` reports unknown or missing ones
by name.

Installed packages add filters through the ``diffusion_filters.filters`` entry-point group
(:mod:`diffusion_filters.external`): their names appear in :func:`available` beside the built-in
ones (a built-in name stays built-in), and their code is imported only when one is used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from .external import CONVENTIONS, ExternalFilter, entry_point_class, entry_point_filters

__all__ = ["accepted_params", "available", "create", "get_filter_class", "load_entry_points", "register_filter"]

_REGISTRY: dict[str, type[nn.Module]] = {}
_FROM_ENTRY_POINTS: set[str] = set()  # the names registered by load_entry_points
_entry_points_loaded = False

M = TypeVar("M", bound=type[nn.Module])


def register_filter(name: str) -> Callable[[M], M]:
    """Class decorator registering an ``nn.Module`` filter under ``name``.

    Sets ``cls.filter_name = name``. Registering a different class under a taken name raises
    ``ValueError`` (re-registering the same class, e.g. on module reload, is allowed).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_filter: name {name!r} must be a valid identifier")
    if name in CONVENTIONS:
        raise ValueError(f"register_filter: name {name!r} is reserved (a step's callable:/module: key)")

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_filter({name!r}): {cls!r} is not an nn.Module subclass")
        old = _REGISTRY.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"register_filter: name {name!r} is already used by {old.__qualname__}")
        cls.filter_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        _FROM_ENTRY_POINTS.discard(name)
        return cls

    return decorator


def load_entry_points(refresh: bool = False) -> list[str]:
    """Register the filters of the ``diffusion_filters.filters`` entry points (once; ``refresh``: scan
    the installed distributions again, e.g. after installing one in a running process). Returns
    their names. Nothing is imported until a filter is used."""
    global _entry_points_loaded
    if _entry_points_loaded and not refresh:
        return sorted(_FROM_ENTRY_POINTS)
    for name in list(_FROM_ENTRY_POINTS):
        del _REGISTRY[name]
    _FROM_ENTRY_POINTS.clear()
    for name, ep in entry_point_filters().items():
        if name not in _REGISTRY:  # a built-in (or an earlier registration) keeps its name
            _REGISTRY[name] = entry_point_class(name, ep)
            _FROM_ENTRY_POINTS.add(name)
    _entry_points_loaded = True
    return sorted(_FROM_ENTRY_POINTS)


def available() -> list[str]:
    """Sorted names of the registered filters (entry-point filters included)."""
    load_entry_points()
    return sorted(_REGISTRY)


def get_filter_class(name: str) -> type[nn.Module]:
    """The module class registered under ``name`` (``ValueError`` listing the names otherwise)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    load_entry_points()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"{name}: unknown filter; available: {', '.join(available()) or '(none registered)'}"
        ) from None


def accepted_params(name: str) -> tuple[list[str], list[str]]:
    """``(all_params, required_params)`` of filter ``name``, from its spec (or ``__init__`` signature;
    an entry-point filter: the signature of the code it names)."""
    cls = get_filter_class(name)
    if issubclass(cls, ExternalFilter):
        return cls.accepted_params()  # type: ignore[attr-defined]
    spec = getattr(cls, "spec", None)
    if spec is not None:
        return spec.names(), spec.required()
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return [p.name for p in params], [p.name for p in params if p.default is p.empty]


def create(name: str, **params: Any) -> nn.Module:
    """Instantiate filter ``name`` with keyword ``params``.

    Raises:
        ValueError: unknown filter (lists the available ones), unknown parameter (names the
            filter, the bad key and the accepted keys), missing required parameter, or an invalid
            value (the filter's own validation message).

    Example:
        >>> m = create("median", size=3)
        >>> m.describe()
        'median (3×3)'
    """
    cls = get_filter_class(name)
    if issubclass(cls, ExternalFilter):  # an entry point: checked against its signature, same messages
        return cls(**params)
    accepted, required = accepted_params(name)
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise ValueError(
            f"{name}.{unknown[0]}: unknown parameter; accepted: {', '.join(accepted)}"
        )
    missing = [k for k in required if k not in params]
    if missing:
        raise ValueError(
            f"{name}: missing required parameter(s) {', '.join(missing)}; accepted: {', '.join(accepted)}"
        )
    return cls(**params)
