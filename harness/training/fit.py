"""One run: train on a training fold, select an epoch on the inner validation split, predict
the test fold, and time every part.

The steps, each a function: convert and check the data (``RunTensors``), build the network and
the recipe (``harness.training.recipe``), train epoch by epoch (``harness.training.epochs``),
refresh BatchNorm statistics and score the validation split after each epoch, keep the best
epoch (``harness.training.selection``), predict the test fold, diagnose whether the run
learned at all. One ``SpanTimer`` sums the named spans.

Random streams: the weights are initialised from ``seed``; then the global generator (dropout)
is re-seeded, and the batch order and the augmentation draw from generators of their own, so
two arms that differ only in preprocessing or in the layers they add see identical batches,
augmentations and dropout masks.

Determinism: on CPU the same seed gives the same numbers; the thread count must match, since
it changes the order of float sums (``num_threads``). On CUDA, ``training.deterministic: true``
makes the run reproducible at some speed (harness.training.device.run_settings).

Threads: ``num_threads`` (default: torch's, one per core). With more busy threads than cores
(several runs or other jobs on the same cores) OpenMP's barriers make each step many times
slower; give each parallel worker ``cores / workers`` threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn

from harness.data.frameset import spread
from harness.models import create_model, learned_params
from harness.suite import ModelConfig, TrainingConfig
from harness.training import recipe
from harness.training.data import RunData, RunTensors, single_image_tail, steps_per_epoch
from harness.training.device import Precision, deterministic_error, resolve_device, run_settings
from harness.training.epochs import (
    StepContext,
    Streams,
    predict_logits,
    probabilities,
    recalibrate_batchnorm,
    train_epoch,
    validation_scores,
)
from harness.training.errors import TrainingError
from harness.training.selection import BestEpoch, EpochRecord, FitDiagnosis, diagnose, prevalence_loss
from harness.training.timer import SpanTimer

Filter = Callable[[torch.Tensor], torch.Tensor]

#: Seed offsets of the run's independent random streams (weights use the run seed itself).
_STREAM_OFFSETS = {"dropout": 1, "order": 2, "augment": 3}

#: ``data_seconds``: array conversion, augmentation, on-the-fly filtering, batch assembly;
#: ``train_seconds``: the training loops (sum of ``epoch_train_seconds``, no validation);
#: ``epoch_seconds``: per epoch, training + validation; ``forward/backward/optimizer_seconds``:
#: the three parts of the training steps; ``eval_seconds``: BatchNorm refresh, validation and test
#: prediction; ``inference_ms_per_image``: test prediction time / test images (batched);
#: ``inference_ms_single_image``: median latency of one image (batch 1); ``peak_rss_mb``: the
#: largest resident set size sampled after every epoch and at the end; ``cuda_max_allocated_mb``:
#: ``torch.cuda.max_memory_allocated`` (None on CPU); ``train_images_per_second``: images trained
#: / ``train_seconds``; ``single_image_batches_merged``: epochs whose last batch would have held one
#: image and was joined to the one before (BatchNorm cannot train on one image; 0 for most runs).
TIMING_KEYS = ("data_seconds", "train_seconds", "epoch_seconds", "epoch_train_seconds", "forward_seconds",
               "backward_seconds", "optimizer_seconds", "eval_seconds", "inference_ms_per_image",
               "inference_ms_single_image", "peak_rss_mb", "cuda_max_allocated_mb", "train_images_per_second",
               "single_image_batches_merged")


@dataclass
class FitResult:
    """Outcome of ``fit_evaluate``.

    ``test_probs``: probability of class 1 per test image (N,) ((N, K) when ``num_classes`` > 2).
    ``timings``: seconds / rates, keys listed in ``TIMING_KEYS``. ``history``: one record per epoch.
    ``learned_params``: the selected (best-epoch) model's diffusion parameters. ``diagnosis``:
    whether the run learned. ``weights``: what loading the weights did; ``epochs_run``.
    """

    test_probs: np.ndarray
    timings: dict[str, Any]
    history: list[EpochRecord]
    learned_params: dict[str, list[float]]
    best_epoch: int
    device: str
    diagnosis: FitDiagnosis
    state_dict: dict[str, torch.Tensor] | None = None
    weights: dict[str, Any] | None = None
    epochs_run: int = 0
    initial_params: dict[str, list[float]] = field(default_factory=dict)
    extra_probs: dict[str, np.ndarray] = field(default_factory=dict)  # ``extra_eval`` sets, as ``test_probs``


def as_training_config(cfg: TrainingConfig | Mapping[str, Any]) -> TrainingConfig:
    return cfg if isinstance(cfg, TrainingConfig) else TrainingConfig.model_validate(dict(cfg))


def fit_evaluate(model_cfg: ModelConfig | Mapping[str, Any], train_cfg: TrainingConfig | Mapping[str, Any],
                 data: RunData, seed: int, on_the_fly: Filter | None = None, want_state_dict: bool = False,
                 progress: Callable[[dict[str, Any]], None] | None = None,
                 extra_eval: Mapping[str, np.ndarray] | None = None) -> FitResult:
    """Train on ``data.train_*``, select on ``data.val_*``, predict ``data.test_x``.

    ``on_the_fly``: a filter applied to every batch after augmentation (and to the validation
    and test images, once) — e.g. a ``diffusion_filters.Pipeline``; it receives and returns
    (B, 1, H, W) float tensors in [0, 1]. ``progress`` is called after every epoch with that
    epoch's record (a dict) plus ``epochs`` (the planned number). ``extra_eval``: further image
    sets ``{name: (N, H, W) float32}`` (e.g. external validation data) predicted, like the test
    fold, by the selected model after training (``FitResult.extra_probs``); they never train or select.
    Raises ``TrainingError`` (``NonFiniteLossError`` for a NaN/Inf loss) with a one-line reason.
    """
    train_cfg = as_training_config(train_cfg)
    device = resolve_device(train_cfg.device)
    with run_settings(train_cfg.num_threads, device, train_cfg.deterministic):
        try:
            run = _Run(model_cfg, train_cfg, data, int(seed), device, on_the_fly)
            result = run.fit(want_state_dict, progress)
            if extra_eval:
                result.extra_probs = run.predict_extra(extra_eval)
            return result
        except RuntimeError as exc:
            if isinstance(exc, TrainingError):
                raise
            err = deterministic_error(exc)
            if err is None:
                raise
            raise err from exc


class _Run:
    """The state of one run, built step by step (data, network, recipe) and then trained."""

    def __init__(self, model_cfg: ModelConfig | Mapping[str, Any], cfg: TrainingConfig, data: RunData, seed: int,
                 device: torch.device, on_the_fly: Filter | None):
        self.cfg, self.device, self.seed = cfg, device, seed
        self.timer = SpanTimer(device)
        self.peak_rss = _rss_mb()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.eval_batch = max(256, 4 * cfg.batch_size)
        self.epoch_seconds: list[float] = []
        self.epoch_train_seconds: list[float] = []
        self.model = self._build_model(model_cfg)
        self.num_classes = int(self.model.num_classes)
        with self.timer.span("data"):
            self.t = self._tensors(data, on_the_fly)
            self.recalibration_x = self._recalibration_images(on_the_fly)
        self.precision = Precision.for_run(device, cfg.channels_last, cfg.amp)
        self.model = self.model.to(device).to(memory_format=self.precision.memory_format)
        self.weight = recipe.class_weights(self.t.train_y, self.num_classes, cfg.class_balance)
        self.chance = recipe.chance_loss(self.t.train_y, self.num_classes, self.weight, cfg.label_smoothing)
        self.val_chance = prevalence_loss(self.t.train_y, self.t.val_y, self.num_classes)
        optimizer = recipe.make_optimizer(self.model, cfg)
        self.ctx = StepContext(
            model=self.model, criterion=recipe.make_criterion(self.weight, cfg, device), optimizer=optimizer,
            scheduler=recipe.make_scheduler(optimizer, cfg, steps_per_epoch(self.t.train_x.shape[0], cfg.batch_size)),
            precision=self.precision, device=device, timer=self.timer, batch_size=cfg.batch_size,
            balance=cfg.class_balance, augment=cfg.augment, grad_clip_norm=cfg.grad_clip_norm, on_the_fly=on_the_fly)
        self.streams = self._streams()

    def _build_model(self, model_cfg: ModelConfig | Mapping[str, Any]) -> nn.Module:
        torch.manual_seed(self.seed)  # the weights' initialisation
        np.random.seed(self.seed % 2**32)
        model = create_model(model_cfg, in_chans=1)
        self.initial_params = learned_params(model)
        return model

    def _tensors(self, data: RunData, on_the_fly: Filter | None) -> RunTensors:
        t = RunTensors.from_data(data, self.num_classes)
        if on_the_fly is not None:
            # Evaluation images are filtered once, in chunks (a whole test fold at 224 px is large).
            with torch.no_grad():
                t.val_x, t.test_x = (torch.cat([on_the_fly(c) for c in x.split(self.eval_batch)]) if len(x) else x
                                     for x in (t.val_x, t.test_x))
        return t

    def _recalibration_images(self, on_the_fly: Filter | None) -> torch.Tensor:
        """The training images BatchNorm's statistics are re-estimated on, as the network sees them in
        training: filtered once here when the arm filters on the fly (un-augmented, as for every arm)."""
        n = self.cfg.bn_recalibration_images if self.cfg.bn_recalibration else 0
        if self.cfg.bn_recalibration_sample == "spread" and n:  # every patient, not the first few in the data's order
            x = self.t.train_x[torch.from_numpy(spread(len(self.t.train_x), n))]
        else:
            x = self.t.train_x[:n]
        if on_the_fly is None or not len(x):
            return x
        with torch.no_grad():
            return torch.cat([on_the_fly(c) for c in x.split(self.eval_batch)])

    def _streams(self) -> Streams:
        # Drawn after the network is built, so an arm whose layers take more random numbers to
        # initialise still gets the same dropout masks, batch order and augmentations.
        torch.manual_seed(self.seed + _STREAM_OFFSETS["dropout"])
        return Streams(order=torch.Generator().manual_seed(self.seed + _STREAM_OFFSETS["order"]),
                       augment=torch.Generator().manual_seed(self.seed + _STREAM_OFFSETS["augment"]))

    # -- training
    def fit(self, want_state_dict: bool, progress: Callable[[dict[str, Any]], None] | None) -> FitResult:
        best = BestEpoch()
        history: list[EpochRecord] = []
        for epoch in range(1, self.cfg.epochs + 1):
            record = self._epoch(epoch)
            history.append(record)
            best.update(record, self.model)
            if progress is not None:
                progress({**record.as_dict(), "epochs": self.cfg.epochs})
            if best.should_stop(self.cfg.early_stopping_patience):
                break
        assert best.state is not None
        self.model.load_state_dict(best.state)
        best.learned_params = learned_params(self.model, with_mix=True)  # the selected epoch's, + mixing
        return self._finish(best, history, want_state_dict)

    def _epoch(self, epoch: int) -> EpochRecord:
        start = self.timer.now()
        lr = self.ctx.optimizer.param_groups[0]["lr"]
        with self.timer.span("train"):
            loss, n_seen = train_epoch(self.ctx, self.t.train_x, self.t.train_y, self.streams, epoch)
        self.timer.add("images", n_seen)
        self.epoch_train_seconds.append(self.timer.now() - start)
        self.peak_rss = max(self.peak_rss, _rss_mb())
        with self.timer.span("eval"):
            self._refresh_batchnorm()
            val_loss, val_auc = validation_scores(self.model, self.t.val_x, self.t.val_y, self.precision,
                                                  self.device, self.eval_batch, self.num_classes)
        seconds = self.timer.now() - start
        self.epoch_seconds.append(seconds)
        return EpochRecord(epoch, loss, val_loss, val_auc, lr, seconds, learned_params(self.model))

    def _refresh_batchnorm(self) -> None:
        if self.cfg.bn_recalibration:
            recalibrate_batchnorm(self.model, self.recalibration_x, self.precision, self.device,
                                  self.cfg.bn_recalibration_images, self.eval_batch)

    def _finish(self, best: BestEpoch, history: list[EpochRecord], want_state_dict: bool) -> FitResult:
        with self.timer.span("eval"):
            start = self.timer.now()
            test_logits = predict_logits(self.model, self.t.test_x, self.precision, self.device, self.eval_batch)
            test_seconds = self.timer.now() - start
        n_test = self.t.test_x.shape[0]
        single = self._single_image_ms() if n_test else None
        self.peak_rss = max(self.peak_rss, _rss_mb())
        state = ({k: v.detach().cpu().contiguous() for k, v in best.state.items()}
                 if want_state_dict and best.state is not None else None)
        return FitResult(
            test_probs=probabilities(test_logits, self.num_classes) if n_test else np.empty(0),
            timings=self._timings(test_seconds, n_test, single), history=history,
            learned_params=best.learned_params, best_epoch=best.epoch, device=str(self.device),
            diagnosis=diagnose(history, best.epoch, self.chance, self.val_chance), state_dict=state,
            weights=getattr(self.model, "weights_report", None), epochs_run=len(history),
            initial_params=self.initial_params)

    def predict_extra(self, sets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Probabilities of the selected model for each further image set (filtered on the fly
        like the test fold when the arm filters on the fly)."""
        out = {}
        with torch.no_grad():
            for name, images in sets.items():
                x = torch.from_numpy(np.array(images, dtype=np.float32)).unsqueeze(1)  # a copy: cached frames are read-only
                if self.ctx.on_the_fly is not None and len(x):
                    x = torch.cat([self.ctx.on_the_fly(c) for c in x.split(self.eval_batch)])
                logits = predict_logits(self.model, x, self.precision, self.device, self.eval_batch)
                out[name] = probabilities(logits, self.num_classes) if len(x) else np.empty(0)
        return out

    def _single_image_ms(self, repeats: int = 5) -> float:
        """Median latency of one image through the network (batch 1), in milliseconds."""
        times = []
        xb = self.t.test_x[:1]
        for _ in range(repeats + 1):
            start = self.timer.now()
            predict_logits(self.model, xb, self.precision, self.device, 1)
            times.append(self.timer.now() - start)
        return 1000.0 * float(np.median(times[1:]))

    def _timings(self, test_seconds: float, n_test: int, single_ms: float | None) -> dict[str, Any]:
        t = self.timer
        train = t.total("train")
        return {
            "data_seconds": t.total("data"),
            "train_seconds": train,
            "epoch_seconds": list(self.epoch_seconds),
            "epoch_train_seconds": list(self.epoch_train_seconds),
            "forward_seconds": t.total("forward"),
            "backward_seconds": t.total("backward"),
            "optimizer_seconds": t.total("optimizer"),
            "eval_seconds": t.total("eval"),
            "inference_ms_per_image": 1000.0 * test_seconds / n_test if n_test else None,
            "inference_ms_single_image": single_ms,
            "peak_rss_mb": self.peak_rss,
            "cuda_max_allocated_mb": (torch.cuda.max_memory_allocated(self.device) / 2**20
                                      if self.device.type == "cuda" else None),
            "train_images_per_second": t.total("images") / train if train > 0 else None,
            "single_image_batches_merged": (len(self.epoch_train_seconds) if
                                            single_image_tail(self.t.train_x.shape[0], self.cfg.batch_size) else 0),
        }


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


__all__ = ["TIMING_KEYS", "FitResult", "as_training_config", "fit_evaluate"]
