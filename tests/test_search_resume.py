"""kill -9 in the middle of a study, then resume: no trial lost, none doubled, completed trials not redone,
the interrupted trial redone once with its parameters (harness.search.storage)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
BUDGET, INNER = 5, 2
KILL_AT_CALL = 2 * INNER + 1  # the second inner fit of trial 2: trials 0 and 1 are complete


class SlowStub:
    """Stub fit (picklable) that logs every call to a file and, at call ``hang_at``, writes a marker and hangs."""

    def __init__(self, log: Path, hang_at: int | None) -> None:
        self.log, self.hang_at, self.n = log, hang_at, 0

    def __call__(self, model_cfg, train_cfg, data, seed, on_the_fly=None, want_state_dict=False, **kw):
        from harness.training import FitDiagnosis, FitResult

        self.n += 1
        with open(self.log, "a") as fh:
            fh.write(json.dumps({"lr": train_cfg.lr, "epochs": train_cfg.epochs, "n_test": len(data.test_y)}) + "\n")
        if self.hang_at is not None and self.n == self.hang_at:
            (self.log.parent / "hanging").write_text(str(os.getpid()))
            time.sleep(600)
        rng = np.random.default_rng(int(train_cfg.lr * 1e7) + seed % 1000)
        probs = np.clip(0.5 + 0.2 * (data.test_y - 0.5) + rng.normal(0, 0.2, len(data.test_y)), 0.01, 0.99)
        return FitResult(probs, {}, [], {}, 1, "cpu", FitDiagnosis("ok", "stub", 0.69, None, 0.1, None, None))


def _tune(work: Path, hang_at: int | None) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from test_search_nested import _split, index_frames, make_suite

    from harness.search.nested import tune

    suite = make_suite(work, trials=BUDGET, inner_folds=INNER, sampler="tpe", pruner="none")
    frames = index_frames()
    _, record = tune(suite, suite.arms[0], frames, _split(suite, frames), 0, 0, seed=1,
                     cache_dir=str(work / "cache"), out_dir=str(work / "out"),
                     fit=SlowStub(work / f"calls-{'first' if hang_at else 'resume'}.jsonl", hang_at),
                     config_hash="h")
    return record


def _trials(work: Path) -> list[tuple]:
    import optuna

    path = next((work / "out" / "studies").glob("*.sqlite3"))
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return [(t.number, t.state.name, dict(t.params), t.value, dict(t.user_attrs)) for t in study.trials]



def _run_and_kill(out: Path) -> None:
    """Run this file's study in a subprocess on ``out`` and ``kill -9`` it once a trial hangs at KILL_AT_CALL."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(HERE), str(out), str(KILL_AT_CALL)], cwd=ROOT, env=env)
    try:
        deadline = time.time() + 240
        while not (out / "hanging").exists():
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.time() < deadline, "the study did not reach the kill point in time"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()

def test_kill_9_mid_study_then_resume(tmp_path):
    _run_and_kill(tmp_path)
    before = _trials(tmp_path)
    states = [s for _, s, *_ in before]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING"], states
    first_calls = (tmp_path / "calls-first.jsonl").read_text().splitlines()
    assert len(first_calls) == KILL_AT_CALL

    record = _tune(tmp_path, None)  # resume in this process
    after = _trials(tmp_path)
    # Completed trials are kept as they were and never trained again.
    assert after[:2] == before[:2]
    resume_calls = [json.loads(x) for x in (tmp_path / "calls-resume.jsonl").read_text().splitlines()]
    assert len(resume_calls) == (BUDGET - 2) * INNER
    # The interrupted trial failed and was redone exactly once, with its parameters.
    interrupted = after[2]
    assert interrupted[1] == "FAIL" and interrupted[4].get("interrupted") is True
    redo = [t for t in after if t[4].get("redo_of") == 2]
    assert len(redo) == 1 and redo[0][1] == "COMPLETE" and redo[0][2] == interrupted[2]
    assert resume_calls[0]["lr"] == interrupted[2]["training.lr"]
    # Exactly the budget counts: nothing lost, nothing doubled; trial 0 (the suite's) once.
    finished = [t for t in after if t[1] in ("COMPLETE", "PRUNED")]
    assert len(finished) == BUDGET == record["n_trials"]
    assert sum(t[4].get("origin") == "suite" for t in finished) == 1
    assert record["n_interrupted"] == 1 and record["interrupted_now"] == 1
    # A second resume does nothing.
    again = _tune(tmp_path, None)
    assert _trials(tmp_path) == after and again["params"] == record["params"]
    assert len((tmp_path / "calls-resume.jsonl").read_text().splitlines()) == (BUDGET - 2) * INNER


def test_a_resumed_study_samples_what_an_uninterrupted_one_would(tmp_path):
    """The sampler of the n-th counted trial is seeded by n: the kill changes nothing of the search."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    clean = tmp_path / "clean"
    clean.mkdir()
    _run_and_kill(resumed)
    a = _tune(resumed, None)
    b = _tune(clean, None)
    finished = [t for t in a["trials"] if t["state"] != "fail"]
    assert [t["params"] for t in finished] == [t["params"] for t in b["trials"]]
    assert a["params"] == b["params"] and a["inner_best"] == b["inner_best"]


if __name__ == "__main__":  # the process that gets killed
    _tune(Path(sys.argv[1]), int(sys.argv[2]))
