"""Issue 15, items 3, 5-9: every check that needs no training fails before the first run (in
``validate`` and ``--dry-run`` too) with one line; one-line errors instead of tracebacks; a
per-phase dry-run estimate with its load; one log line per finished run outside a terminal; and
the two filter items done in diffusion_filters (5: no silent NaN, 7: NLM differentiable)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import harness.prechecks
from harness.cli import main
from harness.suite import SuiteError, load_suite

BASE = {
    "name": "pre", "seed": 0,
    "data": {"source": "simulated", "patients": 6, "frames_per_patient": 2, "image_size": 16},
    "model": {"pretrained": "none"}, "training": {"epochs": 1, "batch_size": 4},
    "evaluation": {"folds": 2}, "report": {"gradcam": False},
    "arms": [{"name": "baseline"}],
}


class StubFit:
    """A fit that trains nothing (probabilities from the labels)."""

    def __call__(self, model_cfg, train_cfg, data, seed, on_the_fly=None, want_state_dict=False, **kw):
        from harness.training import FitDiagnosis, FitResult

        probs = np.clip(0.3 + 0.4 * data.test_y, 0.01, 0.99).astype(float)
        return FitResult(probs, {}, [], {}, 1, "cpu", FitDiagnosis("ok", "stub", 0.69, None, 0.1, None, None))


def write(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.update(changes)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_line(capsys, code: int, argv: list[str]) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --------------------------------------------------------------------------- item 3


@pytest.mark.parametrize("override, message", [
    ("model.num_classes=3", "model.num_classes: 3 classes: the harness trains and scores binary"),
    ("seed=-1", "seed: -1 is out of range; accepted: an integer from 0 to 4294967295"),
    ("seed=1e23", "seed: 1e+23 is not a seed; accepted: an integer"),  # 1e23 is a number, as 1.0e+23
    ("seed=1.0e+23", "seed: 1e+23 is not a seed"),
    ("arms.0.preprocess=[{gaussian: {sigma: 1e30}}]", "arms[0].preprocess[0].gaussian.sigma"),
    ("arms.0.preprocess=[{gaussian: {sigma: 1e7}}]", "arms[0].preprocess[0].gaussian.sigma"),
    ("arms.0.preprocess=[{perona_malik: {iterations: 1000000000, kappa: 0.1, step: 0.2}}]",
     "arms[0].preprocess[0].perona_malik.iterations"),
    ("arms.0.preprocess=[{coherence_enhancing: {iterations: 2, step: 0.2, sigma: '1', rho: 2.0}}]",
     "arms[0].preprocess[0].coherence_enhancing.sigma"),
    ("arms.0.preprocess=[{edge_enhancing: {iterations: 2, step: 0.2, sigma: true, lam: 0.05}}]",
     "arms[0].preprocess[0].edge_enhancing.sigma"),
])
def test_bad_suites_fail_validate_and_dry_run_in_one_line(tmp_path, capsys, override, message):
    path = write(tmp_path)
    assert message in one_line(capsys, 2, ["validate", str(path), "--set", override])
    assert message in one_line(capsys, 2, ["run", str(path), "--set", override, "--dry-run",
                                           "--cache-dir", str(tmp_path / "c")])


def test_cuda_without_a_gpu_and_stencil_larger_than_the_frames(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(harness.prechecks, "_cuda_available", lambda: False)
    arms = [{"name": "baseline", "training": {"device": "cuda"}},
            {"name": "nlm", "preprocess": [{"nonlocal_means": {"patch_size": 7, "search_size": 41, "h": 0.1}}]}]
    path = write(tmp_path, arms=arms)
    for argv in (["validate", str(path)], ["run", str(path), "--dry-run", "--cache-dir", str(tmp_path / "c")],
                 ["run", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2, err
        assert "arms[1].preprocess[0].nonlocal_means: image of size 16x16 is smaller than the stencil; minimum size is " \
               "24x24" in err[0]
        assert "arms[0].training.device: cuda, but this machine has no CUDA device" in err[1]
    assert not (tmp_path / "out" / "results.sqlite").exists()  # nothing was written before the checks


# --------------------------------------------------------------------------- item 6


def test_one_line_instead_of_tracebacks(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: t\nseed: 0\ndescription: caf\xe9\n")
    assert one_line(capsys, 2, ["validate", str(bad)]).endswith(
        "line 3: not UTF-8 text (byte 0xe9 at offset 32); accepted: a UTF-8 encoded YAML file")
    dup = tmp_path / "dup.yaml"
    dup.write_text("name: a\nseed: 0\nname: b\n")
    assert "line 3, column 1: invalid YAML: duplicate key 'name' (first at line 1)" in one_line(
        capsys, 2, ["validate", str(dup)])
    path = write(tmp_path)
    assert "empty key in 'training..epochs'" in one_line(capsys, 2, ["validate", str(path), "--set",
                                                                     "training..epochs=2"])
    with pytest.raises(SuiteError, match="empty key"):
        load_suite(path, ["training.epochs.=2"])


def test_damaged_store_exits_2_in_one_line(tmp_path, capsys):
    from harness.store import ResultsStore

    store = ResultsStore(tmp_path / "r")
    for i in range(300):
        store.claim_run("a", 0, i, "h" * 50, seed=0)
    store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db = tmp_path / "r" / "results.sqlite"
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 20000] = np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes()
    db.write_bytes(bytes(raw))
    for argv in (["status", str(tmp_path / "r")], ["report", str(tmp_path / "r")]):
        assert "the results store is damaged" in one_line(capsys, 2, argv)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.sqlite").write_bytes(b"not sqlite at all" * 100)
    assert "not a results store" in one_line(capsys, 2, ["status", str(tmp_path / "junk")])


@pytest.mark.parametrize("missing", ["NaN", "nan", "NA", "null", "None", "N/A"])
def test_nan_group_id_is_missing_not_a_patient(tmp_path, missing):
    from PIL import Image

    from harness.data import DataError, ManifestData, load_frames

    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"i{i}.png")
    (tmp_path / "m.csv").write_text(f"file,label,patient\ni0.png,yes,p1\ni1.png,no,{missing}\n")
    cfg = ManifestData(source="manifest", path="m.csv", file_column="file", label_column="label",
                       group_column="patient", image_size=16)
    with pytest.raises(DataError, match=rf"row 3: empty 'patient' \('{missing}' means missing\)"):
        load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "c")


# --------------------------------------------------------------------------- item 8


def test_dry_run_estimate_per_phase_with_load(tmp_path, monkeypatch):
    import harness.estimate as est
    from harness.runner import run_suite

    monkeypatch.setattr(est, "TIMED_STEPS", 3)
    monkeypatch.setattr(est, "SCATTER", 1e9)  # busy by load only here (this test machine is shared)
    arms = [{"name": "baseline"},
            {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 80, "kappa": 0.1, "step": 0.2}}]}]
    suite = load_suite(write(tmp_path, arms=arms, report={"gradcam": True}))
    for load, busy in (((0.1, 0.1, 0.1), False), ((99.0, 99.0, 99.0), True)):
        monkeypatch.setattr(est.os, "getloadavg", lambda load=load: load)
        lines: list[str] = []
        run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "c", dry_run=True, echo=lines.append)
        text = "\n".join(lines)
        assert "per phase: preprocessing" in text and "training" in text and "evaluation" in text
        assert "explain" in text and "tuning: none configured" in text
        assert "median of 3 after 2 warm-up" in text
        assert "pm: filter timed at 8 iterations and scaled x10" in text
        assert f"measured under load average {load[0]:.2f}" in text
        assert ("warning: the machine is busy" in text) == busy
        assert ("on a quiet machine;" in text) == busy
    assert not (tmp_path / "out").exists()


def test_estimate_scales_huge_iterations_instead_of_running_them():
    from harness.estimate import _scaled_steps

    steps, factor = _scaled_steps([{"perona_malik": {"iterations": 10_000, "kappa": 0.1, "step": 0.2}},
                                   {"median": {"size": 3}}])
    assert steps[0]["perona_malik"]["iterations"] == 8 and factor == 1250


# --------------------------------------------------------------------------- item 9


def test_one_line_per_finished_run_outside_a_terminal(tmp_path, capsys):
    from harness.runner import run_suite

    suite = load_suite(write(tmp_path))
    lines: list[str] = []
    run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "c", report=False, progress=True, fit=StubFit(),
              echo=lines.append)
    runs = [line for line in lines if line.startswith("run ")]
    assert len(runs) == 2
    assert runs[0].startswith("run 1/2 baseline repeat 0 fold 0: frame roc_auc 1.000, ") and " s; ETA " in runs[0]
    assert runs[1].endswith("ETA done")
    assert "\r" not in capsys.readouterr().err


def test_the_progress_line_shows_the_primary_level() -> None:
    from types import SimpleNamespace

    from harness.runner import _RunLog

    lines: list[str] = []
    log = _RunLog(2, "roc_auc", lines.append, level="video")
    metrics = [{"level": "frame", "aggregation": "none", "metric": "roc_auc", "value": 0.6},
               {"level": "video", "aggregation": "max", "metric": "roc_auc", "value": 0.9},
               {"level": "video", "aggregation": "mean", "metric": "roc_auc", "value": 0.7}]
    log.finished("pm", 0, 1, SimpleNamespace(metrics=metrics, timings={"run_seconds": 12.0}))
    assert lines == ["run 1/2 pm repeat 0 fold 1: video roc_auc 0.700, 12.0 s; ETA " + lines[0].rsplit("ETA ", 1)[1]]


# --------------------------------------------------------------------------- items 5 and 7 (done in diffusion_filters)


@pytest.mark.parametrize("name, params", [
    ("srad", {"iterations": 2, "step": 0.1}),
    ("coherence_enhancing", {"iterations": 2, "step": 0.2, "sigma": 1.0, "rho": 2.0}),
])
def test_huge_finite_input_gives_finite_output_or_an_error_naming_the_filter(name, params):
    import diffusion_filters

    x = torch.full((1, 1, 16, 16), 1e30)
    x[..., 4:8, 4:8] = 0.0
    try:
        y = diffusion_filters.create(name, **params)(x)
    except ValueError as err:
        assert name in str(err)
    else:
        assert bool(torch.isfinite(y).all())


def test_eed_huge_lambda_error_names_the_filter_and_nlm_is_differentiable():
    import diffusion_filters

    with pytest.raises(ValueError, match="^edge_enhancing: lam="):
        diffusion_filters.edge_enhancing(torch.rand(1, 1, 16, 16), iterations=1, step=0.2, sigma=1.0, lam=1e30)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    diffusion_filters.nonlocal_means(x, patch_size=3, search_size=5, h=0.1).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_sqlite_import_kept():  # keeps the module's imports honest for linters
    assert sqlite3.sqlite_version
