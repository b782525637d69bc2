"""The command line: exit codes, one-line errors, validate / status / report / run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent

SUITE = {
    "name": "cli-tiny",
    "data": {"source": "simulated", "patients": 4, "frames_per_patient": 2, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"folds": 2},
    "arms": [{"name": "baseline"}],
}


@pytest.fixture
def suite_file(tmp_path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def test_validate_ok_and_bad(suite_file, capsys):
    assert main(["validate", str(suite_file)]) == 0
    assert "valid suite 'cli-tiny': 1 arms (baseline), 1 repeats x 2 folds" in capsys.readouterr().out
    assert main(["validate", str(suite_file), "--set", "training.epochs=0", "--set", "evaluation.folds=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"{suite_file}: training.epochs: Input should be greater than or equal to 1")
    assert err[1].startswith(f"{suite_file}: evaluation.folds: Input should be a valid integer")


def test_missing_suite_and_missing_results(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'none.yaml'}: file not found"
    assert main(["status", str(tmp_path)]) == 2
    assert "no results store here" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.sqlite here" in capsys.readouterr().err


def test_split_error_is_bad_input_before_training(suite_file, tmp_path, capsys):
    rc = main(["run", str(suite_file), "--set", "evaluation.folds=5", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["the data has 4 patients but evaluation.folds is 5; accepted: folds <= 4 (patients are never "
                   "split across folds)"]
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_bad_flags(suite_file, capsys):
    assert main(["run", str(suite_file), "--workers", "0"]) == 2
    assert "--workers 0: accepted: an integer >= 1" in capsys.readouterr().err
    assert main(["run", str(suite_file), "--address", "auto"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["run", str(suite_file), "--executor", "slurm"])
    assert info.value.code == 2


@pytest.mark.slow
def test_run_status_and_failed_exit_code(suite_file, tmp_path, capsys):
    """``python -m harness`` as a user runs it: a suite whose every run fails (a NaN loss: injected, since
    a learning rate that makes it NaN, e.g. 1e30, is refused before anything runs) exits 1, says why, and
    ``status`` lists the failures."""
    out = tmp_path / "out"
    nan_loss = ("import sys, harness.runner\n"
                "def run(*task):\n    raise FloatingPointError('training loss is NaN at epoch 1')\n"
                "harness.runner.execute_run = run\n"
                "from harness.cli import main\nsys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", nan_loss, "run", str(suite_file), "--out", str(out), "--cache-dir",
           str(tmp_path / "c"), "--no-progress", "--no-report"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "0 runs done, 0 already done, 2 failed" in proc.stdout
    assert "failed baseline/r0/f0: " in proc.stderr
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "suite cli-tiny" in text and "0 of 2 runs done" in text
    assert "failed baseline/r0/f0: " in text and "NaN" in text


def test_unavailable_weights_fail_before_any_run(suite_file, tmp_path, capsys, monkeypatch):
    """``pretrained: imagenet`` with no network/cache: one line, exit 2, no run claimed."""
    import harness.models

    def offline(cfg, in_chans=1):
        raise harness.models.ModelError("model.pretrained: imagenet weights could not be downloaded; offline, set "
                                        "model.pretrained to a local file")

    monkeypatch.setattr(harness.models, "check_weights", offline)
    rc = main(["run", str(suite_file), "--set", "model.pretrained=imagenet", "--out", str(tmp_path / "o"),
               "--cache-dir", str(tmp_path / "c"), "--no-progress", "--no-report"])
    assert rc == 2
    assert capsys.readouterr().err.strip().startswith("model.pretrained: imagenet weights could not be downloaded")
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_report_command_delegates_and_reports_failure(tmp_path, capsys, monkeypatch):
    import harness.report
    from harness.store import ResultsStore

    store = ResultsStore(tmp_path)
    store.set_meta(suite_config=SUITE)  # a store without its suite record is refused (exit 2) before building
    store.close()
    calls = []

    def fake_build(out_dir, output=None, summary=None, metrics=None):
        calls.append((Path(out_dir), output, summary, metrics))
        return Path(output or Path(out_dir) / "report.html")

    monkeypatch.setattr(harness.report, "build_report", fake_build)
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 0
    assert calls == [(tmp_path, tmp_path / "r.html", None, None)]
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'r.html'}"

    def broken(out_dir, output=None, **named):
        raise KeyError("roc_auc")

    monkeypatch.setattr(harness.report, "build_report", broken)
    assert main(["report", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == "report failed: KeyError: 'roc_auc'"


def test_status_columns_stay_apart(tmp_path: Path) -> None:
    """``interrupted`` (11 letters) and a long variant arm name do not run into their neighbours."""
    from harness.runner import status_lines
    from harness.store import ResultsStore

    with ResultsStore(tmp_path) as store:
        store.set_meta(suite_name="s", planned_runs=2)
        done = store.claim_run("conv-stem-reinit~untuned", 0, 0, "h", seed=0)
        store.finish_run(done, [], [], {}, None, [])
        store.release_runs([store.claim_run("baseline", 0, 1, "h", seed=1)], "SIGTERM")
    head, *rows = status_lines(tmp_path)[1:4]
    assert head.split() == ["arm", "done", "interrupted"]
    assert [r.split() for r in rows] == [["baseline", "0", "1"], ["conv-stem-reinit~untuned", "1", "0"]]


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    """`harness status DIR | head -1`: the closed pipe ends the command quietly (exit 141, as Unix tools)."""
    from harness.store import ResultsStore

    with ResultsStore(tmp_path) as store:
        store.set_meta(suite_name="s", planned_runs=1)
        store.claim_run("baseline", 0, 0, "h", seed=0)
    proc = subprocess.Popen([sys.executable, "-m", "harness", "status", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
