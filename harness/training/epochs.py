"""The steps of one epoch: train on shuffled batches, refresh BatchNorm statistics, predict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from harness.augment import augment_batch
from harness.training.data import batches
from harness.training.device import Precision
from harness.training.errors import NonFiniteLossError
from harness.training.timer import SpanTimer

Filter = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Streams:
    """The random generators of a run: batch order and augmentation (dropout uses torch's global one)."""

    order: torch.Generator
    augment: torch.Generator


@dataclass
class StepContext:
    """What every training step needs; built once per run."""

    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    device: torch.device
    timer: SpanTimer
    batch_size: int
    balance: str
    augment: bool
    grad_clip_norm: float | None
    on_the_fly: Filter | None


def train_epoch(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, streams: Streams, epoch: int) -> tuple[float, int]:
    """One pass over the training images; returns (mean training loss, images seen)."""
    ctx.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)
    n_seen = 0
    for step, idx in enumerate(batches(x.shape[0], ctx.batch_size, y, ctx.balance, streams.order)):
        with ctx.timer.span("data"):
            xb = _train_batch(ctx, x[idx], streams.augment)
            yb = y[idx].to(ctx.device, non_blocking=True)
        with ctx.timer.span("forward"), ctx.precision.autocast():
            loss = ctx.criterion(ctx.model(xb).float(), yb)
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(
                f"training loss became {float(loss.detach())} at epoch {epoch} step {step + 1} "
                f"(lr {ctx.optimizer.param_groups[0]['lr']:.3g}); lower training.lr or check the input data")
        with ctx.timer.span("backward"):
            ctx.optimizer.zero_grad(set_to_none=True)
            _backward(ctx, loss)
        with ctx.timer.span("optimizer"):
            _step(ctx)
        loss_sum += float(loss.detach()) * len(idx)
        n_seen += len(idx)
    return float(loss_sum) / max(1, n_seen), n_seen


def _train_batch(ctx: StepContext, xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if ctx.augment:
        xb = augment_batch(xb, g)
    if ctx.on_the_fly is not None:
        with torch.no_grad():
            xb = ctx.on_the_fly(xb)
    return xb.to(ctx.device, non_blocking=True).contiguous(memory_format=ctx.precision.memory_format)


def _backward(ctx: StepContext, loss: torch.Tensor) -> None:
    if ctx.precision.scaler is not None:
        ctx.precision.scaler.scale(loss).backward()
    else:
        loss.backward()


def _step(ctx: StepContext) -> None:
    scaler = ctx.precision.scaler
    if ctx.grad_clip_norm is not None:
        if scaler is not None:
            scaler.unscale_(ctx.optimizer)
        params = [p for group in ctx.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, ctx.grad_clip_norm)
    if scaler is not None:
        scaler.step(ctx.optimizer)
        scaler.update()
    else:
        ctx.optimizer.step()
    ctx.scheduler.step()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, precision: Precision, device: torch.device,
                          max_images: int, batch_size: int) -> None:
    """Recompute every BatchNorm's running statistics from ``x`` with the current weights.

    The running averages a short training run leaves behind lag the weights (momentum 0.1 over
    a few dozen steps), so evaluation-mode activations — and the validation loss — can be far
    off what training saw; "precise BN" (Wu & Johnson 2021, arXiv:2105.07576) re-estimates them
    as a plain average over un-augmented training batches. ``torch.optim.swa_utils.update_bn``
    does exactly that.
    """
    from torch.optim.swa_utils import update_bn

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    n = min(len(x), max_images)
    chunks = [x[i:i + batch_size].to(device).contiguous(memory_format=precision.memory_format)
              for i in range(0, n, batch_size)]
    chunks = [c for c in chunks if len(c) > 1]  # BatchNorm cannot use a single image in training mode
    if chunks:
        with precision.autocast():
            update_bn(chunks, model)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, precision: Precision, device: torch.device,
                   batch_size: int) -> torch.Tensor:
    """Logits of ``x`` (N, 1, H, W) in eval mode, big batches, float32 on CPU."""
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True).contiguous(memory_format=precision.memory_format)
        with precision.autocast():
            out.append(model(xb).float().cpu())
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def probabilities(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    p = torch.softmax(logits, dim=1).numpy()
    return p[:, 1].astype(np.float64) if num_classes == 2 else p.astype(np.float64)


def roc_auc(probs: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    if probs.ndim == 1:
        return float(roc_auc_score(y, probs))
    if len(np.unique(y)) < probs.shape[1]:
        return None
    return float(roc_auc_score(y, probs, multi_class="ovr"))


def validation_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: Precision,
                      device: torch.device, batch_size: int, num_classes: int) -> tuple[float | None, float | None]:
    """(cross-entropy, ROC-AUC) on the validation split; (None, None) without one."""
    if not len(y):
        return None, None
    logits = predict_logits(model, x, precision, device, batch_size)
    return float(F.cross_entropy(logits, y)), roc_auc(probabilities(logits, num_classes), y.numpy())


__all__ = ["StepContext", "Streams", "predict_logits", "probabilities", "recalibrate_batchnorm", "roc_auc",
           "train_epoch", "validation_scores"]
