"""One run of training/evaluation: recipe, determinism, selection, timings, errors, augmentation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from harness.augment import AugmentConfig, augment_batch
from harness.models import create_model
from harness.suite import ModelConfig, StemConfig, TrainingConfig
from harness.training.data import batches as _batches
from harness.training import (
    TIMING_KEYS,
    NonFiniteLossError,
    RunData,
    TrainingError,
    fit_evaluate,
    resolve_device,
    warmup_cosine,
)

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_data(seed: int = 0, n_train: int = 24, n_val: int = 8, n_test: int = 8) -> RunData:
    """Separable toy frames: class 1 has a bright vertical line (a crude B-line)."""
    rng = np.random.default_rng(seed)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        x = rng.random((n, SIZE, SIZE), dtype=np.float32) * 0.3
        x[y == 1, 4:, SIZE // 2 - 1:SIZE // 2 + 1] += 0.6
        return x.clip(0, 1).astype(np.float32), y.astype(np.int64)

    return RunData(*part(n_train), *part(n_val), *part(n_test))


def cfg(**kw) -> TrainingConfig:
    base = {"epochs": 1, "batch_size": 8, "device": "cpu", "num_threads": 1, "lr": 1e-3}
    base.update(kw)
    return TrainingConfig(**base)


@pytest.fixture(scope="module")
def run_result():
    data = make_data()
    return data, fit_evaluate(ModelConfig(), cfg(epochs=2), data, seed=3, want_state_dict=True)


def test_result_contract(run_result) -> None:
    data, r = run_result
    assert r.test_probs.shape == (len(data.test_y),)
    assert np.all((r.test_probs >= 0) & (r.test_probs <= 1))
    assert r.device == "cpu"
    assert set(TIMING_KEYS) <= set(r.timings)
    assert r.timings["cuda_max_allocated_mb"] is None
    assert len(r.timings["epoch_seconds"]) == 2 and r.timings["train_seconds"] > 0
    assert r.timings["train_images_per_second"] == pytest.approx(
        2 * len(data.train_y) / r.timings["train_seconds"])
    assert r.timings["peak_rss_mb"] > 0 and r.timings["inference_ms_per_image"] > 0
    assert [h.epoch for h in r.history] == [1, 2]
    for h in r.history:
        assert set(h.as_dict()) >= {"epoch", "train_loss", "val_loss", "val_roc_auc", "lr", "seconds",
                                    "learned_params"}
        assert math.isfinite(h.train_loss) and math.isfinite(h.val_loss)
        assert h.learned_params == {}
    assert r.best_epoch in (1, 2)
    # The selected epoch is the best by validation ROC-AUC (then loss).
    keys = [(h.val_roc_auc, -h.val_loss) for h in r.history]
    assert r.best_epoch == 1 + max(range(2), key=lambda i: keys[i])


def test_state_dict_reproduces_test_probabilities(run_result) -> None:
    data, r = run_result
    model = create_model(ModelConfig())
    model.load_state_dict(r.state_dict)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.test_x).unsqueeze(1))
    np.testing.assert_allclose(torch.softmax(logits, 1)[:, 1].numpy(), r.test_probs, rtol=1e-4, atol=1e-5)


def test_same_seed_same_numbers_different_seed_different() -> None:
    data = make_data(1, n_train=16, n_val=6, n_test=6)
    a = fit_evaluate(ModelConfig(), cfg(), data, seed=7)
    b = fit_evaluate(ModelConfig(), cfg(), data, seed=7)
    c = fit_evaluate(ModelConfig(), cfg(), data, seed=8)
    np.testing.assert_array_equal(a.test_probs, b.test_probs)
    assert a.history[0].train_loss == b.history[0].train_loss
    assert not np.array_equal(a.test_probs, c.test_probs)


def test_learnable_stem_trains_and_records_its_parameters() -> None:
    data = make_data(2, n_train=16, n_val=6, n_test=6)
    model_cfg = ModelConfig(stem=StemConfig(mode="replace", iterations=2))
    r = fit_evaluate(model_cfg, cfg(epochs=2, lr=1e-2, warmup_epochs=0, augment=False), data, seed=0)
    first, second = r.history[0].learned_params, r.history[1].learned_params
    assert set(first) == {"conv_stem.kappa", "conv_stem.step", "conv_stem.shape"}
    assert len(first["conv_stem.kappa"]) == 32
    # Parameters move between epochs; the final ones are the selected epoch's.
    assert not np.allclose(first["conv_stem.kappa"], second["conv_stem.kappa"])
    # The final parameters are the selected epoch's, plus the stem's 1x1 mixing weights (kept per run).
    mix = r.learned_params.pop("conv_stem.mix")
    assert len(mix) == 32 * 32
    assert r.learned_params == r.history[r.best_epoch - 1].learned_params
    assert "conv_stem.mix" not in r.initial_params


def test_non_finite_loss_is_a_clear_error() -> None:
    data = make_data(n_train=8, n_val=4, n_test=4)
    data.train_x[:] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at epoch 1 step 1"):
        fit_evaluate(ModelConfig(), cfg(augment=False), data, seed=0)


def test_on_the_fly_filter_sees_every_batch_and_eval_set() -> None:
    data = make_data(n_train=12, n_val=4, n_test=4)
    shapes: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return x

    fit_evaluate(ModelConfig(), cfg(batch_size=6), data, seed=0, on_the_fly=spy)
    # validation, test, the BatchNorm recalibration images (once), then the two training batches
    assert shapes == [(4, 1, SIZE, SIZE), (4, 1, SIZE, SIZE), (12, 1, SIZE, SIZE), (6, 1, SIZE, SIZE),
                      (6, 1, SIZE, SIZE)]


def test_batchnorm_is_recalibrated_on_what_the_network_is_trained_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """An arm that filters on the fly trains, validates and tests on filtered images: BatchNorm's
    statistics are re-estimated on filtered training images too, not on the raw ones."""
    import harness.training.fit as fit_module

    data = make_data(n_train=12, n_val=4, n_test=4)
    seen: list[torch.Tensor] = []
    real = fit_module.recalibrate_batchnorm

    def spy(model, x, *args, **kwargs):
        seen.append(x.clone())
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(fit_module, "recalibrate_batchnorm", spy)
    fit_evaluate(ModelConfig(), cfg(epochs=2, bn_recalibration_images=10), data, seed=0,
                 on_the_fly=lambda x: 1.0 - x)
    want = 1.0 - torch.from_numpy(data.train_x[:10]).unsqueeze(1)
    assert len(seen) == 2
    for x in seen:
        torch.testing.assert_close(x, want)


def test_progress_callback_and_early_stopping() -> None:
    data = make_data(n_train=12, n_val=4, n_test=4)
    data.val_y[:] = 0  # one class only: selection falls back to validation loss
    seen: list[dict] = []
    r = fit_evaluate(ModelConfig(), cfg(epochs=4, early_stopping_patience=1, lr=0.5, warmup_epochs=0), data,
                     seed=0, progress=seen.append)
    assert all(h.val_roc_auc is None for h in r.history)
    assert [s["epoch"] for s in seen] == [h.epoch for h in r.history]
    assert all(s["epochs"] == 4 for s in seen)
    losses = [h.val_loss for h in r.history]
    assert r.best_epoch == 1 + int(np.argmin(losses))
    # Stopped exactly one epoch after the last improvement (or ran to the end).
    assert len(r.history) == min(4, r.best_epoch + 1)


def test_cuda_requested_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(TrainingError, match=r"training\.device: cuda was requested but no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_bad_inputs_are_named() -> None:
    data = make_data(n_train=8, n_val=4, n_test=4)
    data.train_y[0] = 5
    with pytest.raises(TrainingError, match=r"RunData\.train_y: labels must be in 0\.\.1"):
        fit_evaluate(ModelConfig(), cfg(), data, seed=0)
    data = make_data(n_train=8, n_val=4, n_test=4)
    data.val_x = data.val_x[:, None]
    with pytest.raises(TrainingError, match=r"RunData\.val_x: expected images \(N, H, W\)"):
        fit_evaluate(ModelConfig(), cfg(), data, seed=0)


def test_warmup_cosine_schedule() -> None:
    values = [warmup_cosine(s, 4, 12) for s in range(12)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[8] == pytest.approx(0.5)
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))
    assert warmup_cosine(11, 0, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 11 / 12)))


def test_balanced_sampler_and_batches() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat(_batches(100, 16, labels, "sampler", g))
    frac = float(labels[drawn].float().mean())
    assert 0.35 < frac < 0.65  # ~0.5 instead of 0.1
    plain = _batches(17, 8, labels[:17], "none", torch.Generator().manual_seed(0))
    assert [len(b) for b in plain] == [8, 9]  # no single-image batch (BatchNorm needs 2)
    assert sorted(torch.cat(plain).tolist()) == list(range(17))


def test_augmentation_seeded_no_vertical_flip_has_horizontal_flip() -> None:
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, :10, :12] = 1.0  # bright top-left corner
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a.min() >= 0 and a.max() <= 1
    top, bottom = a[:, 0, :16].mean((1, 2)), a[:, 0, 16:].mean((1, 2))
    left, right = a[:, 0, :, :16].mean((1, 2)), a[:, 0, :, 16:].mean((1, 2))
    assert bool((top > bottom).all())  # depth order is never flipped
    flipped = int((right > left).sum())
    assert 16 < flipped < 48  # horizontal flips happen about half the time
    c = augment_batch(x, torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_augmentation_identity_when_ranges_are_degenerate() -> None:
    x = torch.rand(3, 1, 16, 16)
    ident = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), max_rotation=0.0, hflip=0.0, gain=(1.0, 1.0),
                          contrast=(1.0, 1.0))
    torch.testing.assert_close(augment_batch(x, torch.Generator().manual_seed(0), ident), x, atol=1e-5, rtol=0)
