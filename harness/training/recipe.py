"""The recipe's parts: optimiser groups, learning-rate schedule, loss, and the loss at chance.

* AdamW; biases, normalisation scales and the diffusion parameters get no weight decay (decay
  toward 0 means nothing for them); the diffusion parameters form a group of their own whose
  learning rate is ``training.lr × training.diffusion_lr_multiplier``;
* a linear warm-up over ``warmup_epochs``, then a cosine decay to 0, updated every step;
* cross-entropy with ``label_smoothing``; class balance by loss weights ``N / (K n_c)``
  (``class_balance: loss``), by sampling (``sampler``) or neither (``none``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harness.models import diffusion_modules
from harness.suite import TrainingConfig


def param_groups(model: nn.Module, cfg: TrainingConfig) -> list[dict[str, Any]]:
    """AdamW groups: decayed weights, undecayed biases/norms, and the diffusion parameters."""
    diffusion_ids = {id(p) for m in diffusion_modules(model).values() for p in m.parameters()}
    decay, no_decay, diffusion = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in diffusion_ids:
            diffusion.append(p)
        elif p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "name": "weights"},
              {"params": no_decay, "weight_decay": 0.0, "name": "biases_and_norms"}]
    if diffusion:
        groups.append({"params": diffusion, "weight_decay": 0.0, "name": "diffusion",
                       "lr": cfg.lr * cfg.diffusion_lr_multiplier})
    return groups


def make_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    total = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_epochs * steps_per_epoch, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))


def class_weights(train_y: torch.Tensor, num_classes: int, balance: str) -> torch.Tensor | None:
    """``N / (K n_c)`` per class for ``class_balance: loss``; None otherwise."""
    if balance != "loss":
        return None
    counts = torch.bincount(train_y, minlength=num_classes).float()
    return len(train_y) / (num_classes * counts.clamp(min=1))


def chance_loss(train_y: torch.Tensor, num_classes: int, weight: torch.Tensor | None, smoothing: float) -> float:
    """The training loss of the best constant prediction: what a network that learned nothing
    from the images reaches (ln 2 for balanced class weights without smoothing, the class
    entropy without weights; smoothing, which torch weights by class, raises it a little).

    ``torch.nn.CrossEntropyLoss`` with class weights ``w``, smoothing ``ε`` and mean reduction
    is, for constant log-probabilities ``l``, ``Σ_c a_c (-l_c)`` with
    ``a_c = w_c ((1-ε) n_c + ε N / K) / Σ_j w_j n_j``; its minimum over the simplex is at
    ``q = a / Σ a``, with value ``-Σ_c a_c log(a_c / Σ a)``.
    """
    counts = torch.bincount(train_y, minlength=num_classes).double()
    w = torch.ones(num_classes, dtype=torch.float64) if weight is None else weight.double().cpu()
    a = w * ((1.0 - smoothing) * counts + smoothing * counts.sum() / num_classes) / (w * counts).sum()
    a = a[a > 0]
    return float(-(a * (a / a.sum()).log()).sum())


def make_criterion(weight: torch.Tensor | None, cfg: TrainingConfig, device: torch.device) -> nn.Module:
    return nn.CrossEntropyLoss(weight=None if weight is None else weight.to(device),
                               label_smoothing=cfg.label_smoothing)


__all__ = ["chance_loss", "class_weights", "make_criterion", "make_optimizer", "make_scheduler", "param_groups",
           "warmup_cosine"]
