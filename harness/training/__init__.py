"""One run of training and evaluation (``fit_evaluate``) and the parts of its recipe.

Modules: ``fit`` (the run, step by step), ``recipe`` (optimiser groups, schedule, loss, chance
loss), ``epochs`` (one epoch's training, BatchNorm refresh, prediction), ``selection`` (which
epoch is kept; did the run learn), ``data`` (arrays to tensors, batch order), ``device``
(device, precision, threads, determinism), ``timer`` (named wall-clock spans), ``errors``.
"""

from harness.training.data import RunData
from harness.training.device import resolve_device
from harness.training.epochs import predict_logits
from harness.training.errors import NonFiniteLossError, TrainingError
from harness.training.fit import TIMING_KEYS, FitResult, fit_evaluate
from harness.training.recipe import warmup_cosine
from harness.training.selection import EpochRecord, FitDiagnosis

__all__ = [
    "TIMING_KEYS",
    "EpochRecord",
    "FitDiagnosis",
    "FitResult",
    "NonFiniteLossError",
    "RunData",
    "TrainingError",
    "fit_evaluate",
    "predict_logits",
    "resolve_device",
    "warmup_cosine",
]
