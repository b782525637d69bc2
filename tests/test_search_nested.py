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


# ----------------------------------------------------------------------------- issue 21 §3: what a study is
def _tune(suite, frames, tmp_path, fit=None, **kw):
    return tune(suite, suite.arms[0], frames, _split(suite, frames), 0, 0, seed=1, cache_dir=str(tmp_path / "cache"),
                out_dir=str(tmp_path / "out"), fit=fit or StubFit(), **kw)


def test_what_the_search_optimises_is_part_of_the_run_and_the_study(tmp_path):
    """``--set evaluation.primary_metric=brier`` once reused the stored ROC-AUC trials under
    "minimize": the objective now changes the run's hash, and the study never reuses them."""
    auc = make_suite(tmp_path)
    data = auc.model_dump(mode="json")
    brier = validate_suite({**data, "evaluation": {**data["evaluation"], "primary_metric": "brier"}}, tmp_path)
    video = validate_suite({**data, "evaluation": {**data["evaluation"], "primary_level": "video"}}, tmp_path)
    hashes = {s.run_config_hash("baseline") for s in (auc, brier, video)}
    assert len(hashes) == 3
    frames = index_frames()
    _, first = _tune(auc, frames, tmp_path, config_hash="same", code_version="c1")
    fit = StubFit()
    _, second = _tune(brier, frames, tmp_path, fit=fit, config_hash="same", code_version="c1")
    assert len(fit.calls) == 3 * 2  # every trial trained again: nothing reused under the other objective
    assert (second["metric"], second["direction"]) == ("brier", "minimize")
    assert first["study_name"] != second["study_name"]
    best = min((t for t in second["trials"] if t["state"] == "complete"), key=lambda t: t["value"])
    assert second["inner_best"] == best["value"]  # the lowest Brier score wins


def test_a_study_is_keyed_by_the_code_version(tmp_path):
    suite, frames = make_suite(tmp_path), index_frames()
    _tune(suite, frames, tmp_path, config_hash="h", code_version="old")
    again = StubFit()
    _, record = _tune(suite, frames, tmp_path, fit=again, config_hash="h", code_version="old")
    assert again.calls == []  # same identity: the finished study is resumed, nothing retrained
    new = StubFit()
    _, record = _tune(suite, frames, tmp_path, fit=new, config_hash="h", code_version="new")
    assert len(new.calls) == 3 * 2 and record["code_version"] == "new"


def test_a_stored_study_is_never_loaded_with_another_direction(tmp_path):
    from harness.search.storage import open_study

    path = tmp_path / "s.sqlite3"
    open_study(path, "s", "maximize", None, None)
    with pytest.raises(ValueError, match=r"stored with direction maximize, asked to minimize"):
        open_study(path, "s", "minimize", None, None)


def test_trials_are_scored_at_the_suites_primary_level(tmp_path):
    from harness.metrics import aggregate, binary_metrics

    class Recording(StubFit):
        def __init__(self):
            super().__init__()
            self.folds = []

        def __call__(self, model_cfg, train_cfg, data, seed, **kw):
            result = super().__call__(model_cfg, train_cfg, data, seed, **kw)
            self.folds.append((self.seen[-1], np.asarray(data.test_y), np.asarray(result.test_probs)))
            return result

    base = make_suite(tmp_path, trials=1).model_dump(mode="json")
    suite = validate_suite({**base, "evaluation": {**base["evaluation"], "primary_level": "video"}}, tmp_path)
    frames = index_frames()
    frames.videos = np.array([f"{g}-v{i % 2}" for i, g in enumerate(frames.groups)])  # 2 videos per patient
    fit = Recording()
    _, record = _tune(suite, frames, tmp_path, fit=fit, config_hash="video")
    assert record["level"] == "video" and record["aggregation"] == "mean"
    want = []
    for index, y, p in fit.folds:
        _, vy, vp = aggregate(y, p, frames.videos[index], "mean")
        want.append(binary_metrics(vy, vp)["roc_auc"])
        assert want[-1] != pytest.approx(binary_metrics(y, p)["roc_auc"])  # the levels differ here
    assert record["trials"][0]["fold_scores"] == pytest.approx(want)


def test_a_trial_that_finished_every_inner_fold_is_complete_never_pruned(tmp_path, monkeypatch):
    import optuna

    import harness.search.nested as nested

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    monkeypatch.setattr(nested, "_pruner", lambda kind, budget: AlwaysPrune())
    suite = make_suite(tmp_path, inner_folds=2, pruner="median")
    _, record = _tune(suite, index_frames(), tmp_path, config_hash="prune")
    # the pruner is asked after the first inner fold (and prunes), never after the last
    assert [t["state"] for t in record["trials"]] == ["pruned"] * 3
    assert all(len(t["fold_scores"]) == 1 for t in record["trials"])
    real = nested.inner_folds
    monkeypatch.setattr(nested, "inner_folds", lambda *a, **k: real(*a, **k)[:1])  # the first fold is the last
    _, record = _tune(suite, index_frames(), tmp_path, config_hash="last")
    assert [t["state"] for t in record["trials"]] == ["complete"] * 3


def test_leak_counters_are_counted_by_frame_and_patient_not_written_as_zero(tmp_path, monkeypatch):
    import harness.search.nested as nested

    suite, frames = make_suite(tmp_path, trials=1), index_frames()
    _, clean = _tune(suite, frames, tmp_path, config_hash="clean")
    leak = clean["leakage"]
    assert leak["test_samples_in_trials"] == 0 and leak["test_patients_in_trials"] == 0
    assert leak["test_patients"] == len(set(frames.groups[_split(suite, frames).test_idx]))
    for fold in leak["inner_folds"]:
        assert fold["groups_in_train_and_val"] == fold["groups_in_train_and_test"] == fold["samples_in_two_roles"] == 0
    # A leak that got past the guard is counted, not reported as 0.
    split = _split(suite, frames)
    leaky = type(split)(split.repeat, split.fold, np.concatenate([split.train_idx, split.test_idx[:4]]),
                        split.val_idx, split.test_idx, split.leakage)
    monkeypatch.setattr(nested, "assert_disjoint", lambda *a, **k: None)
    _, record = tune(suite, suite.arms[0], frames, leaky, 0, 0, seed=1, cache_dir=str(tmp_path / "cache"),
                     out_dir=str(tmp_path / "out"), fit=StubFit(), config_hash="leaky")
    assert record["trials"][0]["test_overlap"] == 4
    assert record["leakage"]["test_samples_in_trials"] == 4
    assert record["leakage"]["test_patients_in_trials"] >= 1
