"""The recipe's parts, each against an independent computation: optimiser groups, the chance
loss, BatchNorm re-estimation, gradient clipping, the fit diagnosis, determinism settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from harness.models import create_model, diffusion_modules
from harness.suite import BlocksConfig, ModelConfig, StemConfig, TrainingConfig
from harness.training import RunData, fit_evaluate
from harness.training.device import Precision
from harness.training.epochs import recalibrate_batchnorm
from harness.training.recipe import chance_loss, class_weights, param_groups
from harness.training.selection import EpochRecord, diagnose

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_diffusion_parameters_get_their_own_group_and_learning_rate() -> None:
    model = create_model(ModelConfig(stem=StemConfig(iterations=1), diffusion_blocks=BlocksConfig(after_stages=[1])))
    cfg = TrainingConfig(lr=2e-3, diffusion_lr_multiplier=30.0, weight_decay=0.05)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    diffusion = {id(p) for m in diffusion_modules(model).values() for p in m.parameters() if p.requires_grad}
    assert {id(p) for p in groups["diffusion"]["params"]} == diffusion
    assert groups["diffusion"]["lr"] == pytest.approx(0.06) and groups["diffusion"]["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in groups["weights"]["params"]) and groups["weights"]["weight_decay"] == 0.05
    assert all(p.ndim <= 1 for p in groups["biases_and_norms"]["params"])
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def _best_constant_loss(y: torch.Tensor, weight: torch.Tensor | None, smoothing: float) -> float:
    """Brute force: the lowest loss of any constant prediction, by scanning p(class 1)."""
    best = math.inf
    for p in np.linspace(1e-4, 1 - 1e-4, 20001):
        logits = torch.log(torch.tensor([[1 - p, p]], dtype=torch.float64)).expand(len(y), 2)
        loss = F.cross_entropy(logits, y, weight=None if weight is None else weight.double(),
                               label_smoothing=smoothing)
        best = min(best, float(loss))
    return best


@pytest.mark.parametrize("balance,smoothing", [("loss", 0.1), ("none", 0.0), ("none", 0.1), ("loss", 0.0)])
def test_chance_loss_is_the_best_constant_prediction(balance: str, smoothing: float) -> None:
    y = torch.tensor([0] * 30 + [1] * 70)
    weight = class_weights(y, 2, balance)
    got = chance_loss(y, 2, weight, smoothing)
    assert got == pytest.approx(_best_constant_loss(y, weight, smoothing), abs=1e-6)
    if balance == "loss" and smoothing == 0:
        assert got == pytest.approx(math.log(2))  # balanced weights: chance is ln K


def test_batchnorm_is_re_estimated_as_the_plain_average_over_batches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    x = torch.rand(64, 1, 8, 8) * 3 + 1
    recalibrate_batchnorm(model, x, Precision.for_run(torch.device("cpu"), False, False), torch.device("cpu"),
                          max_images=48, batch_size=16)
    with torch.no_grad():
        feats = [model[0](x[i:i + 16]) for i in range(0, 48, 16)]
    want_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, want_var, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1  # restored for training


def _record(epoch: int, train: float, val: float | None = 0.6, auc: float | None = 0.7) -> EpochRecord:
    return EpochRecord(epoch, train, val, auc, 1e-3)


def test_diagnosis_names_runs_that_did_not_fit_or_diverged() -> None:
    chance = math.log(2)
    ok = diagnose([_record(1, 0.8), _record(2, 0.5)], 2, chance, 0.69)
    assert ok.status == "ok"
    flat = diagnose([_record(1, 0.71), _record(2, 0.70)], 2, chance, 0.69)
    assert flat.status == "did_not_fit" and "not below" in flat.reason
    diverged = diagnose([_record(1, 0.5, val=300.0)], 1, chance, 0.69)
    assert diverged.status == "diverged" and "300" in diverged.reason
    spread = diagnose([_record(1, 0.5, auc=0.6), _record(2, 0.5, auc=0.9), _record(3, 0.5, auc=0.8)], 2, chance, 0.69)
    assert spread.val_auc_tail_spread == pytest.approx(0.3)


def _data(n: int = 24, size: int = 32) -> RunData:
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 2).astype(np.int64)
    x = rng.random((n, size, size), dtype=np.float32) * 0.3
    x[y == 1, 4:, size // 2 - 1:size // 2 + 1] += 0.6
    return RunData(x.clip(0, 1), y, x[:8], y[:8], x[:8], y[:8])


def test_gradients_are_clipped_to_the_configured_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    norms: list[float] = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        total = real(params, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        norms.append(float(after))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = TrainingConfig(epochs=1, batch_size=8, device="cpu", num_threads=1, lr=1e-2, grad_clip_norm=0.05)
    fit_evaluate(ModelConfig(), cfg, _data(), seed=0)
    assert norms and max(norms) <= 0.05 * (1 + 1e-4)


def test_deterministic_runs_on_cpu_and_repeat_exactly() -> None:
    cfg = TrainingConfig(epochs=1, batch_size=8, device="cpu", num_threads=1, deterministic=True)
    a = fit_evaluate(ModelConfig(), cfg, _data(), seed=3)
    b = fit_evaluate(ModelConfig(), cfg, _data(), seed=3)
    np.testing.assert_array_equal(a.test_probs, b.test_probs)
    assert not torch.are_deterministic_algorithms_enabled()  # the run's settings are restored


def test_the_default_recipe_fits_separable_frames() -> None:
    # The default recipe (small classifier init, BatchNorm re-estimation, clipping) must fit what
    # a network can fit: the toy B-line frames within a few epochs.
    cfg = TrainingConfig(epochs=6, batch_size=8, device="cpu", num_threads=1, lr=3e-3)
    r = fit_evaluate(ModelConfig(), cfg, _data(32), seed=0)
    assert r.history[0].train_loss < 1.0  # no large initial logits
    assert r.diagnosis.status == "ok", r.diagnosis.reason
