"""The results store: one-transaction runs, resumability semantics, the read API."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from harness.store import ResultsStore, StoreError, run_id_for


def _fill(store: ResultsStore, arm: str = "baseline", repeat: int = 0, fold: int = 0, h: str = "h1") -> str:
    rid = store.claim_run(arm, repeat, fold, h, seed=7)
    store.finish_run(
        rid,
        metrics=[{"level": "frame", "aggregation": "none", "metric": "roc_auc", "value": 0.75},
                 {"level": "video", "aggregation": "max", "metric": "roc_auc", "value": np.float32(0.5)},
                 {"level": "frame", "aggregation": "none", "metric": "log_loss", "value": float("nan")}],
        predictions=[("s1", 0.9, 1), ("s2", 0.2, 0)],
        timings={"train_seconds": np.float64(1.5)},
        learned_params={"stem.kappa": np.array([0.1, 0.2])},
        epochs=[{"epoch": 0, "train_loss": 0.7}, {"epoch": 1, "train_loss": 0.5}],
        checkpoint="checkpoints/baseline.safetensors",
        info={"n_train": 10, "n_test": 2, "leakage_check": {"groups_in_train_and_test": 0}, "best_epoch": 1},
    )
    return rid


def test_finish_and_read_back(tmp_path):
    store = ResultsStore(tmp_path)
    assert store.path == tmp_path / "results.sqlite"
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.set_meta(suite_name="quick", suite_config={"name": "quick", "seed": 0})
    store.put_samples(["s1", "s2"], ["p1", "p2"], ["v1", "v2"], [1, 0],
                      pd.DataFrame({"severity": [2, 0], "probe": ["convex", "linear"]}))
    rid = _fill(store)
    assert rid == "baseline/r0/f0"
    assert store.meta()["suite_name"] == "quick"
    assert store.suite_config() == {"name": "quick", "seed": 0}
    runs = store.runs()
    assert list(runs["status"]) == ["done"]
    row = runs.iloc[0]
    assert row["timings"] == {"train_seconds": 1.5}
    assert row["learned_params"] == {"stem.kappa": [0.1, 0.2]}
    assert row["leakage_check"] == {"groups_in_train_and_test": 0}
    assert row["n_train"] == 10 and row["best_epoch"] == 1 and row["seed"] == 7
    m = store.metrics()
    assert list(m.columns) == ["run_id", "arm", "repeat", "fold", "level", "aggregation", "metric", "value"]
    assert len(m) == 3
    assert m.set_index("metric").loc["log_loss", "value"] is None or math.isnan(
        m.set_index("metric").loc["log_loss", "value"])
    p = store.predictions()
    assert list(p.columns[:9]) == ["run_id", "arm", "repeat", "fold", "sample_id", "group_id", "video_id",
                                   "label", "prob"]
    assert list(p["severity"]) == [2, 0] and list(p["probe"]) == ["convex", "linear"]
    assert list(p["group_id"]) == ["p1", "p2"]
    e = store.epochs()
    assert list(e["train_loss"]) == [0.7, 0.5]


def test_claim_again_drops_partial_results_and_counts_attempts(tmp_path):
    store = ResultsStore(tmp_path)
    _fill(store)
    # A second claim (e.g. after a config change) drops the old results: nothing is counted twice.
    rid = store.claim_run("baseline", 0, 0, "h2", seed=7)
    assert store.run_status(rid) == ("running", "h2")
    assert store.metrics().empty and store.predictions().empty
    assert store._conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
    _fill(store, h="h2")
    runs = store.runs()
    assert len(runs) == 1 and runs.iloc[0]["attempts"] == 3
    assert len(store.metrics()) == 3


def test_running_row_of_killed_process_is_not_done(tmp_path):
    store = ResultsStore(tmp_path)
    rid = store.claim_run("srad", 1, 2, "h1", seed=0)
    store.close()
    store = ResultsStore(tmp_path)  # a new driver after kill -9
    assert store.run_status(rid) == ("running", "h1")
    assert not store.is_done("srad", 1, 2, "h1")
    assert store.metrics().empty


def test_finish_is_atomic(tmp_path):
    store = ResultsStore(tmp_path)
    rid = store.claim_run("a", 0, 0, "h", seed=0)
    with pytest.raises(sqlite3.IntegrityError):  # duplicate prediction -> the whole run is rolled back
        store.finish_run(rid, [{"level": "frame", "aggregation": "none", "metric": "f1", "value": 1.0}],
                         [("s1", 0.5, 1), ("s1", 0.5, 1)], {}, {}, [])
    assert store.run_status(rid) == ("running", "h")
    assert store._conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0


def test_fail_and_stale(tmp_path):
    store = ResultsStore(tmp_path)
    rid = store.claim_run("a", 0, 0, "h", seed=0)
    store.fail_run(rid, "RuntimeError: loss is NaN")
    failed = store.runs(status="failed")
    assert list(failed["error"]) == ["RuntimeError: loss is NaN"]
    _fill(store, arm="b")
    _fill(store, arm="c")
    assert store.mark_stale({(run_id_for("b", 0, 0), "h1")}) == 1
    assert set(store.metrics()["arm"]) == {"b"}
    with pytest.raises(ValueError, match="accepted: running, done, failed, stale"):
        store.runs(status="finished")
    with pytest.raises(KeyError):
        store.fail_run("zzz/r0/f0", "x")


def test_splits_preprocessing_skipped(tmp_path):
    store = ResultsStore(tmp_path / "out")
    store.put_splits([(0, 0, "p1", "train"), (0, 0, "p2", "test"), (0, 1, "p1", "test")])
    store.put_splits([(0, 0, "p1", "train"), (0, 0, "p3", "val")])  # replaces (0, 0) only
    s = store.splits()
    assert sorted(map(tuple, s[["fold", "group_id", "role"]].values.tolist())) == [
        (0, "p1", "train"), (0, "p3", "val"), (1, "p1", "test")]
    store.put_preprocessing("pm", "abc", 1.25, 40)
    store.put_preprocessing("pm", "abc", 2.5, 40)
    assert store.preprocessing()[["arm", "seconds", "n_images", "mode"]].values.tolist() == [["pm", 2.5, 40, "cached"]]
    store.put_skipped([{"item": "v1.mp4", "reason": "truncated"}])
    assert store.skipped() == [{"item": "v1.mp4", "reason": "truncated"}]


def test_readonly_and_bad_files(tmp_path):
    with pytest.raises(StoreError, match="no results store here"):
        ResultsStore(tmp_path / "none", readonly=True)
    bad = tmp_path / "x.sqlite"
    bad.write_text("not a database at all, just text" * 10)
    with pytest.raises(StoreError, match="not a results store"):
        ResultsStore(bad)
    _fill(ResultsStore(tmp_path))
    ro = ResultsStore(tmp_path, readonly=True)
    assert len(ro.metrics()) == 3
    with pytest.raises(sqlite3.OperationalError):
        ro.set_meta(x=1)


def _frame(sample_id: str, label: int, cam: bool = True) -> dict:
    rng = np.random.default_rng(len(sample_id) + label)
    return {"sample_id": sample_id, "label": label, "title": f"class {label}\n{sample_id}",
            "raw": rng.integers(0, 256, (6, 5), dtype=np.uint8),
            "processed": rng.random((6, 5), dtype=np.float32),
            "cam": rng.random((6, 5), dtype=np.float32) if cam else None}


def test_explanations_round_trip_replace_and_drop(tmp_path):
    store = ResultsStore(tmp_path)
    frames = [_frame("s2", 0), _frame("s1", 1, cam=False)]
    store.put_explanations("pm", "key-1", frames, checkpoint_hash="c1", seconds=0.5)
    store.put_explanations("gone", "key-g", [_frame("s2", 0)], note="no checkpoint saved")
    e = store.explanations()
    assert list(e.columns) == ["arm", "position", "sample_id", "label", "title", "raw", "processed", "cam"]
    pm = e[e["arm"] == "pm"]
    assert list(pm["sample_id"]) == ["s2", "s1"] and list(pm["position"]) == [0, 1]  # display order kept
    for (_, row), f in zip(pm.iterrows(), frames):
        assert row["raw"].dtype == np.uint8 and np.array_equal(row["raw"], f["raw"])
        assert row["processed"].dtype == np.float32 and np.array_equal(row["processed"], f["processed"])
        assert row["title"] == f["title"] and row["label"] == f["label"]
    assert np.array_equal(pm.iloc[0]["cam"], frames[0]["cam"]) and pm.iloc[1]["cam"] is None
    arms = store.explanation_arms().set_index("arm")
    assert arms.loc["pm", "key"] == "key-1" and arms.loc["pm", "checkpoint_hash"] == "c1"
    assert arms.loc["gone", "note"] == "no checkpoint saved" and arms.loc["pm", "note"] is None
    # a new key replaces every frame of the arm (nothing stale), in one transaction
    store.put_explanations("pm", "key-2", [_frame("s3", 1)], checkpoint_hash="c2")
    pm = store.explanations().query("arm == 'pm'")
    assert list(pm["sample_id"]) == ["s3"]
    assert store.explanation_arms().set_index("arm").loc["pm", "key"] == "key-2"
    # arms no longer in the suite are dropped
    assert store.keep_explanations(["pm"]) == 1
    assert set(store.explanations()["arm"]) == {"pm"} and list(store.explanation_arms()["arm"]) == ["pm"]
    with pytest.raises(sqlite3.IntegrityError):  # the same frame twice: the arm's old rows stay
        store.put_explanations("pm", "key-3", [_frame("s1", 1), _frame("s1", 1)])
    assert list(store.explanations()["sample_id"]) == ["s3"]
    assert store.explanation_arms().set_index("arm").loc["pm", "key"] == "key-2"


def test_explanations_of_a_store_written_before_they_existed(tmp_path):
    old = tmp_path / "results.sqlite"
    _fill(ResultsStore(tmp_path))
    conn = sqlite3.connect(old)
    conn.executescript("DROP TABLE explanations; DROP TABLE explanation_arms;")
    conn.close()
    ro = ResultsStore(tmp_path, readonly=True)  # read-only: nothing is migrated, the reads are empty
    assert ro.explanations().empty and ro.explanation_arms().empty
    assert "cam" in ro.explanations().columns and "note" in ro.explanation_arms().columns
    ro.close()
    store = ResultsStore(tmp_path)  # a writer migrates (CREATE TABLE IF NOT EXISTS), results kept
    store.put_explanations("baseline", "k", [_frame("s1", 1)])
    assert len(store.explanations()) == 1 and len(store.metrics()) == 3
