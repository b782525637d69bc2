"""The nested search of one outer run (harness.search.nested.tune) with a stub fit: no sample of the
outer test fold reaches any trial (also with preprocessing inside trials), trial 0 is the suite's own
configuration, the budget is exact, and ``--dry-run`` counts trials and inner fits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from harness.cv import get_split
from harness.search.nested import LeakageError, assert_disjoint, search_plan, search_plan_line, tune
from harness.suite import validate_suite

N_PATIENTS, PER_PATIENT = 16, 4


@dataclass
class Frames:
    """A FrameSet stand-in whose every image is constant at its own index (so a fit can tell
    which samples it was given, even after a diffusion filter: a constant image stays constant)."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    videos: np.ndarray
    sample_ids: np.ndarray
    content_hash: str = "indexframes-v1"


def index_frames(size: int = 16) -> Frames:
    n = N_PATIENTS * PER_PATIENT
    images = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], size, 1).repeat(size, 2)
    groups = np.array([f"p{i // PER_PATIENT}" for i in range(n)])
    labels = np.array([(i // PER_PATIENT) % 2 for i in range(n)], dtype=np.int64)
    ids = np.array([f"p{i // PER_PATIENT}#{i % PER_PATIENT}" for i in range(n)])
    return Frames(images, labels, groups, ids.copy(), ids)


class StubFit:
    """A fit that records the samples it is given (decoded from the pixels) and scores by ``lr``."""

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []
        self.calls: list[tuple[float, int]] = []

    def __call__(self, model_cfg, train_cfg, data, seed, on_the_fly=None, want_state_dict=False, **kw):
        from harness.training import FitDiagnosis, FitResult

        for x in (data.train_x, data.val_x, data.test_x):
            self.seen.append(np.rint(np.asarray(x)[:, 0, 0] * 255).astype(int))
        self.calls.append((float(train_cfg.lr), int(train_cfg.epochs)))
        rng = np.random.default_rng(int(train_cfg.lr * 1e7) + seed % 1000)
        probs = np.clip(0.5 + 0.2 * (data.test_y - 0.5) + rng.normal(0, 0.2, len(data.test_y)), 0.01, 0.99)
        diag = FitDiagnosis("ok", "stub", 0.69, None, 0.1, None, None)
        return FitResult(probs, {}, [], {}, 1, "cpu", diag)


def make_suite(tmp_path: Path, arms=None, **search):
    data = {
        "name": "nested", "seed": 3,
        "data": {"source": "simulated", "patients": N_PATIENTS, "frames_per_patient": PER_PATIENT, "image_size": 16},
        "training": {"epochs": 2, "lr": 0.003},
        "evaluation": {"folds": 2},
        "search": {"trials": 3, "inner_folds": 2, "sampler": "random", "pruner": "none",
                   "space": {"training.lr": {"log_uniform": [1e-4, 1e-2]}, "training.epochs": {"int": [1, 3]}},
                   **search},
        "arms": arms or [{"name": "baseline"}],
    }
    return validate_suite(data, base_dir=tmp_path)


def _split(suite, frames, fold=0):
    return get_split(frames.labels, frames.groups, suite.evaluation.folds, 1, suite.seed,
                     suite.training.val_fraction, 0, fold)


@pytest.mark.parametrize("fold", [0, 1])
def test_no_test_fold_sample_reaches_any_trial(tmp_path, fold):
    arms = [{"name": "pm", "preprocess": [{"perona_malik": {"iterations": 4, "kappa": 0.1, "step": 0.2}}],
             "search": {"space": {"preprocess.0.perona_malik.kappa": {"log_uniform": [0.02, 0.5]}}}}]
    suite = make_suite(tmp_path, arms)
    frames = index_frames()
    split = _split(suite, frames, fold)
    fit = StubFit()
    _, record = tune(suite, suite.arms[0], frames, split, 0, fold, seed=1, cache_dir=str(tmp_path / "cache"),
                     out_dir=str(tmp_path / "out"), fit=fit, config_hash="h")
    assert len(fit.calls) == 3 * 2  # every trial on every inner fold
    seen = np.unique(np.concatenate(fit.seen))
    assert len(seen) and not set(seen.tolist()) & set(split.test_idx.tolist())
    assert set(seen.tolist()) == set(split.train_idx.tolist()) | set(split.val_idx.tolist())
    assert record["leakage"]["test_samples_in_trials"] == 0
    assert all(t["test_overlap"] == 0 and t["samples_seen"] == len(seen) for t in record["trials"])
    assert len({t["samples_digest"] for t in record["trials"]}) == 1


def test_assert_disjoint_raises_on_a_shared_sample():
    assert_disjoint(np.array(["a", "b"]), np.array(["c"]), "ok")
    with pytest.raises(LeakageError, match="1 sample"):
        assert_disjoint(np.array(["a", "b"]), np.array(["b", "c"]), "trial 3")


def test_trial_zero_is_the_suites_configuration_and_the_budget_is_exact(tmp_path):
    suite = make_suite(tmp_path, sampler="tpe", pruner="median", trials=4)
    frames = index_frames()
    fit = StubFit()
    chosen, record = tune(suite, suite.arms[0], frames, _split(suite, frames), 0, 0, seed=1,
                          cache_dir=str(tmp_path / "cache"), out_dir=None, fit=fit)
    first = record["trials"][0]
    assert first["origin"] == "suite" and first["params"] == {"training.lr": 0.003, "training.epochs": 2}
    assert fit.calls[0] == (0.003, 2)
    assert record["n_trials"] == 4 and len(record["trials"]) == 4
    assert record["budget"] == 4 and record["inner_folds"] == 2
    best = max((t for t in record["trials"] if t["state"] == "complete"), key=lambda t: t["value"])
    assert record["inner_best"] == best["value"] and record["params"] == best["params"]
    assert suite.arm_training(chosen).lr == pytest.approx(record["params"]["training.lr"])


def test_the_same_seed_gives_the_same_trials(tmp_path):
    suite = make_suite(tmp_path, sampler="tpe")
    frames = index_frames()
    params = []
    for _ in range(2):
        _, record = tune(suite, suite.arms[0], frames, _split(suite, frames), 0, 0, seed=1,
                         cache_dir=str(tmp_path / "cache"), out_dir=None, fit=StubFit())
        params.append([t["params"] for t in record["trials"]])
    assert params[0] == params[1]


def test_dry_run_counts_trials_and_inner_fits(tmp_path):
    suite = make_suite(tmp_path, trials=5, inner_folds=3, arms=[{"name": "a"}, {"name": "b"}])
    assert search_plan(suite) == (2 * 2 * 5, 2 * 2 * 5 * 3)
    assert "20 trials, 60 inner fits" in search_plan_line(suite)
    assert search_plan(suite, [("a", 0, 1)]) == (5, 15)


def test_the_report_checks_the_inner_patients_against_the_stored_test_fold():
    from harness.report.tuning import _leaked

    rec = {"leakage": {"test_samples_in_trials": 0,
                       "inner_groups": [{"train": ["p1", "p2"], "val": ["p3"], "test": ["p4"]}]}}
    assert _leaked(rec, {"p5", "p6"}) == 0
    assert _leaked(rec, {"p4", "p5"}) == 1


def test_searches_table_on_old_and_new_stores(tmp_path):
    import sqlite3

    from harness.store import ResultsStore

    with ResultsStore(tmp_path) as store:
        store.claim_run("a", 0, 0, "h", 1)
        store.put_search("a/r0/f0", {"params": {"training.lr": 0.01}, "inner_best": 0.7})
        store.finish_run("a/r0/f0", [], [], {}, {}, [])
        rows = store.searches()
        assert rows["record"].tolist() == [{"params": {"training.lr": 0.01}, "inner_best": 0.7}]
        store.put_search("a/r0/f0", None)
        assert store.searches().empty
    conn = sqlite3.connect(tmp_path / "results.sqlite")
    conn.execute("DROP TABLE searches")  # a store written before the search existed
    conn.commit()
    conn.close()
    with ResultsStore(tmp_path, readonly=True) as old:
        assert old.searches().empty
    with ResultsStore(tmp_path) as migrated:
        migrated.put_search("a/r0/f0", {"params": {}})
        assert len(migrated.searches()) == 1
