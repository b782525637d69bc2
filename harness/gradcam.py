"""Grad-CAM maps of a trained network (used by :mod:`harness.explain`).

Grad-CAM (Selvaraju et al., ICCV 2017) weights the last convolutional feature maps by the
spatially averaged gradient of the class score and keeps the positive part; the
``pytorch_grad_cam`` package (``grad-cam`` on PyPI) does the computation.  The layer explained
is the deepest one whose feature map keeps a usable resolution (:func:`target_layer`).

Example::

    cams = compute_cams(model, torch.rand(2, 1, 64, 64))   # two (64, 64) float32 maps in [0, 1]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

B_LINES_CLASS = 1  # the positive class: B-lines present


MIN_SIDE = 7  # EfficientNet-B0's conv_head is 7x7 at 224 px: the usual Grad-CAM resolution


def candidate_layers(model: nn.Module) -> list[nn.Module]:
    """Layers Grad-CAM may explain, deepest first: timm's ``conv_head``, then each stage of
    ``model.blocks``; for other networks every ``Conv2d``."""
    head = getattr(model, "conv_head", None)
    blocks = getattr(model, "blocks", None)
    out: list[nn.Module] = [head] if isinstance(head, nn.Module) else []
    if isinstance(blocks, nn.Sequential):
        out += list(blocks)[::-1]
    if not out:
        out = [m for m in model.modules() if isinstance(m, nn.Conv2d)][::-1]
    if not out:
        raise ValueError("model has no Conv2d layer for Grad-CAM")
    return out


def target_layer(model: nn.Module, inputs: torch.Tensor | None = None, min_side: int = MIN_SIDE) -> nn.Module:
    """The deepest candidate layer whose feature map is at least ``min_side`` pixels on each side
    for these ``inputs`` (the shallowest one if none is), so small frames still get a usable map:
    at 32 px EfficientNet's ``conv_head`` is 1 x 1 and its Grad-CAM would be a constant."""
    layers = candidate_layers(model)
    if inputs is None or len(layers) == 1:
        return layers[0]
    sides: dict[int, int] = {}
    hooks = [
        layer.register_forward_hook(lambda mod, _i, out: sides.__setitem__(id(mod), min(out.shape[-2:])))
        for layer in layers
    ]
    try:
        with torch.no_grad():
            model.eval()(inputs[:1])
    finally:
        for h in hooks:
            h.remove()
    for layer in layers:
        if sides.get(id(layer), 0) >= min_side:
            return layer
    return max(layers, key=lambda layer: sides.get(id(layer), 0))


def compute_cams(model: nn.Module, inputs: torch.Tensor, target_class: int = B_LINES_CLASS) -> list[np.ndarray]:
    """Grad-CAM map of ``target_class`` for each input, each (H, W) float32 in [0, 1].

    ``inputs`` is (N, C, H, W) exactly as the network saw its test images.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    with GradCAM(model=model, target_layers=[target_layer(model, inputs)]) as cam:
        maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(target_class)] * inputs.shape[0])
    return [np.clip(np.asarray(m, dtype=np.float32), 0.0, 1.0) for m in maps]
