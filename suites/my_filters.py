"""A user's own filters, next to the suite that names them (suites/custom-filters-quick.yaml).

A suite step ``{module: "my_filters:UnsharpMask", params: {...}}`` loads this file from the suite's
folder (sys.path is not changed) and records its SHA-256 in every run's identity: editing this
file redoes the runs of the arms that use it. See docs/custom-filters.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class UnsharpMask(nn.Module):
    """Unsharp masking: ``x + amount * (x - G_sigma * x)``, clipped to [0, 1].

    Takes and returns the ``(B, 1, H, W)`` float32 batch in [0, 1] (the ``module:`` convention).
    """

    def __init__(self, amount: float = 0.5, sigma: float = 1.0):
        super().__init__()
        if not 0 < sigma <= 10:
            raise ValueError(f"sigma={sigma} is invalid; must be in (0, 10]")
        self.amount = amount
        radius = max(1, int(round(3 * sigma)))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        self.register_buffer("kernel", (k / k.sum()).view(1, 1, 1, -1))
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        blur = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.kernel)
        blur = F.conv2d(F.pad(blur, (0, 0, r, r), mode="replicate"), self.kernel.transpose(2, 3))
        return (x + self.amount * (x - blur)).clamp(0.0, 1.0)


def fast_nl_means(image: np.ndarray, h: float = 10.0, template: int = 7, search: int = 21) -> np.ndarray:
    """OpenCV's fast non-local means on a float image in [0, 1] (the ``callable:`` convention):
    the three-line wrapper for a function that wants uint8 and has no Python signature."""
    import cv2

    u8 = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return cv2.fastNlMeansDenoising(u8, h=h, templateWindowSize=template, searchWindowSize=search) / 255.0
