"""Which epoch's model is kept, and whether the run trained at all.

Selection: the epoch with the best validation ROC-AUC (ties: lower validation loss), or the
lowest validation loss when the validation split lacks a class, or the last epoch without a
validation split; ``early_stopping_patience`` epochs without improvement stop the run.

Diagnosis: a run "did not fit" when its training loss at the selected epoch is not clearly
below the loss of the best constant prediction (``chance_loss``: what learning nothing from
the images reaches), and its validation loss "diverged" when, at the selected epoch, it is more
than ``DIVERGED_FACTOR`` times the validation loss of predicting the training prevalence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

#: The training loss at the selected epoch must be below this fraction of the chance loss to
#: count as fitted (measured with augmentation, dropout and label smoothing on, so a network that
#: fits sits well below it; one that learned nothing hovers at or above 1).
FIT_FRACTION = 0.97
#: A validation loss this many times the prevalence-only loss counts as diverged.
DIVERGED_FACTOR = 3.0
#: The number of final epochs whose validation ROC-AUC spread is recorded as the curve's noise.
TAIL_EPOCHS = 3


@dataclass
class EpochRecord:
    """One epoch of training: losses, validation ROC-AUC, learning rate, time, diffusion parameters."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_roc_auc: float | None
    lr: float
    seconds: float = 0.0
    learned_params: dict[str, list[float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class BestEpoch:
    """Tracks the best epoch so far and keeps a copy of its weights."""

    def __init__(self) -> None:
        self.key: tuple[float, float] | None = None
        self.epoch = 0
        self.state: dict[str, torch.Tensor] | None = None
        self.learned_params: dict[str, list[float]] = {}
        self.stale = 0

    @staticmethod
    def _key(record: EpochRecord) -> tuple[float, float]:
        if record.val_loss is None:
            return (float(record.epoch), 0.0)  # no validation data: keep the last epoch
        if record.val_roc_auc is None:
            return (0.0, -record.val_loss)
        return (record.val_roc_auc, -record.val_loss)

    def update(self, record: EpochRecord, model: torch.nn.Module) -> None:
        key = self._key(record)
        if self.key is None or key > self.key:
            self.key, self.epoch, self.stale = key, record.epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.learned_params = record.learned_params
        else:
            self.stale += 1

    def should_stop(self, patience: int | None) -> bool:
        return patience is not None and self.stale >= patience


@dataclass(frozen=True)
class FitDiagnosis:
    """Did the run learn? ``status`` is ``ok``, ``did_not_fit`` or ``diverged``; ``reason`` says why."""

    status: str
    reason: str
    chance_loss: float
    val_chance_loss: float | None
    selected_train_loss: float
    selected_val_loss: float | None
    val_auc_tail_spread: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prevalence_loss(train_y: torch.Tensor, val_y: torch.Tensor, num_classes: int) -> float | None:
    """Unweighted validation cross-entropy of predicting the training class frequencies."""
    if not len(val_y):
        return None
    freq = torch.bincount(train_y, minlength=num_classes).double()
    freq = (freq / freq.sum()).clamp(min=1e-6)
    return float(-freq.log()[val_y].mean())


def diagnose(history: list[EpochRecord], best_epoch: int, chance: float, val_chance: float | None) -> FitDiagnosis:
    selected = history[best_epoch - 1]
    aucs = [r.val_roc_auc for r in history[-TAIL_EPOCHS:] if r.val_roc_auc is not None]
    spread = (max(aucs) - min(aucs)) if len(aucs) >= 2 else None
    status, reason = "ok", f"training loss {selected.train_loss:.3f} < {FIT_FRACTION:g} × chance {chance:.3f}"
    if not selected.train_loss < FIT_FRACTION * chance:
        status = "did_not_fit"
        reason = (f"training loss at the selected epoch {best_epoch} is {selected.train_loss:.3f}, not below "
                  f"{FIT_FRACTION:g} × the chance loss {chance:.3f}")
    elif (selected.val_loss is not None and val_chance is not None
          and not (math.isfinite(selected.val_loss) and selected.val_loss <= DIVERGED_FACTOR * val_chance)):
        status = "diverged"
        reason = (f"validation loss at the selected epoch {best_epoch} is {selected.val_loss:.3g}, over "
                  f"{DIVERGED_FACTOR:g} × the prevalence-only loss {val_chance:.3f}")
    return FitDiagnosis(status, reason, chance, val_chance, selected.train_loss, selected.val_loss, spread)


__all__ = ["DIVERGED_FACTOR", "FIT_FRACTION", "BestEpoch", "EpochRecord", "FitDiagnosis", "diagnose",
           "prevalence_loss"]
