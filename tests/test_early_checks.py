"""Checks that came too late (issue 29; issue 28 section 3): each bad input below is one line naming the
key, file or flag and what is accepted, with exit status 2, before any data is loaded or anything trained;
a driver stopped by SIGTERM exits 143 (Ctrl-C: 130); a store of a newer schema is refused unread."""

from __future__ import annotations

import copy
import os
import signal
import sqlite3
import time

import numpy as np
import pytest
import torch

import harness.execute
import harness.runner
from harness.cli import main
from harness.data.config import CovidBluesData, ManifestData, SimulatedData
from harness.runner import DirectoryBusyError, run_suite
from harness.store import ResultsStore, StoreError
from harness.suite import SuiteError, TrainingConfig, load_suite
from test_refused_values import SUITE, one_line, write
from test_resume_integrity import StubFit, _manifest, _run, _suite


def _no_data(*args, **kwargs):
    raise AssertionError("the data was loaded")


# --------------------------------------------------------------------------- names (issue 28, section 3)

NAMES = [
    ("arms.0.name", "gauss\n", "arms[0].name: arm name 'gauss\\n' has characters outside letters, digits, '.', '_' "
                               "and '-' (it becomes a file name and appears in the report); accepted: those "
                               "characters only"),
    ("arms.0.name", "a" * 300, "arms[0].name: arm name 'aaaaaaaaaaaaaaaaaaaa'... is 300 characters long (it becomes "
                               "a file name); accepted: at most 100 characters"),
    ("arms.0.name", "-rf", "arms[0].name: arm name '-rf' starts with '-' (on a command line it reads as an option, "
                           "e.g. --arm -rf); accepted: a name that starts with a letter, a digit, '.' or '_'"),
    ("name", "tiny\n", "name: suite name 'tiny\\n' has characters outside letters, digits, '.', '_' and '-' (it "
                       "becomes a file name and appears in the report); accepted: those characters only"),
    ("name", "-" + "x" * 5, "name: suite name '-xxxxx' starts with '-'"),
    ("evaluation.external", {"-ext": SUITE["data"]}, "evaluation.external: external set name '-ext' starts with '-'"),
]


def _with(key: str, value) -> dict:
    data = copy.deepcopy(SUITE)
    node, parts = data, key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    return data


@pytest.mark.parametrize("key, value, line", NAMES, ids=["newline", "300-chars", "dash", "suite-newline",
                                                          "suite-dash", "external-dash"])
def test_names_that_cannot_be_file_names_or_flag_values_are_refused(tmp_path, capsys, key, value, line):
    path = write(tmp_path, _with(key, value))
    assert one_line(capsys, ["validate", str(path)]).startswith(f"{path}: {line}")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert len(info.value.lines) == 1 and info.value.lines[0].startswith(f"{path}: {line}")


def test_a_name_of_100_characters_is_accepted_and_its_files_fit(tmp_path):
    name = "a" * 100
    suite = load_suite(write(tmp_path, _with("arms.0.name", name)))
    assert suite.arms[0].name == name
    # the longest file name it becomes: a variant's checkpoint, well below 255 bytes
    assert len(f"{name}~untuned.safetensors".encode()) < 255


# --------------------------------------------------------------------------- batch size

def test_batch_size_1_is_refused_before_the_data(tmp_path, capsys, monkeypatch):
    path = write(tmp_path)
    why = "batch_size 1 cannot train: BatchNorm needs more than one image per training batch (the first run " \
          "would fail); accepted: an integer from 2 to 4096"
    assert one_line(capsys, ["validate", str(path), "--set", "training.batch_size=1"]) == \
        f"{path}: training.batch_size: {why}"
    assert one_line(capsys, ["validate", str(path), "--set", "arms.1.training={batch_size: 1}"]) == \
        f"{path}: arms[1].training.batch_size: {why}"
    assert one_line(capsys, ["validate", str(path), "--set", "training.batch_size=0"]) == \
        f"{path}: training.batch_size: Input should be greater than or equal to 2 (got 0); accepted: an integer " \
        "from 2 to 4096"
    monkeypatch.setattr(harness.runner, "load_suite_frames", _no_data)
    assert one_line(capsys, ["run", str(path), "--set", "training.batch_size=1", "--out", str(tmp_path / "o"),
                             "--cache-dir", str(tmp_path / "c")]) == f"{path}: training.batch_size: {why}"
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="batch_size 1 cannot train"):
        TrainingConfig(batch_size=1)
    assert TrainingConfig(batch_size=2).batch_size == 2


# --------------------------------------------------------------------------- report.strata

def test_validate_checks_report_strata_against_the_columns_of_the_data(tmp_path, capsys):
    path = write(tmp_path)
    label = load_suite(path).source_path
    simulated = ("patient, b_line_count, confluent, speckle, speckle_level, b_line_contrast, depth_cm, "
                 "pleura_depth_cm, gain_db, probe")
    assert one_line(capsys, ["validate", str(path), "--set", "report.strata=[nonexistent]"]) == \
        f"{label}: report.strata: ['nonexistent'] not in the data's metadata; accepted: {simulated}"
    assert main(["validate", str(path), "--set", "report.strata=[speckle_level, gain_db]"]) == 0
    assert "valid suite 'refuse'" in capsys.readouterr().out

    covid = ["--set", "data={source: covid-blues, path: nowhere}"]
    assert one_line(capsys, ["validate", str(path), *covid, "--set", "report.strata=[site]"]) == \
        f"{label}: report.strata: ['site'] not in the data's metadata; accepted: severity, blue_point, pcr, patient"
    assert main(["validate", str(path), *covid, "--set", "report.strata=[pcr]"]) == 0
    capsys.readouterr()

    # a manifest keeps the columns data.metadata_columns lists; one that only the CSV has is named as such
    _manifest(tmp_path)
    manifest = _suite(tmp_path)
    label = load_suite(manifest).source_path
    assert one_line(capsys, ["validate", str(manifest), "--set", "report.strata=[patient, site]"]) == \
        f"{label}: report.strata: ['patient', 'site'] not in the data's metadata (patient: in the CSV; list them " \
        "in data.metadata_columns); accepted: (no metadata columns)"
    assert main(["validate", str(manifest), "--set", "data.metadata_columns=[patient]",
                 "--set", "report.strata=[patient]"]) == 0


def test_the_columns_validate_knows_are_the_ones_the_loaders_write(tmp_path):
    from harness.data import covid_blues, load_frames
    from harness.data.columns import COVID_BLUES_COLUMNS, metadata_columns

    sim = SimulatedData(patients=2, frames_per_patient=1, image_size=16)
    frames = load_frames(sim, base_dir=tmp_path, cache_dir=tmp_path / "c", seed=0)
    assert list(frames.metadata.columns) == metadata_columns(sim)
    _manifest(tmp_path)
    cfg = ManifestData(path="data/labels.csv", label_column="b_lines", group_column="patient",
                       metadata_columns=["patient"], image_size=16)
    frames = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "c")
    assert list(frames.metadata.columns) == metadata_columns(cfg) == ["patient"]
    root = tmp_path / "cb"  # COVID-BLUES: its items' metadata, read from a fake layout (no video is decoded)
    (root / "lus_videos").mkdir(parents=True)
    (root / "severity.csv").write_text("video_file,Severity Score,A-lines,B-lines,comments\npatient_1_L1,2.0,no,yes,\n")
    (root / "clinical_variables.csv").write_text("patient_id,cov_test\n1,1\n")
    items, _ = covid_blues.read_items(root)
    assert list(items[0].metadata) == list(COVID_BLUES_COLUMNS) == metadata_columns(CovidBluesData())


# --------------------------------------------------------------------------- harness recipe flags

RECIPE = {"name": "recipe", "seed": 0,
          "data": {"source": "simulated", "patients": 16, "frames_per_patient": 3, "image_size": 32},
          "model": {"pretrained": "none"}, "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
          "evaluation": {"folds": 4}, "arms": [{"name": "baseline"}]}


@pytest.mark.parametrize("flags, line", [
    (["--inner-folds", "1"], "--inner-folds 1: too few to score on; accepted: an integer >= 2 (patient-grouped "
                             "folds of the outer training part)"),
    (["--inner-folds", "0"], "--inner-folds 0: too few to score on; accepted: an integer >= 2"),
    (["--inner-folds", "-3"], "--inner-folds -3: too few to score on; accepted: an integer >= 2"),
    (["--inner", "4"], "--inner 4: out of range; accepted: 0..3 (--inner-folds is 4)"),
    (["--inner", "-1", "--inner", "1"], "--inner -1: out of range; accepted: 0..3 (--inner-folds is 4)"),
    (["--repeat", "1"], "--repeat 1: out of range; accepted: 0..0 (evaluation.repeats is 1)"),
    (["--fold", "4"], "--fold 4: out of range; accepted: 0..3 (evaluation.folds is 4)"),
    (["--fold", "-1"], "--fold -1: out of range; accepted: 0..3 (evaluation.folds is 4)"),
    (["--arm", "nope"], "--arm nope: not an arm of the suite; accepted: baseline"),
    (["--inner-seed", "-5"], "--inner-seed -5: negative; accepted: an integer >= 0"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_recipe_flags_out_of_range_are_one_line_before_the_data(tmp_path, capsys, monkeypatch, flags, line):
    from harness.recipe import score_recipe

    monkeypatch.setattr(harness.execute, "load_suite_frames", _no_data)
    path = write(tmp_path, RECIPE)
    assert one_line(capsys, ["recipe", str(path), "--cache-dir", str(tmp_path / "c"), *flags]).startswith(line)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="--inner-folds 1: too few"):  # the function refuses it too
        score_recipe(load_suite(path), "baseline", inner_folds=1, cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- a busy --out

def test_a_busy_out_is_refused_before_the_data_is_loaded(tmp_path, capsys, monkeypatch):
    _manifest(tmp_path)
    path = _suite(tmp_path)
    _run(tmp_path)
    out = tmp_path / "out"
    other = harness.runner._lock_out_dir(out)  # another driver writing into out (its lock, its pid)
    try:
        with monkeypatch.context() as m:
            m.setattr(harness.runner, "load_suite_frames", _no_data)
            fit = StubFit()
            with pytest.raises(DirectoryBusyError) as info:
                run_suite(load_suite(path), out, cache_dir=tmp_path / "cache", report=False, progress=False, fit=fit,
                          echo=lambda line: None)
            assert str(info.value) == (f"{out}: another 'harness run' (pid {os.getpid()}) is writing here; wait for "
                                       "it or choose another --out") and fit.calls == 0
            assert one_line(capsys, ["run", str(path), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) \
                == str(info.value)
        summary, fit, _ = _run(tmp_path, dry_run=True)  # a dry run takes no lock
        assert summary.planned == 4 and fit.calls == 0
    finally:
        other.close()
    summary, _, _ = _run(tmp_path)  # the lock released: the next driver runs
    assert summary.ok and summary.skipped == 4


# --------------------------------------------------------------------------- SIGTERM: 143, Ctrl-C: 130

@pytest.mark.parametrize("how, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_driver_stopped_by_sigterm_exits_143_and_by_ctrl_c_130(tmp_path, capsys, monkeypatch, how, code):
    @harness.runner._sigterm_as_interrupt
    def stopped(*args, **kwargs):  # a driver that receives the signal while it runs
        os.kill(os.getpid(), getattr(signal, how))
        time.sleep(5)
        raise AssertionError("not stopped")

    monkeypatch.setattr(harness.runner, "run_suite", stopped)
    path = write(tmp_path)
    assert one_line(capsys, ["run", str(path), "--out", str(tmp_path / "o")], code=code) == \
        "interrupted: finished runs are saved; run the same command again to resume"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the driver's only


# --------------------------------------------------------------------------- a store of a newer schema

def test_a_store_of_a_newer_schema_is_refused_in_one_line_and_left_as_it_is(tmp_path, capsys, monkeypatch):
    from harness.store import SCHEMA_VERSION

    _manifest(tmp_path)
    path = _suite(tmp_path)
    _run(tmp_path)
    out, db = tmp_path / "out", tmp_path / "out" / "results.sqlite"
    with ResultsStore(out, readonly=True) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # set when created
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    line = (f"{db}: written by a newer version of the harness (store schema {SCHEMA_VERSION + 1}; this checkout reads "
            f"schema {SCHEMA_VERSION} and older); nothing was written to it; accepted: a newer checkout of the "
            "harness, or another --out")
    monkeypatch.setattr(harness.runner, "load_suite_frames", _no_data)  # refused before the data too
    for argv in (["run", str(path), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
                 ["run", str(path), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--dry-run"],
                 ["status", str(out)], ["report", str(out)]):
        assert one_line(capsys, argv) == line, argv
    for readonly in (False, True):
        with pytest.raises(StoreError) as info:
            ResultsStore(out, readonly=readonly)
        assert str(info.value) == line
    assert db.read_bytes() == before


def test_a_store_from_before_the_schema_version_is_read_and_migrated(tmp_path):
    from harness.store import SCHEMA_VERSION

    _manifest(tmp_path)
    _suite(tmp_path)
    _run(tmp_path)
    db = tmp_path / "out" / "results.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 0")  # as every store written before the version was recorded
    conn.commit()
    conn.close()
    with ResultsStore(db, readonly=True) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 0 and len(store.runs()) == 4
    summary, fit, _ = _run(tmp_path)
    assert summary.ok and summary.skipped == 4 and fit.calls == 0
    with ResultsStore(db, readonly=True) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --------------------------------------------------------------------------- a final batch of one image

def test_a_final_batch_of_one_image_joins_the_one_before_and_is_counted():
    from harness.suite import ModelConfig
    from harness.training import RunData, fit_evaluate
    from harness.training.data import batches

    g = torch.Generator().manual_seed(0)
    assert [len(b) for b in batches(17, 8, torch.zeros(17, dtype=torch.long), "none", g)] == [8, 9]
    # without a trailing single image the batches are the plain seeded permutation, as before
    plain = batches(16, 8, torch.zeros(16, dtype=torch.long), "none", torch.Generator().manual_seed(0))
    expected = torch.randperm(16, generator=torch.Generator().manual_seed(0)).split(8)
    assert all(torch.equal(a, b) for a, b in zip(plain, expected, strict=True))

    rng = np.random.default_rng(0)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.random((n, 32, 32), dtype=np.float32), (np.arange(n) % 2).astype(np.int64)

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainingConfig(epochs=2, batch_size=4, device="cpu", num_threads=1)
        odd = fit_evaluate(ModelConfig(), cfg, RunData(*part(9), *part(4), *part(4)), seed=0)  # 4 + 4 + 1
        even = fit_evaluate(ModelConfig(), cfg, RunData(*part(8), *part(4), *part(4)), seed=0)
    finally:
        torch.set_num_threads(old)
    assert odd.timings["single_image_batches_merged"] == 2 and even.timings["single_image_batches_merged"] == 0
    assert odd.timings["train_images_per_second"] == pytest.approx(2 * 9 / odd.timings["train_seconds"])
    assert np.isfinite(odd.test_probs).all()
