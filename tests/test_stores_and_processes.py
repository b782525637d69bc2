"""Issue 21, section 1: a store belongs to one suite; workers die with their driver and an interrupted
driver leaves no run 'running'; the report shows the current suite's arms; ``--out`` / ``--cache-dir``
that cannot be written are one line each, before anything is trained.

Training is stubbed (:class:`test_resume_integrity.StubFit`), so most of these run in seconds; the
process tests start a real driver with two worker processes (this file is the driver's script)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from harness.runner import ForeignSuiteError, OutDirError, run_suite
from harness.store import ResultsStore
from harness.suite import load_suite
from test_resume_integrity import StubFit, _manifest, _run, _suite

ROOT = Path(__file__).resolve().parent.parent


def _other_suite(tmp_path: Path, name: str = "other") -> Path:
    """The suite of ``suite.yaml`` under another name, arm ``b`` replaced by ``c``."""
    data = yaml.safe_load((tmp_path / "suite.yaml").read_text())
    data["name"] = name
    data["arms"] = [{"name": "a"}, {"name": "c", "training": {"epochs": 2}}]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    from harness.cli import main

    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip().splitlines()


# --------------------------------------------------------------------------- a store belongs to one suite


def test_out_of_another_suite_is_refused_unless_replace_other_suite(tmp_path, capsys):
    _manifest(tmp_path)
    _suite(tmp_path)
    _run(tmp_path)  # suite 'resume': 4 runs done
    out, db = tmp_path / "out", tmp_path / "out" / "results.sqlite"
    before = db.read_bytes()
    other = load_suite(_other_suite(tmp_path))
    for dry_run in (False, True):
        fit = StubFit()
        with pytest.raises(ForeignSuiteError) as info:
            run_suite(other, out, cache_dir=tmp_path / "cache", report=False, progress=False, fit=fit,
                      dry_run=dry_run, echo=lambda line: None)
        message = str(info.value)
        assert "\n" not in message and fit.calls == 0
        assert f"--out {out}: holds the results of suite 'resume', not 'other'; nothing was touched" in message
        assert "--replace-other-suite" in message
    assert db.read_bytes() == before
    rc, err = _cli(["run", tmp_path / "other.yaml", "--out", out, "--dry-run"], capsys)
    assert rc == 2 and len(err) == 1 and "holds the results of suite 'resume', not 'other'" in err[0]
    assert db.read_bytes() == before

    lines: list[str] = []
    fit = StubFit()
    summary = run_suite(other, out, cache_dir=tmp_path / "cache", report=False, progress=False, fit=fit,
                        replace_other_suite=True, echo=lines.append)
    assert summary.ok and fit.calls == 2  # arm c; arm a is the same run under both names
    assert lines[0] == (f"--replace-other-suite: {out} held suite 'resume'; its runs that 'other' does not share "
                        "are kept but set aside as stale")
    with ResultsStore(out, readonly=True) as store:
        assert store.meta()["suite_name"] == "other"
        status = store.runs().groupby("arm")["status"].agg(set).to_dict()
    assert status == {"a": {"done"}, "b": {"stale"}, "c": {"done"}}


# --------------------------------------------------------------------------- removed arms are not reported


def test_report_shows_the_current_suites_arms_only(tmp_path):
    from harness.report import build_report
    from harness.report.inputs import read_store

    _manifest(tmp_path)
    _suite(tmp_path)
    _run(tmp_path)
    data = yaml.safe_load((tmp_path / "suite.yaml").read_text())
    data["arms"] = data["arms"][:1]  # arm b removed
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(data))
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        b_before = store.runs().query("arm == 'b'").drop(columns="status")
    _run(tmp_path)
    inputs = read_store(tmp_path / "out")
    assert inputs.arms == ["a"] and set(inputs.runs["arm"]) == {"a"}
    build_report(tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["arms"]) == ["a"]
    assert "'b'" not in (tmp_path / "out" / "report.html").read_text().replace("&#39;", "'")
    with ResultsStore(tmp_path / "out", readonly=True) as store:  # b's runs stay in the store
        b_after = store.runs().query("arm == 'b'")
    assert len(b_after) == 2 and b_after.drop(columns="status").equals(b_before)


# --------------------------------------------------------------------------- --out and --cache-dir


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` behave as on a read-only file system: creating a file or directory in it (or below
    it) fails with EACCES; reading still works. (Tests run as root, which ignores permission bits.)"""
    folder = folder.resolve()
    real_open, real_mkdir = os.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def inside(path) -> bool:
        resolved = Path(os.fsdecode(path)).resolve()
        return resolved == folder or folder in resolved.parents

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & writes and inside(path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_unwritable_out_and_cache_dir_are_one_line_before_anything(tmp_path, capsys, monkeypatch):
    import harness.runner

    _manifest(tmp_path)
    path = _suite(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("a run started")

    monkeypatch.setattr(harness.runner, "execute_run", no_training)
    cache = tmp_path / "cache"
    run = ["run", path, "--no-report", "--no-progress"]

    read_only = tmp_path / "ro"
    read_only.mkdir()
    with monkeypatch.context() as m:  # --out below a read-only directory
        _read_only(m, read_only)
        rc, err = _cli([*run, "--out", read_only / "sub", "--cache-dir", cache], capsys)
    assert rc == 2 and err == [f"--out {read_only / 'sub'}: {read_only} is not writable (Permission denied); nothing "
                               "was written; accepted: a new directory, or one holding a results store "
                               "(results.sqlite), that this user can write to"]
    with monkeypatch.context() as m:  # read-only --cache-dir
        _read_only(m, read_only)
        rc, err = _cli([*run, "--out", tmp_path / "o1", "--cache-dir", read_only / "cache"], capsys)
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"cache folder {read_only / 'cache'} (--cache-dir or $LUS_HARNESS_CACHE): {read_only} is "
                             "not writable (Permission denied); accepted: a folder this user can write to")
    (tmp_path / "cache.txt").write_text("not a folder")
    for where, problem in ((tmp_path / "cache.txt", "is a file, not a directory"),
                           (tmp_path / "cache.txt" / "sub", "is a file, so no directory can be made below it")):
        rc, err = _cli([*run, "--out", tmp_path / "o2", "--cache-dir", where], capsys)
        assert rc == 2 and len(err) == 1 and f"cache folder {where} " in err[0] and problem in err[0]
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()

    # an existing store on a read-only file system: one line, not "not a results store (unable to open ...)"
    monkeypatch.undo()
    _run(tmp_path)
    with monkeypatch.context() as m:
        _read_only(m, tmp_path / "out")
        rc, err = _cli([*run, "--out", tmp_path / "out", "--cache-dir", cache], capsys)
    assert rc == 2 and len(err) == 1 and f"--out {tmp_path / 'out'}: {tmp_path / 'out'} is not writable" in err[0]


def test_out_into_a_folder_of_other_files_is_refused(tmp_path, capsys):
    _manifest(tmp_path)
    path = _suite(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("<p>my own report</p>")
    for extra in ([], ["--dry-run"]):
        rc, err = _cli(["run", path, "--out", mine, "--cache-dir", tmp_path / "cache", "--no-progress", *extra],
                       capsys)
        assert rc == 2 and err == [f"--out {mine}: a directory holding other files (report.html) and no results store; "
                                   "nothing was written (they would be overwritten); accepted: a new or empty "
                                   "directory, or one holding a results store (results.sqlite)"]
    assert sorted(p.name for p in mine.iterdir()) == ["report.html"]
    assert (mine / "report.html").read_text() == "<p>my own report</p>"


# --------------------------------------------------------------------------- processes


class SlowFit:
    """A fit that leaves a file named after its process in ``folder`` and then waits (it is killed first)."""

    def __init__(self, folder: str):
        self.folder = folder

    def __call__(self, *args, **kwargs):
        Path(self.folder, str(os.getpid())).touch()
        time.sleep(600)
        raise AssertionError("not killed")


def _gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids among ``pids`` still running (zombies count as gone) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _start_driver(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """This file as a driver (``harness run``, 2 workers; its stderr in ``tmp_path/driver.err``), once both
    workers are inside a run: (process, worker pids)."""
    _manifest(tmp_path)
    _suite(tmp_path)
    started = tmp_path / "started"
    started.mkdir()
    with open(tmp_path / "driver.err", "w") as err:
        proc = subprocess.Popen([sys.executable, __file__, str(tmp_path), str(started)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 240
    while len(list(started.iterdir())) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the driver did not start two runs (exit status {proc.poll()})")
        time.sleep(0.2)
    workers = sorted(int(p.name) for p in started.iterdir())
    assert {c.pid for c in psutil.Process(proc.pid).children()} >= set(workers)
    return proc, workers


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_workers_die_with_their_driver(tmp_path, how):
    proc, workers = _start_driver(tmp_path)
    try:
        proc.send_signal(getattr(signal, how))
        proc.wait(timeout=60)
        assert _gone(workers) == []
        # killed by -9: the signal's status; SIGTERM: the driver cleans up and exits 128 + 15 (Ctrl-C: 130)
        assert proc.returncode == (-signal.SIGKILL if how == "SIGKILL" else 143)
    finally:
        for pid in _gone(workers, timeout=0):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        status = store.runs()["status"].tolist()
    if how == "SIGKILL":  # nothing can run in a process killed with -9: its claims stay, redone next time
        assert status == ["running"] * 4
    else:  # SIGTERM cleans up like Ctrl-C: the claimed runs are released, none stays 'running'
        assert status == ["interrupted"] * 4
        assert (tmp_path / "driver.err").read_text().strip().splitlines()[-1] == \
            "interrupted: finished runs are saved; run the same command again to resume"
    summary, fit, lines = _run(tmp_path)  # and a resume redoes them
    assert summary.ok and fit.calls == 4 and "4 runs redone: they were interrupted before they finished " \
        "(Ctrl-C, SIGTERM or kill -9)" in lines


class _InterruptedFit(StubFit):
    """Ctrl-C in the middle of the second run."""

    def __call__(self, *args, **kwargs):
        if self.calls == 1:
            raise KeyboardInterrupt
        return super().__call__(*args, **kwargs)


def test_ctrl_c_releases_the_claimed_runs_and_keeps_the_finished_one(tmp_path):
    _manifest(tmp_path)
    _suite(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_suite(load_suite(tmp_path / "suite.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache", report=False,
                  progress=False, fit=_InterruptedFit(), echo=lambda line: None)
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        runs = store.runs().set_index("run_id")
        assert len(store.predictions()) > 0  # the finished run is kept
    assert runs["status"].tolist() == ["done", "interrupted", "interrupted", "interrupted"]
    assert set(runs["error"].iloc[1:]) == {"interrupted (Ctrl-C or SIGTERM)"}


def test_the_watchdog_ends_a_worker_whose_parent_is_gone(tmp_path):
    """The portable half of :func:`harness.executors.die_with_parent`, without the Linux parent-death signal."""
    worker = ("import os, time, harness.executors as e; e._set_parent_death_signal = lambda: False; "
              "e.die_with_parent(os.getppid(), interval=0.1); print(os.getpid(), flush=True); time.sleep(120)")
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {worker!r}], "
              "stdout=subprocess.PIPE, text=True); print(p.stdout.readline().strip(), flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    try:
        assert _gone([pid], timeout=0.5) == [pid]  # alive while its parent is
        proc.kill()
        proc.wait()
        assert _gone([pid]) == []
    finally:
        for left in _gone([pid], timeout=0):
            os.kill(left, signal.SIGKILL)


if __name__ == "__main__":  # the driver _start_driver kills: this file TMP STARTED, as `harness run` with SlowFit
    import functools

    import harness.runner
    from harness.cli import main

    work, started = Path(sys.argv[1]), sys.argv[2]
    harness.runner.run_suite = functools.partial(run_suite, fit=SlowFit(started))  # cmd_run imports it when called
    os.cpu_count = lambda: 2  # two workers, also on a machine of one core (cmd_run caps them at its cores)
    sys.exit(main(["run", str(work / "suite.yaml"), "--out", str(work / "out"), "--cache-dir", str(work / "cache"),
                   "--workers", "2", "--no-report", "--no-progress"]))
