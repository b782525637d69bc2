"""The paired design's random streams: arms that differ in one component draw the same random
numbers everywhere else (batch order, augmentation, dropout), so their difference is that
component's alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.runner import run_suite
from harness.store import ResultsStore
from harness.suite import ModelConfig, StemConfig, TrainingConfig, load_suite
from harness.training import RunData, fit_evaluate

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _data(n: int = 16, size: int = 32) -> RunData:
    rng = np.random.default_rng(0)
    x = rng.random((n, size, size), dtype=np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    return RunData(x, y, x[:6], y[:6], x[:6], y[:6])


def _batches_seen(model_cfg: ModelConfig) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return x

    cfg = TrainingConfig(epochs=2, batch_size=8, device="cpu", num_threads=1)
    fit_evaluate(model_cfg, cfg, _data(), seed=5, on_the_fly=spy)
    return seen


def test_batches_and_augmentations_do_not_depend_on_the_network() -> None:
    # A replaced stem takes extra random numbers to initialise; the batches must not notice.
    plain = _batches_seen(ModelConfig())
    for other in (ModelConfig(stem=StemConfig(type="conv")), ModelConfig(stem=StemConfig(iterations=1))):
        seen = _batches_seen(other)
        assert len(seen) == len(plain)
        for a, b in zip(plain, seen, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dropout_masks_do_not_depend_on_the_network() -> None:
    # The global generator (dropout) is re-seeded after the network is built.
    cfg = TrainingConfig(epochs=1, batch_size=8, device="cpu", num_threads=1)
    draws = []
    for model_cfg in (ModelConfig(), ModelConfig(stem=StemConfig(type="conv"))):
        def spy(x: torch.Tensor) -> torch.Tensor:
            draws.append(torch.rand(3))  # what the next dropout mask would draw from
            return x
        fit_evaluate(model_cfg, cfg, _data(), seed=5, on_the_fly=spy)
    first, second = draws[: len(draws) // 2], draws[len(draws) // 2:]
    # The first three calls filter the validation, test and BatchNorm-recalibration images, before the
    # streams are seeded; every draw during training must agree.
    assert len(first) == len(second) > 3
    for a, b in zip(first[3:], second[3:], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


TINY = {
    "name": "paired",
    "seed": 0,
    "data": {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
    "evaluation": {"folds": 2, "repeats": 1},
    "arms": [
        {"name": "baseline"},
        {"name": "baseline-copy"},
        {"name": "identity-filter", "preprocess": [{"median": {"size": 1}}]},
        {"name": "noise-floor", "training": {"seed_offset": 1}},
        {"name": "conv-stem-reinit", "model": {"stem": {"type": "conv"}}},
        {"name": "diffusion-stem-frozen",
         "model": {"stem": {"type": "diffusion", "mode": "replace", "iterations": 1, "trainable": False}}},
    ],
}


@pytest.mark.slow
def test_copies_and_identity_arms_give_bit_identical_metrics(tmp_path: Path) -> None:
    path = tmp_path / "paired.yaml"
    path.write_text(yaml.safe_dump(TINY))
    summary = run_suite(load_suite(path), tmp_path / "out", cache_dir=tmp_path / "cache", report=False,
                        progress=False, echo=lambda _: None)
    assert summary.ok, summary.failed
    metrics = ResultsStore(tmp_path / "out", readonly=True).metrics()
    by_arm = {arm: g.sort_values(["repeat", "fold", "level", "aggregation", "metric"])["value"].to_numpy()
              for arm, g in metrics.groupby("arm")}
    np.testing.assert_array_equal(by_arm["baseline"], by_arm["baseline-copy"])
    np.testing.assert_array_equal(by_arm["baseline"], by_arm["identity-filter"])
    # Another training seed on the same splits changes the numbers (the seed-noise control).
    assert not np.array_equal(by_arm["baseline"], by_arm["noise-floor"])
    # The shipped controls run: a fresh stem, and a diffusion stem that keeps its initial values.
    runs = ResultsStore(tmp_path / "out", readonly=True).runs(status="done").set_index("run_id")
    assert {"conv-stem-reinit", "diffusion-stem-frozen"} <= set(runs["arm"])
    frozen = runs.loc["diffusion-stem-frozen/r0/f0"]
    for name, start in frozen["initial_params"].items():
        np.testing.assert_allclose(frozen["learned_params"][name], start, rtol=1e-6)
