"""The engine end to end on tiny suites (32 px, 1 epoch): paired design, store contents,
resumability (also after kill -9), determinism, failures, worker processes and Ray."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.runner import run_suite
from harness.store import ResultsStore
from harness.suite import load_suite

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"folds": 2, "repeats": 1},
    "arms": [{"name": "baseline"}],
}


def write_suite(tmp_path: Path, arms=None, **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    if arms is not None:
        data["arms"] = arms
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _filters_ready() -> bool:
    import diffusion_filters

    return hasattr(diffusion_filters, "Pipeline") and "perona_malik" in diffusion_filters.available()


def test_end_to_end_paired_design_and_resume(tmp_path, cache_dir):
    arms = [{"name": "baseline"},
            {"name": "stem", "model": {"stem": {"mode": "replace", "iterations": 2}}}]
    if _filters_ready():
        arms.append({"name": "pm", "preprocess": [{"perona_malik": {"iterations": 2, "kappa": 0.1, "step": 0.2}}]})
    suite = load_suite(write_suite(tmp_path, arms))
    out = tmp_path / "out"
    summary = run_suite(suite, out, cache_dir=cache_dir, report=False, progress=False)
    assert summary.ok, summary.failed
    assert summary.done == 2 * len(arms) and summary.skipped == 0
    store = ResultsStore(out, readonly=True)
    runs = store.runs()
    assert set(runs["status"]) == {"done"} and len(runs) == 2 * len(arms)
    assert all(lc["groups_in_train_and_test"] == 0 for lc in runs["leakage_check"])
    # paired: the same test samples and the same seed for every arm in each fold
    preds = store.predictions()
    for fold in (0, 1):
        per_arm = {arm: tuple(sorted(g["sample_id"])) for arm, g in preds[preds["fold"] == fold].groupby("arm")}
        assert len(set(per_arm.values())) == 1
        assert runs[runs["fold"] == fold]["seed"].nunique() == 1
    # every frame is tested exactly once per arm and repeat
    assert preds.groupby("arm")["sample_id"].nunique().tolist() == [18] * len(arms)
    assert len(preds) == 18 * len(arms)
    # metrics at frame and patient level (3 frames per patient)
    m = store.metrics()
    assert {"frame", "patient"} <= set(m["level"]) and len(m["metric"].unique()) == 10
    # timings, history, learned parameters, checkpoints
    timing = runs.iloc[0]["timings"]
    for key in ("train_seconds", "epoch_seconds", "inference_ms_per_image", "peak_rss_mb", "preprocess_seconds",
                "load_frames_seconds"):
        assert key in timing
    assert len(store.epochs()) == 2 * len(arms)
    stem_params = runs[runs["arm"] == "stem"].iloc[0]["learned_params"]
    assert stem_params, "the learnable stem's parameters are recorded"
    from safetensors.numpy import load_file

    for arm in [a["name"] for a in arms]:
        ckpt = runs[(runs["arm"] == arm) & (runs["fold"] == 0)].iloc[0]["checkpoint"]
        assert ckpt == f"checkpoints/{arm}.safetensors"
        assert len(load_file(str(out / ckpt))) > 10
    assert store.splits().groupby(["repeat", "fold"])["group_id"].nunique().tolist() == [6, 6]
    if _filters_ready():
        pp = store.preprocessing()
        assert pp["arm"].tolist() == ["pm"] and pp["n_images"].tolist() == [18] and pp["seconds"].iloc[0] > 0
    meta = store.meta()
    assert meta["suite_name"] == "tiny" and meta["planned_runs"] == 2 * len(arms)
    assert "packages" in meta["environment"]
    before = runs.set_index("run_id")["finished_at"].to_dict()
    store.close()

    # run again: nothing to do, nothing counted twice
    again = run_suite(suite, out, cache_dir=cache_dir, report=False, progress=False)
    assert again.done == 0 and again.skipped == 2 * len(arms)
    # change one arm: only its runs are redone, the others keep their results
    changed = load_suite(write_suite(tmp_path, arms), ["arms.1.model.stem.iterations=1"])
    third = run_suite(changed, out, cache_dir=cache_dir, report=False, progress=False)
    assert third.done == 2
    store = ResultsStore(out, readonly=True)
    after = store.runs().set_index("run_id")
    assert after.loc["baseline/r0/f0", "finished_at"] == before["baseline/r0/f0"]
    assert after.loc["stem/r0/f0", "finished_at"] > before["stem/r0/f0"]
    assert len(store.predictions()) == 18 * len(arms)


def test_deterministic_on_cpu_locally_and_in_worker_processes(tmp_path, cache_dir):
    """The same suite twice gives identical numbers; so do worker processes (with the same number
    of torch threads: a different thread count changes float summation order)."""
    suite = load_suite(write_suite(tmp_path), ["training.device=cpu", "training.num_threads=1"])
    values = []
    for out, workers in (("a", 1), ("b", 1), ("c", 2)):
        summary = run_suite(suite, tmp_path / out, cache_dir=cache_dir, report=False, progress=False,
                            workers=workers)
        assert summary.ok and summary.done == 2
        store = ResultsStore(tmp_path / out, readonly=True)
        values.append((store.metrics(), store.predictions()))
    for metrics, preds in values[1:]:
        assert metrics[["run_id", "level", "aggregation", "metric"]].equals(
            values[0][0][["run_id", "level", "aggregation", "metric"]])
        np.testing.assert_array_equal(metrics["value"], values[0][0]["value"])
        assert preds["sample_id"].tolist() == values[0][1]["sample_id"].tolist()
        np.testing.assert_array_equal(preds["prob"], values[0][1]["prob"])


class _FailFor:
    """A fit that raises for one arm, like a NaN loss would (picklable for worker processes)."""

    def __init__(self, arm_marker: int):
        self.arm_marker = arm_marker

    def __call__(self, model_cfg, train_cfg, data, seed, **kwargs):
        from harness.training import NonFiniteLossError, fit_evaluate

        if model_cfg.drop_rate == 0.5:
            raise NonFiniteLossError("training loss is NaN at epoch 0 step 1")
        return fit_evaluate(model_cfg, train_cfg, data, seed, **kwargs)


def test_failed_run_is_recorded_and_suite_goes_on(tmp_path, cache_dir, monkeypatch):
    import harness.report

    def broken_report(out_dir, output=None):
        raise RuntimeError("figure backend exploded")

    monkeypatch.setattr(harness.report, "build_report", broken_report)
    arms = [{"name": "baseline"}, {"name": "broken", "model": {"drop_rate": 0.5}}]
    suite = load_suite(write_suite(tmp_path, arms))
    summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=True, progress=False,
                        fit=_FailFor(0))
    assert not summary.ok and summary.done == 2
    # a report failure is said, and the results stay
    assert summary.report is None and summary.report_error == "report failed: RuntimeError: figure backend exploded"
    assert sorted(r for r, _ in summary.failed) == ["broken/r0/f0", "broken/r0/f1"]
    store = ResultsStore(tmp_path / "out", readonly=True)
    failed = store.runs(status="failed")
    assert failed["error"].str.startswith("NonFiniteLossError: training loss is NaN").all()
    assert set(store.metrics()["arm"]) == {"baseline"}
    # the failed runs are redone next time (here they fail again), the done ones are not
    again = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, fit=_FailFor(0))
    assert again.skipped == 2 and len(again.failed) == 2


def test_ray_executor_local_instance(tmp_path, cache_dir):
    ray = pytest.importorskip("ray")
    from harness.executors import ExecutorError

    suite = load_suite(write_suite(tmp_path))
    try:
        summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False,
                            executor="ray", ray_init={"num_cpus": 2})
    except ExecutorError as err:  # only a Ray that cannot start here skips this test
        pytest.skip(f"Ray failed to start: {err}")
    assert not ray.is_initialized()
    assert summary.ok and summary.done == 2
    store = ResultsStore(tmp_path / "out", readonly=True)
    assert set(store.runs()["status"]) == {"done"} and len(store.predictions()) == 18


def test_dry_run_plans_without_training(tmp_path, cache_dir):
    lines: list[str] = []
    suite = load_suite(write_suite(tmp_path))
    summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, dry_run=True, echo=lines.append)
    text = "\n".join(lines)
    assert "1 arms x 1 repeats x 2 folds = 2 runs (0 done, 2 to run)" in text
    assert "r0/f0:" in text and "estimated time:" in text
    assert summary.done == 0 and not (tmp_path / "out").exists()


def test_kill_minus_9_then_resume(tmp_path, cache_dir):
    """A driver killed with SIGKILL mid-suite: the next run redoes the interrupted run only."""
    arms = [{"name": n} for n in ("a", "b")]
    path = write_suite(tmp_path, arms)
    out = tmp_path / "out"
    env = {**os.environ, "LUS_HARNESS_CACHE": str(cache_dir)}
    cmd = [sys.executable, "-m", "harness", "run", str(path), "--out", str(out), "--no-report", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.sqlite"
    deadline = time.time() + 240
    done_before = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as conn:
                        done_before = conn.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if done_before >= 1:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done_before >= 1, "the suite did not get halfway"
    store = ResultsStore(out, readonly=True)
    first = store.runs().set_index("run_id")
    store.close()
    done = first[first["status"] == "done"]
    assert len(done) < 4 and (first["status"] == "running").any(), first["status"].tolist()

    rc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert rc.returncode == 0, rc.stderr
    assert f"{len(done)} of 4 runs already done" in rc.stdout
    store = ResultsStore(out, readonly=True)
    final = store.runs().set_index("run_id")
    assert (final["status"] == "done").all() and len(final) == 4
    for run_id in done.index:  # completed before the kill: kept, not redone
        assert final.loc[run_id, "finished_at"] == done.loc[run_id, "finished_at"]
        assert final.loc[run_id, "attempts"] == 1
    preds = store.predictions()
    assert len(preds) == 2 * 18 and not preds.duplicated(["run_id", "sample_id"]).any()
    m = store.metrics()
    assert not m.duplicated(["run_id", "level", "aggregation", "metric"]).any()


def test_second_driver_on_the_same_directory_is_refused(tmp_path, cache_dir):
    from harness.runner import DirectoryBusyError, _lock_out_dir

    out = tmp_path / "out"
    out.mkdir()
    held = _lock_out_dir(out)
    try:
        with pytest.raises(DirectoryBusyError, match=rf"another 'harness run' \(pid {os.getpid()}\) is writing"):
            run_suite(load_suite(write_suite(tmp_path)), out, cache_dir=cache_dir, report=False, progress=False)
    finally:
        held.close()
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # refused before anything was written (or loaded)


def test_time_estimate_uses_finished_runs(tmp_path):
    from harness.runner import Plan, PlannedRun, estimate_seconds

    suite = load_suite(write_suite(tmp_path))
    store = ResultsStore(tmp_path / "out")
    for fold, seconds in ((0, 10.0), (1, 20.0)):
        rid = store.claim_run("baseline", 0, fold, "h", seed=0)
        store.finish_run(rid, [], [], {"run_seconds": seconds}, {}, [])
    plan = Plan([PlannedRun("baseline", 1, f, "h2", False) for f in range(3)], {})
    seconds, basis = estimate_seconds(suite, plan, store)
    assert seconds == pytest.approx(45.0) and basis == "mean time of finished runs for baseline"
