"""The arrays of one run, their conversion to tensors, and the order of the training batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.training.errors import TrainingError


@dataclass
class RunData:
    """Arrays of one run: images float32 (N, H, W) in [0, 1], labels int64 (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass
class RunTensors:
    """``RunData`` as checked tensors: images (N, 1, H, W) float32, labels (N,) int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor

    @classmethod
    def from_data(cls, data: RunData, num_classes: int) -> RunTensors:
        t = cls(_images(data.train_x, "train_x"), _labels(data.train_y, "train_y", num_classes),
                _images(data.val_x, "val_x"), _labels(data.val_y, "val_y", num_classes),
                _images(data.test_x, "test_x"))
        n_train = t.train_x.shape[0]
        if n_train < 2:
            raise TrainingError(f"RunData.train_x: at least 2 training images are needed, got {n_train}")
        if len(t.train_y) != n_train or len(t.val_y) != t.val_x.shape[0] or len(data.test_y) != t.test_x.shape[0]:
            raise TrainingError("RunData: images and labels differ in length "
                                f"(train {n_train}/{len(t.train_y)}, val {t.val_x.shape[0]}/{len(t.val_y)}, "
                                f"test {t.test_x.shape[0]}/{len(data.test_y)})")
        return t


def _images(x: np.ndarray, name: str) -> torch.Tensor:
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise TrainingError(f"RunData.{name}: expected images (N, H, W), got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).unsqueeze(1)


def _labels(y: np.ndarray, name: str, num_classes: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise TrainingError(f"RunData.{name}: labels must be in 0..{num_classes - 1}, got "
                            f"{sorted(set(t.tolist()))[:10]}")
    return t


def single_image_tail(n: int, batch_size: int) -> bool:
    """Whether an epoch of ``n`` images in batches of ``batch_size`` would end in a batch of one image."""
    return n > batch_size and n % batch_size == 1


def batches(n: int, batch_size: int, labels: torch.Tensor, balance: str, g: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch: a seeded permutation, or class-balanced sampling with replacement."""
    if balance == "sampler":
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1).clamp(min=1).float()
        weights = (1.0 / counts)[labels]
        order = torch.multinomial(weights, n, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    out = list(order.split(batch_size))
    # BatchNorm in training mode cannot use a batch of one image (one value per channel at the last
    # stage): a trailing single image joins the previous batch instead of being dropped, so every
    # image trains and the random streams draw exactly what they draw without it (the run's timings
    # count these merges: ``single_image_batches_merged``).
    if single_image_tail(n, batch_size):
        last = out.pop()
        out[-1] = torch.cat([out[-1], last])
    return out


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch (a trailing single image joins the previous batch)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)


__all__ = ["RunData", "RunTensors", "batches", "single_image_tail", "steps_per_epoch"]
