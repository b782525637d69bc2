"""Ultrasound-suited, seeded data augmentation on tensor batches.

One affine resampling per batch (``affine_grid`` + ``grid_sample``) applies, per image:

* a small random resized crop: area fraction ``s ~ U(scale)``, aspect ``r ~ U(ratio)``,
  crop half-extents ``(sqrt(s r), sqrt(s / r))`` of the image, centre anywhere inside it;
* a small rotation ``theta ~ U(-max_rotation, +max_rotation)`` degrees;
* a horizontal flip with probability ``hflip`` (left/right of a lung probe is arbitrary);

then a photometric jitter ``x' = clip(gain * (mean + contrast * (x - mean)), 0, 1)`` with
``gain ~ U(gain)``, ``contrast ~ U(contrast)``, ``mean`` the image's mean (ultrasound gain
and dynamic-range settings vary between machines and operators).

No vertical flip: depth (the probe at the top, the pleura and B-lines below) is not symmetric.
Regions brought in from outside the image are black, like the outside of an ultrasound fan.
All random numbers come from the ``torch.Generator`` passed in, so a seed fixes the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (see the module docstring)."""

    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    max_rotation: float = 10.0
    hflip: float = 0.5
    gain: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (0.85, 1.15)


def _uniform(n: int, bounds: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float32)


def random_affine(n: int, g: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input normalised coordinates (``affine_grid`` form)."""
    s = _uniform(n, cfg.scale, g)
    r = torch.exp(_uniform(n, (math.log(cfg.ratio[0]), math.log(cfg.ratio[1])), g))
    sx = torch.sqrt(s * r).clamp(max=1.0)
    sy = torch.sqrt(s / r).clamp(max=1.0)
    tx = (1.0 - sx) * (2.0 * torch.rand(n, generator=g) - 1.0)
    ty = (1.0 - sy) * (2.0 * torch.rand(n, generator=g) - 1.0)
    angle = torch.deg2rad(_uniform(n, (-cfg.max_rotation, cfg.max_rotation), g))
    flip = torch.where(torch.rand(n, generator=g) < cfg.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.empty(n, 2, 3)
    # source = t + R(angle) @ diag(sx * flip, sy) @ output
    theta[:, 0, 0] = cos * sx * flip
    theta[:, 0, 1] = -sin * sy
    theta[:, 0, 2] = tx
    theta[:, 1, 0] = sin * sx * flip
    theta[:, 1, 1] = cos * sy
    theta[:, 1, 2] = ty
    return theta


def augment_batch(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Augment a batch ``x`` (B, C, H, W) of intensities in [0, 1]; returns a new tensor.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> augment_batch(torch.rand(4, 1, 32, 32), g).shape
        torch.Size([4, 1, 32, 32])
    """
    if x.ndim != 4:
        raise ValueError(f"augment_batch: expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    n = x.shape[0]
    theta = random_affine(n, g, cfg).to(device=x.device, dtype=x.dtype)
    gain = _uniform(n, cfg.gain, g).to(x.device, x.dtype).view(n, 1, 1, 1)
    contrast = _uniform(n, cfg.contrast, g).to(x.device, x.dtype).view(n, 1, 1, 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (mean + contrast * (out - mean)) * gain
    return out.clamp_(0.0, 1.0)


__all__ = ["AugmentConfig", "augment_batch", "random_affine"]
