"""One run: fine-tune the network on a training fold, select on the inner validation split,
predict the test fold, and time every part.

Recipe (``TrainingConfig`` in harness.suite; docs/architecture.md):

* AdamW (no weight decay on biases, normalisation and diffusion parameters), learning rate
  ``lr`` with a linear warm-up over ``warmup_epochs`` then a cosine decay, updated every step;
* cross-entropy with ``label_smoothing``; class balance by loss weights ``N / (K n_c)``
  (``class_balance: loss``) or by sampling each image with probability proportional to
  ``1 / n_c`` (``sampler``) or neither (``none``);
* tensor augmentation from harness.augment (``augment: true``), then the arm's on-the-fly
  filter if any;
* after every epoch the validation split is scored; the model kept is the epoch with the best
  validation ROC-AUC (ties: lower validation loss), or the lowest validation loss when the
  validation split lacks a class; ``early_stopping_patience`` epochs without improvement stop;
* CPU: channels_last memory format (``channels_last: true``), deterministic algorithms;
  CUDA: automatic mixed precision (bf16 where supported, else fp16 with loss scaling).

Determinism: on CPU the same seed gives the same numbers (``torch.manual_seed``, seeded
``torch.Generator`` for shuffling, sampling and augmentation,
``torch.use_deterministic_algorithms(True, warn_only=True)`` during the run). Numbers can
differ between machines (CPU instruction sets, thread counts change float summation order) and
between runs where the learnable Perona-Malik layers take their ``torch.compile`` path or not
(large CPU calls, see diffusion_filters.layers.COMPILE_MIN_WORK). On CUDA, cuDNN autotuning
is on and some kernels (e.g. the backward of ``grid_sample`` and of adaptive pooling) have no
deterministic implementation; results there can differ in the last digits between runs.

Threads: ``num_threads`` (default: torch's, one per core). With more busy threads than cores
(several runs or other jobs on the same cores) OpenMP's barriers make each step many times
slower; give each parallel worker ``cores / workers`` threads.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch
from torch import nn
from torch.nn import functional as F

from harness.augment import augment_batch
from harness.models import _get, create_model, diffusion_modules, learned_params


class TrainingError(RuntimeError):
    """A run that cannot be trained; the message says why (the runner records it as failed)."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or Inf."""


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
class FitResult:
    """Outcome of ``fit_evaluate``.

    ``test_probs``: probability of class 1 per test image (N,) ((N, K) when ``num_classes`` > 2).
    ``timings``: seconds / rates, keys listed in ``TIMING_KEYS``.
    ``history``: one dict per epoch (epoch, train_loss, val_loss, val_roc_auc, lr, seconds,
    learned_params). ``learned_params``: the selected (best-epoch) model's diffusion parameters.
    ``extra``: the weights-loading report (source, adapted/new/missing/unexpected keys), epochs run.
    """

    test_probs: np.ndarray
    timings: dict[str, Any]
    history: list[dict[str, Any]]
    learned_params: dict[str, list[float]]
    best_epoch: int
    device: str
    state_dict: dict[str, torch.Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: ``data_seconds``: array conversion, augmentation, on-the-fly filtering, batch assembly;
#: ``train_seconds``: the training loops (sum of ``epoch_train_seconds``, no validation);
#: ``epoch_seconds``: per epoch, training + validation; ``forward/backward/optimizer_seconds``:
#: the three parts of the training steps; ``eval_seconds``: validation + test prediction;
#: ``inference_ms_per_image``: test prediction time / test images (batched);
#: ``inference_ms_single_image``: median latency of one image (batch 1); ``peak_rss_mb``: the
#: largest resident set size sampled after every epoch and at the end; ``cuda_max_allocated_mb``:
#: ``torch.cuda.max_memory_allocated`` (None on CPU); ``train_images_per_second``: images trained
#: / ``train_seconds``.
TIMING_KEYS = ("data_seconds", "train_seconds", "epoch_seconds", "epoch_train_seconds", "forward_seconds",
               "backward_seconds", "optimizer_seconds", "eval_seconds", "inference_ms_per_image",
               "inference_ms_single_image", "peak_rss_mb", "cuda_max_allocated_mb", "train_images_per_second")


# ----------------------------------------------------------------------------- helpers
def resolve_device(requested: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError("training.device: cuda was requested but no CUDA device is available "
                                "(accepted: auto, cpu, or cuda on a machine with a GPU)")
        return torch.device("cuda")
    if requested == "cpu":
        return torch.device("cpu")
    raise TrainingError(f"training.device: '{requested}' is not supported (accepted: auto, cpu, cuda)")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    diffusion = {id(p) for m in diffusion_modules(model).values() for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        # Decay toward 0 is meaningless for biases, norm scales and raw diffusion parameters.
        (no_decay if p.ndim <= 1 or id(p) in diffusion else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _as_tensor(x: np.ndarray, name: str) -> torch.Tensor:
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


def _roc_auc(probs: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    if probs.ndim == 1:
        return float(roc_auc_score(y, probs))
    present = np.unique(y)
    if len(present) < probs.shape[1]:
        return None
    return float(roc_auc_score(y, probs, multi_class="ovr"))


class _Clock:
    """Wall-clock sections; on CUDA synchronises so kernel time lands in the right section."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


# ----------------------------------------------------------------------------- the run
@dataclass
class _Setup:
    model: nn.Module
    device: torch.device
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None
    scaler: Any


def _setup(model_cfg: Any, train_cfg: Any, device: torch.device) -> _Setup:
    model = create_model(model_cfg, in_chans=1).to(device)
    channels_last = bool(_get(train_cfg, "channels_last", True))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    amp_dtype = None
    scaler = None
    if device.type == "cuda" and bool(_get(train_cfg, "amp", True)):
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    return _Setup(model, device, memory_format, amp_dtype, scaler)


def _autocast(s: _Setup) -> contextlib.AbstractContextManager[Any]:
    if s.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=s.amp_dtype)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, s: _Setup, batch_size: int) -> torch.Tensor:
    """Logits of ``x`` (N, 1, H, W) in eval mode, big batches, float32 on CPU."""
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].to(s.device, non_blocking=True).contiguous(memory_format=s.memory_format)
        with _autocast(s):
            out.append(model(xb).float().cpu())
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def _probs(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    p = torch.softmax(logits, dim=1).numpy()
    return p[:, 1].astype(np.float64) if num_classes == 2 else p.astype(np.float64)


def _batches(n: int, batch_size: int, labels: torch.Tensor, balance: str, g: torch.Generator) -> list[torch.Tensor]:
    """Index batches of one epoch: a seeded permutation, or class-balanced sampling with replacement."""
    if balance == "sampler":
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1).clamp(min=1).float()
        weights = (1.0 / counts)[labels]
        order = torch.multinomial(weights, n, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    batches = list(order.split(batch_size))
    # BatchNorm cannot train on a single image: fold a trailing singleton into the previous batch.
    if len(batches) > 1 and batches[-1].numel() == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


@contextlib.contextmanager
def _run_settings(num_threads: int | None, device: torch.device):
    """Thread count, deterministic algorithms (CPU) or cuDNN autotuning (CUDA) for the run,
    restored afterwards."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_bench


def fit_evaluate(model_cfg: Any, train_cfg: Any, data: RunData, seed: int,
                 on_the_fly: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 want_state_dict: bool = False,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> FitResult:
    """Train on ``data.train_*``, select on ``data.val_*``, predict ``data.test_x``.

    ``on_the_fly``: a filter applied to every batch after augmentation (and to the validation
    and test images, once) — e.g. a ``diffusion_filters.Pipeline``; it receives and returns
    (B, 1, H, W) float tensors in [0, 1]. ``progress`` is called after every epoch with that
    epoch's history record plus ``epochs`` (the planned number).
    Raises ``TrainingError`` (``NonFiniteLossError`` for a NaN/Inf loss) with a one-line reason.
    """
    device = resolve_device(str(_get(train_cfg, "device", "auto")))
    with _run_settings(_get(train_cfg, "num_threads"), device):
        return _fit(model_cfg, train_cfg, data, int(seed), device, on_the_fly, want_state_dict, progress)


def _fit(model_cfg: Any, train_cfg: Any, data: RunData, seed: int, device: torch.device,
         on_the_fly: Callable[[torch.Tensor], torch.Tensor] | None, want_state_dict: bool,
         progress: Callable[[dict[str, Any]], None] | None) -> FitResult:
    clock = _Clock(device)
    peak_rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    num_classes = int(_get(model_cfg, "num_classes", 2))
    epochs = int(_get(train_cfg, "epochs", 10))
    batch_size = int(_get(train_cfg, "batch_size", 32))
    balance = str(_get(train_cfg, "class_balance", "loss"))
    augment = bool(_get(train_cfg, "augment", True))
    patience = _get(train_cfg, "early_stopping_patience")
    eval_batch = max(256, 4 * batch_size)

    t0 = time.perf_counter()
    train_x, val_x, test_x = (_as_tensor(a, n) for a, n in
                              ((data.train_x, "train_x"), (data.val_x, "val_x"), (data.test_x, "test_x")))
    train_y = _labels(data.train_y, "train_y", num_classes)
    val_y = _labels(data.val_y, "val_y", num_classes)
    n_train = train_x.shape[0]
    if n_train < 2:
        raise TrainingError(f"RunData.train_x: at least 2 training images are needed, got {n_train}")
    if len(train_y) != n_train or len(val_y) != val_x.shape[0] or len(data.test_y) != test_x.shape[0]:
        raise TrainingError("RunData: images and labels differ in length "
                            f"(train {n_train}/{len(train_y)}, val {val_x.shape[0]}/{len(val_y)}, "
                            f"test {test_x.shape[0]}/{len(data.test_y)})")
    if on_the_fly is not None:
        # Evaluation images are filtered once, in chunks (a whole test fold at 224 px is large).
        with torch.no_grad():
            val_x, test_x = (torch.cat([on_the_fly(c) for c in x.split(eval_batch)]) if len(x) else x
                             for x in (val_x, test_x))
    data_seconds = time.perf_counter() - t0

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    s = _setup(model_cfg, train_cfg, device)
    model = s.model
    class_counts = torch.bincount(train_y, minlength=num_classes).float()
    if balance == "loss":
        weight = (n_train / (num_classes * class_counts.clamp(min=1))).to(device)
    else:
        weight = None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=float(_get(train_cfg, "label_smoothing", 0.1)))
    optimizer = torch.optim.AdamW(_param_groups(model, float(_get(train_cfg, "weight_decay", 0.05))),
                                  lr=float(_get(train_cfg, "lr", 1e-3)))
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(_batches(n_train, batch_size, train_y, "none", torch.Generator().manual_seed(0)))
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(int(_get(train_cfg, "warmup_epochs", 1)) * steps_per_epoch, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))

    t_forward = t_backward = t_optim = t_train = t_eval = 0.0
    epoch_seconds: list[float] = []
    epoch_train_seconds: list[float] = []
    history: list[dict[str, Any]] = []
    best: tuple[float, float] | None = None
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_params: dict[str, list[float]] = {}
    stale = 0
    images_seen = 0

    for epoch in range(1, epochs + 1):
        e0 = clock.now()
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        n_seen = 0
        lr_epoch = optimizer.param_groups[0]["lr"]
        for step, idx in enumerate(_batches(n_train, batch_size, train_y, balance, g)):
            d0 = time.perf_counter()
            xb = train_x[idx]
            if augment:
                xb = augment_batch(xb, g)
            if on_the_fly is not None:
                with torch.no_grad():
                    xb = on_the_fly(xb)
            xb = xb.to(device, non_blocking=True).contiguous(memory_format=s.memory_format)
            yb = train_y[idx].to(device, non_blocking=True)
            f0 = clock.now()
            data_seconds += f0 - d0
            with _autocast(s):
                logits = model(xb)
                loss = criterion(logits.float(), yb)
            f1 = clock.now()
            if not bool(torch.isfinite(loss)):
                raise NonFiniteLossError(
                    f"training loss became {float(loss.detach())} at epoch {epoch} step {step + 1} "
                    f"(lr {optimizer.param_groups[0]['lr']:.3g}); lower training.lr or check the input data")
            optimizer.zero_grad(set_to_none=True)
            if s.scaler is not None:
                s.scaler.scale(loss).backward()
            else:
                loss.backward()
            f2 = clock.now()
            if s.scaler is not None:
                s.scaler.step(optimizer)
                s.scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            f3 = clock.now()
            t_forward += f1 - f0
            t_backward += f2 - f1
            t_optim += f3 - f2
            loss_sum += float(loss.detach()) * len(idx)
            n_seen += len(idx)
        images_seen += n_seen
        e1 = clock.now()
        epoch_train_seconds.append(e1 - e0)
        t_train += e1 - e0
        peak_rss = max(peak_rss, _rss_mb())

        record: dict[str, Any] = {"epoch": epoch, "train_loss": float(loss_sum) / max(1, n_seen),
                                  "val_loss": None, "val_roc_auc": None, "lr": lr_epoch}
        if len(val_y):
            logits = predict_logits(model, val_x, s, eval_batch)
            record["val_loss"] = float(F.cross_entropy(logits, val_y))
            record["val_roc_auc"] = _roc_auc(_probs(logits, num_classes), val_y.numpy())
        e2 = clock.now()
        t_eval += e2 - e1
        epoch_seconds.append(e2 - e0)
        record["seconds"] = e2 - e0
        record["learned_params"] = learned_params(model)
        history.append(record)

        # Selection key: higher AUC first, then lower loss; without AUC only the loss counts.
        if record["val_loss"] is None:
            key = (float(epoch), 0.0)  # no validation data: keep the last epoch
        elif record["val_roc_auc"] is None:
            key = (0.0, -record["val_loss"])
        else:
            key = (record["val_roc_auc"], -record["val_loss"])
        if best is None or key > best:
            best, best_epoch, stale = key, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_params = record["learned_params"]
        else:
            stale += 1
        if progress is not None:
            progress({**record, "epochs": epochs})
        if patience is not None and stale >= int(patience):
            break

    assert best_state is not None
    model.load_state_dict(best_state)
    p0 = clock.now()
    test_logits = predict_logits(model, test_x, s, eval_batch)
    p1 = clock.now()
    t_eval += p1 - p0
    n_test = test_x.shape[0]
    single = _single_image_ms(model, test_x, s, clock) if n_test else None
    peak_rss = max(peak_rss, _rss_mb())
    timings = {
        "data_seconds": data_seconds,
        "train_seconds": t_train,
        "epoch_seconds": epoch_seconds,
        "epoch_train_seconds": epoch_train_seconds,
        "forward_seconds": t_forward,
        "backward_seconds": t_backward,
        "optimizer_seconds": t_optim,
        "eval_seconds": t_eval,
        "inference_ms_per_image": 1000.0 * (p1 - p0) / n_test if n_test else None,
        "inference_ms_single_image": single,
        "peak_rss_mb": peak_rss,
        "cuda_max_allocated_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                                  if device.type == "cuda" else None),
        "train_images_per_second": images_seen / t_train if t_train > 0 else None,
    }
    state = ({k: v.detach().cpu().contiguous() for k, v in best_state.items()} if want_state_dict else None)
    return FitResult(test_probs=_probs(test_logits, num_classes) if n_test else np.empty(0),
                     timings=timings, history=history, learned_params=best_params,
                     best_epoch=best_epoch, device=str(device), state_dict=state,
                     extra={"weights": getattr(model, "weights_report", None), "epochs_run": len(history)})


def _single_image_ms(model: nn.Module, x: torch.Tensor, s: _Setup, clock: _Clock, repeats: int = 5) -> float:
    """Median latency of one image through the network (batch 1), in milliseconds."""
    times = []
    xb = x[:1]
    for _ in range(repeats + 1):
        t0 = clock.now()
        predict_logits(model, xb, s, 1)
        times.append(clock.now() - t0)
    return 1000.0 * float(np.median(times[1:]))


__all__ = [
    "TIMING_KEYS",
    "FitResult",
    "NonFiniteLossError",
    "RunData",
    "TrainingError",
    "fit_evaluate",
    "predict_logits",
    "resolve_device",
    "warmup_cosine",
]
