"""``harness recipe``: a recipe scored on inner folds of one outer training part, never on its test fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from harness.cli import main
from harness.cv import get_split
from harness.execute import load_suite_frames
from harness.recipe import score_recipe
from harness.suite import load_suite

SUITE = {"name": "recipe", "seed": 0,
         "data": {"source": "simulated", "patients": 16, "frames_per_patient": 3, "image_size": 32},
         "model": {"pretrained": "none"}, "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
         "evaluation": {"folds": 4}, "arms": [{"name": "baseline"}]}


class Recording:
    """A fit that remembers the images it was given (pixel sums identify frames) and predicts noise."""

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def __call__(self, model_cfg, train_cfg, data, seed, on_the_fly=None, **kw):
        from harness.training import FitDiagnosis, FitResult

        for x in (data.train_x, data.val_x, data.test_x):
            self.seen.append(np.round(np.asarray(x, dtype=np.float64).sum(axis=(1, 2)), 3))
        rng = np.random.default_rng(seed)
        return FitResult(rng.random(len(data.test_y)), {}, [], {}, 2, "cpu",
                         FitDiagnosis("ok", "stub", 0.69, None, 0.1, None, None))


def test_the_outer_test_fold_never_reaches_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    suite = load_suite(path)
    fit = Recording()
    lines: list[str] = []
    scores = score_recipe(suite, "baseline", fold=1, inner_folds=3, cache_dir=tmp_path / "cache", fit=fit,
                          echo=lines.append)
    assert [s.inner_fold for s in scores] == [0, 1, 2] and len(lines) == 4
    frames = load_suite_frames(suite, tmp_path / "cache")
    split = get_split(frames.labels, frames.groups, 4, 1, 0, 0.2, 0, 1)
    sums = np.round(frames.images.astype(np.float64).sum(axis=(1, 2)) / 255.0, 3)
    test_sums = set(sums[split.test_idx].tolist()) - set(sums[np.concatenate([split.train_idx, split.val_idx])])
    seen = set(np.concatenate(fit.seen).tolist())
    assert test_sums and not (test_sums & seen)  # no frame only the test fold has was ever given to a fit
    assert all(0.0 <= s.frame_roc_auc <= 1.0 for s in scores if s.frame_roc_auc is not None)
    assert sum(s.n_test for s in scores) == len(split.train_idx) + len(split.val_idx)  # the inner folds tile it


def test_the_command_logs_one_json_line_per_inner_fold(tmp_path: Path, monkeypatch) -> None:
    import harness.recipe as recipe

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    real = recipe.score_recipe
    monkeypatch.setattr(recipe, "score_recipe", lambda *a, **k: real(*a, **{**k, "fit": Recording()}))
    log = tmp_path / "log.jsonl"
    assert main(["recipe", str(path), "--set", "training.lr=0.002", "--inner", "1", "--inner-folds", "2",
                 "--log", str(log), "--cache-dir", str(tmp_path / "cache")]) == 0
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["inner_fold"] == 1 and row["overrides"] == ["training.lr=0.002"] and row["arm"] == "baseline"
    assert row["fold"] == 0 and row["inner_folds"] == 2 and row["fit"] == "ok"
