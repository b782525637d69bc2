"""The errors a run can raise; the runner records their one-line message as the run's failure."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot be trained; the message says why (the runner records it as failed)."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or Inf."""


__all__ = ["NonFiniteLossError", "TrainingError"]
