"""Chains of registered filters built from the list form used by suites.

A pipeline config is a list of single-key mappings ``{filter_name: {param: value, ...}}``, or of
steps naming outside code by import path (``{"callable": ..., "params": ...}`` for a per-image
array function, ``{"module": ..., "params": ...}`` for an ``nn.Module`` class; conventions, import
rules and code identity: :mod:`diffusion_filters.external`)::

    Pipeline.from_config([
        {"perona_malik": {"iterations": 10, "kappa": 0.1, "step": 0.2}},
        {"median": {"size": 3}},
        {"callable": "skimage.restoration:denoise_tv_chambolle", "params": {"weight": 0.1}},
    ])

``config()`` returns the canonical form (every parameter, defaults included, in signature
order, numbers canonicalised by each filter's spec) so that two spellings of the same pipeline
hash identically; an outside step's canonical form also holds its code's identity (``code``), so a
changed function changes the hash; ``describe()`` gives the one-line human description used in reports;
:func:`check_image_size` tells, before any image is seen, whether images of a given size are
large enough for every filter of a pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._image import as_bchw
from .external import ExternalFilter, ExternalFilterError, build_step, is_external_step
from .registry import accepted_params, create

__all__ = ["Pipeline", "check_image_size"]


def _plain(value: Any) -> Any:
    """JSON-friendly canonical value (tuples -> lists, 0-d tensors/numpy scalars -> floats)."""
    if isinstance(value, torch.Tensor):
        v = value.detach().cpu()
        return v.item() if v.numel() == 1 else v.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class Pipeline(nn.Module):
    """Apply filter modules in order; input/output conventions as for a single filter.

    Example:
        >>> pipe = Pipeline.from_config([{"gaussian": {"sigma": 1.0}}, {"median": {"size": 3}}])
        >>> pipe.describe()
        'Gaussian (σ=1) → median (3×3)'
        >>> pipe.config()
        [{'gaussian': {'sigma': 1.0}}, {'median': {'size': 3}}]
    """

    def __init__(self, filters: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        for i, f in enumerate(filters):
            if not hasattr(f, "filter_name"):
                raise ValueError(f"Pipeline[{i}]: {type(f).__name__} is not a registered filter module")
        self.filters = nn.ModuleList(filters)

    @classmethod
    def from_config(cls, config: Sequence[Mapping[str, Any]] | None, where: str = "preprocess",
                    base_dir: str | Path | None = None) -> Pipeline:
        """Build from ``[{name: {params}}, ...]``; ``None`` or ``[]`` is the identity pipeline.

        ``base_dir``: the folder where a ``callable:`` / ``module:`` step's module file may lie (a
        suite's folder; :func:`diffusion_filters.external.resolve`).

        Errors are ``ValueError`` prefixed with ``where[index]``, e.g.
        ``preprocess[1].median.sizee: unknown parameter; accepted: size`` or
        ``preprocess[0].params.weightt: unknown parameter of skimage.restoration:denoise_tv_chambolle; ...``.
        """
        if config is None:
            return cls([])
        if isinstance(config, (str, bytes, Mapping)) or not isinstance(config, Sequence):
            raise ValueError(
                f"{where}: expected a list of single-key mappings {{filter: {{params}}}}, got {type(config).__name__}"
            )
        filters = []
        for i, item in enumerate(config):
            if is_external_step(item):
                try:
                    filters.append(build_step(item, base_dir=base_dir))
                except ExternalFilterError as err:
                    raise ValueError(f"{where}[{i}].{err}" if err.key else f"{where}[{i}]: {err}") from None
                continue
            if not isinstance(item, Mapping) or len(item) != 1:
                raise ValueError(
                    f"{where}[{i}]: expected a single-key mapping {{filter: {{params}}}}, got {item!r}"
                )
            (name, params), = item.items()
            if params is None:
                params = {}
            if not isinstance(params, Mapping):
                raise ValueError(f"{where}[{i}].{name}: parameters must be a mapping, got {params!r}")
            bad = [k for k in params if not isinstance(k, str)]
            if bad:
                raise ValueError(f"{where}[{i}].{name}: parameter names must be strings, got {bad[0]!r}")
            try:
                filters.append(create(name, **params))
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}[{i}].{err}") from None
        return cls(filters)

    def forward(self, x: Any) -> Any:
        t, restore = as_bchw(x, "pipeline")
        for f in self.filters:
            t = f(t)
        return restore(t)

    def config(self) -> list[dict[str, Any]]:
        """Canonical config: every parameter of every filter, in signature order (an outside step:
        :meth:`diffusion_filters.external.ExternalFilter.config`)."""
        out = []
        for f in self.filters:
            if isinstance(f, ExternalFilter):
                out.append(f.config())
                continue
            name = f.filter_name  # type: ignore[attr-defined]
            names, _ = accepted_params(name)
            out.append({name: {p: _plain(getattr(f, p)) for p in names}})
        return out

    def min_image_size(self) -> int:
        """Smallest image side every filter of the pipeline accepts (1 when empty)."""
        return max([1] + [f.min_image_size() for f in self.filters if hasattr(f, "min_image_size")])

    def check_image_size(self, size: int | Sequence[int], where: str = "preprocess") -> None:
        """Raise ``ValueError`` (``where[i].filter: image of size ...``) when images of ``size``
        (a side or ``(H, W)``) are too small for a filter of the pipeline."""
        h, w = (size, size) if isinstance(size, Integral) else (int(size[0]), int(size[1]))
        for i, f in enumerate(self.filters):
            spec = getattr(f, "spec", None)
            if spec is None:
                continue
            try:
                spec.check_image_size(f.get_params(), (h, w))
            except ValueError as err:
                raise ValueError(f"{where}[{i}].{err}") from None

    def describe(self) -> str:
        """One line: the filters' descriptions joined by arrows (``"identity"`` when empty)."""
        if not len(self.filters):
            return "identity (no preprocessing)"
        return " → ".join(f.describe() for f in self.filters)  # type: ignore[operator]

    def __len__(self) -> int:
        return len(self.filters)

    def extra_repr(self) -> str:
        return self.describe()


def check_image_size(
    config: Sequence[Mapping[str, Any]] | Pipeline | None, size: int | Sequence[int], where: str = "preprocess",
    base_dir: str | Path | None = None,
) -> None:
    """Check, before any image is seen, that images of ``size`` suit every filter of ``config``.

    ``config`` is a pipeline config (the list form of :meth:`Pipeline.from_config`) or a
    :class:`Pipeline`; ``size`` is the image side or ``(H, W)``; ``base_dir`` as in
    :meth:`Pipeline.from_config`. Raises ``ValueError`` naming the
    step, the filter and the minimum size, e.g. ``preprocess[0].nonlocal_means: image of size
    8x8 is smaller than the stencil; minimum size is 9x9`` (invalid configs raise as in
    :meth:`Pipeline.from_config`).

    Example:
        >>> check_image_size([{"nonlocal_means": {"patch_size": 7, "search_size": 11, "h": 0.1}}], 64)
        >>> Pipeline.from_config([{"median": {"size": 3}}]).min_image_size()
        1
    """
    pipe = config if isinstance(config, Pipeline) else Pipeline.from_config(config, where=where, base_dir=base_dir)
    pipe.check_image_size(size, where=where)
