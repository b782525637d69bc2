"""diffusion_filters: batched, differentiable anisotropic-diffusion filters for PyTorch.

Every filter is a function (parameters after the image keyword-only) and a registered
``nn.Module`` (a :class:`Filter`) with the same parameters, both built on one parameter spec that
validates and canonicalises them (:mod:`diffusion_filters._spec`); inputs may be ``(H, W)``,
``(C, H, W)`` or ``(B, C, H, W)`` tensors or numpy arrays (dtype rules:
:mod:`diffusion_filters._image`). Filters: Perona-Malik, coherence- and edge-enhancing tensor
diffusion, SRAD, non-local means, and the Gaussian / median comparators. A pipeline step may also
name any per-image function or ``nn.Module`` class by import path, and installed packages may add
filters through the ``diffusion_filters.filters`` entry-point group
(:mod:`diffusion_filters.external`); every filter meets one runtime contract
(:func:`check_conformance`).

Example:
    >>> import torch, diffusion_filters as df
    >>> "perona_malik" in df.available()
    True
    >>> pipe = df.Pipeline.from_config([{"perona_malik": {"iterations": 10, "kappa": 0.1, "step": 0.2}},
    ...                                 {"median": {"size": 3}}])
    >>> pipe.describe()
    'Perona–Malik (exponential, 10 it., κ=0.1, Δt=0.2) → median (3×3)'
    >>> pipe(torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 1, 32, 32])
"""

from __future__ import annotations

from . import conformance, external, layers
from ._compile import set_compile
from ._filter import Filter, NonFiniteOutputError
from ._image import Restore, as_bchw, as_param
from ._spec import FilterSpec, InvalidParameterError, Param
from .conformance import ConformanceError, check_conformance
from .external import ExternalFilter, ExternalFilterError, is_external_step
from .nonlocal_means import NonlocalMeans, nonlocal_means
from .perona_malik import PeronaMalik, perona_malik, perona_malik_mixture
from .pipeline import Pipeline, check_image_size
from .registry import available, create, get_filter_class, load_entry_points, register_filter
from .smoothing import Gaussian, Median, gaussian, median
from .srad import SRAD, srad
from .tensor_diffusion import CoherenceEnhancing, EdgeEnhancing, coherence_enhancing, edge_enhancing

__all__ = [
    "SRAD",
    "CoherenceEnhancing",
    "ConformanceError",
    "EdgeEnhancing",
    "ExternalFilter",
    "ExternalFilterError",
    "Filter",
    "FilterSpec",
    "Gaussian",
    "InvalidParameterError",
    "Median",
    "NonFiniteOutputError",
    "NonlocalMeans",
    "Param",
    "PeronaMalik",
    "Pipeline",
    "Restore",
    "as_bchw",
    "as_param",
    "available",
    "check_conformance",
    "check_image_size",
    "coherence_enhancing",
    "conformance",
    "create",
    "edge_enhancing",
    "external",
    "gaussian",
    "get_filter_class",
    "is_external_step",
    "layers",
    "load_entry_points",
    "median",
    "nonlocal_means",
    "perona_malik",
    "perona_malik_mixture",
    "register_filter",
    "set_compile",
    "srad",
]
