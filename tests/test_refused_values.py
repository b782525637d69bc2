"""Values that must be refused before anything runs (issue 21, section 2): each bad input gives one
line naming the file or key and what is accepted, with exit status 2, before any data is loaded or
any network trained; and the values YAML spells differently (``1e-1``) mean the same everywhere."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import harness.runner
from harness.cli import main
from harness.cv import SplitError, make_splits
from harness.suite import load_suite

SUITE = {
    "name": "refuse",
    "seed": 0,
    "data": {"source": "simulated", "patients": 6, "frames_per_patient": 2, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"folds": 2},
    "arms": [{"name": "baseline"},
             {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 2, "kappa": 0.1, "step": 0.2}}]}],
}


def write(tmp_path: Path, data: dict | None = None, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data or SUITE))
    return path


def one_line(capsys, argv: list[str], code: int = 2) -> str:
    """The single stderr line of ``harness argv`` (which must exit with ``code``)."""
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --------------------------------------------------------------------------- counts, sizes, floats, types

#: (override, the one line after "FILE: ") — every count, size and float key bounded, finite and typed.
BAD_VALUES = [
    ("data.patients=1e9", "data.patients: patients=1000000000.0; accepted: an integer from 2 to 10000"),
    ("data.patients=1000000000", "data.patients: patients=1000000000; accepted: an integer from 2 to 10000"),
    ("data.frames_per_patient=100000", "data.frames_per_patient: frames_per_patient=100000; accepted: an integer "
                                       "from 1 to 10000"),
    ("data.frames_per_video=true", "data.frames_per_video: frames_per_video=True; accepted: an integer from 1 to 10000"),
    ("data.image_size=4096", "data.image_size: image_size=4096; accepted: an integer from 16 to 1024"),
    ("data.seed=-1", "data.seed: Input should be greater than or equal to 0 (got -1); accepted: an integer from 0 to "
                     "4294967295, or null"),
    ("data.speckle='1'", "data.speckle: speckle='1'; accepted: 0 to 3"),
    ("data.depth_cm=true", "data.depth_cm: depth_cm=True; accepted: 4 to 30 cm"),
    ("data={source: simulated, patients: 10000, frames_per_patient: 1000, image_size: 64}",
     "data: patients x frames_per_patient = 10000000 frames of 64x64 px take 41 GB in memory; accepted: at most 16 GB"),
    ("data={source: covid-blues, frame_step: 1000000}", "data.frame_step: frame_step=1000000; accepted: an integer "
                                                        "from 1 to 10000"),
    ("data={source: covid-blues, max_frames_per_video: 1e9}", "data.max_frames_per_video: max_frames_per_video="
                                                              "1000000000.0; accepted: an integer from 1 to 10000, or null"),
    ("training.lr=.inf", "training.lr: Input should be a finite number (got inf); accepted: a finite number > 0 and "
                         "<= 1"),
    ("training.lr=1e30", "training.lr: Input should be less than or equal to 1 (got 1e+30); accepted: a finite number "
                         "> 0 and <= 1"),
    ("training.lr=.nan", "training.lr: Input should be a finite number (got nan); accepted: a finite number > 0"),
    ("training.weight_decay=1e30", "training.weight_decay: Input should be less than or equal to 1 (got 1e+30); "
                                   "accepted: a finite number from 0 to 1"),
    ("training.grad_clip_norm=.inf", "training.grad_clip_norm: Input should be a finite number (got inf); accepted: "
                                     "a finite number > 0 and <= 1000, or null"),
    ("training.diffusion_lr_multiplier=.inf", "training.diffusion_lr_multiplier: Input should be a finite number"),
    ("training.label_smoothing=-.inf", "training.label_smoothing: Input should be a finite number"),
    ("model.drop_rate=.nan", "model.drop_rate: Input should be a finite number (got nan); accepted: a finite number "
                             ">= 0 and < 1"),
    ("report.rope=1e9", "report.rope: Input should be less than or equal to 1 (got 1000000000.0); accepted: a finite "
                        "number from 0 to 1"),
    ("training.epochs=true", "training.epochs: Input should be a valid integer (got True); accepted: an integer from 1 "
                             "to 1000"),
    ("training.epochs=1e12", "training.epochs: Input should be a valid integer (got 1000000000000.0); accepted: an "
                             "integer from 1 to 1000"),
    ("training.epochs=1000000000000", "training.epochs: Input should be less than or equal to 1000 (got "
                                      "1000000000000); accepted: an integer from 1 to 1000"),
    ("training.batch_size=1000000", "training.batch_size: Input should be less than or equal to 4096"),
    ("training.warmup_epochs=1000000", "training.warmup_epochs: Input should be less than or equal to 1000"),
    ("training.bn_recalibration_images=1000000000", "training.bn_recalibration_images: Input should be less than or "
                                                    "equal to 100000"),
    ("training.num_threads=100000", "training.num_threads: Input should be less than or equal to 1024"),
    ("training.early_stopping_patience=false", "training.early_stopping_patience: Input should be a valid integer "
                                               "(got False); accepted: an integer from 1 to 1000, or null"),
    ("evaluation.folds=1000000", "evaluation.folds: Input should be less than or equal to 1000"),
    ("evaluation.repeats=1e9", "evaluation.repeats: Input should be a valid integer (got 1000000000.0); accepted: "
                               "an integer from 1 to 100"),
    ("arms.1.on_the_fly='yes'", "arms[1].on_the_fly: Input should be a valid boolean (got 'yes'); accepted: true or "
                                "false"),
    ("arms.1.on_the_fly=1", "arms[1].on_the_fly: Input should be a valid boolean (got 1); accepted: true or false"),
    ("training.augment='true'", "training.augment: Input should be a valid boolean (got 'true'); accepted: true or "
                                "false"),
    ("arms.0.training={epochs: true}", "arms[0].training.epochs: Input should be a valid integer (got True); "
                                       "accepted: an integer from 1 to 1000"),
    ("arms.0.training={lr: .inf}", "arms[0].training.lr: Input should be a finite number (got inf)"),
    ("training.lr='1e-3'", "training.lr: Input should be a valid number (got '1e-3'); accepted: a finite number > 0 "
                           "and <= 1 (a number in quotes is text: write it without quotes)"),
    ("training.lr=fast", "training.lr: Input should be a valid number (got 'fast'); accepted: a finite number > 0 and "
                         "<= 1"),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_values_are_refused_in_one_line_by_validate_and_dry_run(tmp_path, capsys, override, message):
    path = write(tmp_path)
    assert one_line(capsys, ["validate", str(path), "--set", override]).startswith(f"{path}: {message}")
    # the dry run refuses it too, before the data is loaded (patients: 1e9 crashed the simulator, exit 139)
    line = one_line(capsys, ["run", str(path), "--set", override, "--dry-run", "--cache-dir", str(tmp_path / "c")])
    assert line.startswith(f"{path}: {message}")
    assert not (tmp_path / "c").exists()


def test_strict_types_still_take_what_yaml_writes(tmp_path):
    suite = load_suite(write(tmp_path), ["training.lr=1", "arms.1.on_the_fly=true"])  # an integer is a number
    assert suite.training.lr == 1.0 and suite.training.epochs == 1 and suite.arms[1].on_the_fly is True
    assert suite.data.pleura_depth_cm == (1.5, 3.0)  # a list in YAML is accepted for the [min, max] pair
    assert load_suite(write(tmp_path), ["data.pleura_depth_cm=[1, 2]"]).data.pleura_depth_cm == (1.0, 2.0)


# --------------------------------------------------------------------------- 1e-1 is a number everywhere


def test_exponent_floats_without_a_dot_are_numbers_for_every_key(tmp_path):
    """YAML 1.1 reads ``1e-1`` as text; every key (suite, filter parameter, search range, --set) reads it
    as the number, as it reads ``1.0e-1``."""
    text = """
name: floats
data: {source: simulated, patients: 6, frames_per_patient: 2, image_size: 32, speckle: 1e0}
training: {epochs: 1, lr: 1e-3, weight_decay: 5E-2}
evaluation: {folds: 2}
search:
  trials: 2
  space:
    training.lr: {log_uniform: [1e-4, 1e-2]}
arms:
  - name: pm
    preprocess: [{perona_malik: {iterations: 2, kappa: 1e-1, step: 2e-1}}]
    search: {space: {preprocess.0.perona_malik.kappa: {log_uniform: [2e-2, 5e-1]}}}
"""
    path = tmp_path / "f.yaml"
    path.write_text(text)
    suite = load_suite(path)
    assert suite.training.lr == 1e-3 and suite.training.weight_decay == 0.05 and suite.data.speckle == 1.0
    assert suite.arms[0].preprocess[0]["perona_malik"] == {"iterations": 2, "kappa": 0.1, "step": 0.2}
    assert suite.search.space["training.lr"] == {"log_uniform": [1e-4, 1e-2]}
    assert suite.arms[0].search.space["preprocess.0.perona_malik.kappa"] == {"log_uniform": [0.02, 0.5]}
    tuned = load_suite(path, ["training.lr=1e-2", "arms.0.preprocess.0.perona_malik.kappa=2e-1"])
    assert tuned.training.lr == 0.01 and tuned.arms[0].preprocess[0]["perona_malik"]["kappa"] == 0.2


def test_a_quoted_number_is_text_for_filters_and_suite_keys_alike(tmp_path, capsys):
    path = write(tmp_path)
    line = one_line(capsys, ["validate", str(path), "--set", "arms.1.preprocess.0.perona_malik.kappa='1e-1'"])
    assert line.startswith(f"{path}: arms[1].preprocess[0].perona_malik.kappa: kappa='1e-1' is invalid; must be a "
                           "number")


# --------------------------------------------------------------------------- --workers, --bootstrap


def test_workers_beyond_the_cores_are_capped_with_one_warning(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake_run_suite(suite, out, **kw):
        seen.update(kw)
        return harness.runner.RunSummary(Path(out))

    monkeypatch.setattr(harness.runner, "run_suite", fake_run_suite)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    path = write(tmp_path)
    line = one_line(capsys, ["run", str(path), "--workers", "1000", "--dry-run"], code=0)
    assert line == ("warning: --workers 1000 > 2 cores on this machine: using 2 (more worker processes than cores "
                    "only compete for them)")
    assert seen["workers"] == 2
    assert main(["run", str(path), "--workers", "2", "--dry-run"]) == 0 and seen["workers"] == 2
    assert capsys.readouterr().err == ""
    # a Ray cluster has cores of its own: left alone
    assert main(["run", str(path), "--workers", "1000", "--executor", "ray", "--dry-run"]) == 0
    assert seen["workers"] == 1000 and capsys.readouterr().err == ""


def test_evaluate_bootstrap_is_bounded(tmp_path, capsys):
    data = write(tmp_path, SUITE["data"], "d.yaml")
    line = one_line(capsys, ["evaluate", str(tmp_path / "w.safetensors"), "--data", str(data), "--bootstrap",
                             "1000000000"])
    assert line.startswith("--bootstrap 1000000000: accepted: an integer from 0 to 100000 (more resamples do not "
                           "move a 95 % percentile interval")


# --------------------------------------------------------------------------- weights files


def _weights(tmp_path: Path, kind: str) -> Path:
    if kind == "text":
        path = tmp_path / "notes.pth"
        path.write_text("these are not weights\n")
    elif kind == "pickle":
        path = tmp_path / "pickled.pth"
        path.write_bytes(pickle.dumps({"conv_stem.weight": pd.Timestamp("2020-01-01")}))
    elif kind == "resnet18":
        import timm

        path = tmp_path / "resnet18.pth"
        torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    else:  # the suite's own network with a NaN tensor
        from harness.models import create_model, save_weights
        from harness.suite import ModelConfig

        state = create_model(ModelConfig()).state_dict()
        state["blocks.1.0.conv_dw.weight"] = torch.full_like(state["blocks.1.0.conv_dw.weight"], float("nan"))
        path = tmp_path / "nan.safetensors"
        save_weights(state, path)
    return path


WEIGHT_PROBLEMS = {
    "text": "with torch.load(weights_only=True)",
    "pickle": "with torch.load(weights_only=True)",
    "resnet18": "does not fit efficientnet_b0",
    "nan": "holds non-finite values (NaN or Inf) in tensor 'blocks.1.0.conv_dw.weight'; accepted: a weights file "
           "whose tensors are all finite",
}


@pytest.mark.parametrize("kind", list(WEIGHT_PROBLEMS))
def test_validate_reads_the_weights_and_run_checks_them_before_the_data(tmp_path, capsys, kind):
    weights = _weights(tmp_path, kind)
    path = write(tmp_path, {**SUITE, "model": {"pretrained": str(weights)}})
    with warnings.catch_warnings(record=True) as caught:  # a warning would be more lines on stderr
        warnings.simplefilter("always")
        line = one_line(capsys, ["validate", str(path)])
    assert [str(w.message) for w in caught] == []
    assert line.startswith("model.pretrained: ") and WEIGHT_PROBLEMS[kind] in line and str(weights) in line
    # run: the weights are checked before the data is read (here a COVID-BLUES folder that does not exist)
    missing = {"source": "covid-blues", "path": str(tmp_path / "no-such-data"), "image_size": 32}
    path = write(tmp_path, {**SUITE, "data": missing, "model": {"pretrained": str(weights)}}, "r.yaml")
    for extra in ([], ["--dry-run"]):
        line = one_line(capsys, ["run", str(path), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"),
                                 "--no-progress", *extra])
        assert WEIGHT_PROBLEMS[kind] in line
    assert not (tmp_path / "o" / "results.sqlite").exists()


def test_evaluate_nan_weights_is_one_line(tmp_path, capsys):
    weights = _weights(tmp_path, "nan")
    data = write(tmp_path, SUITE["data"], "d.yaml")
    line = one_line(capsys, ["evaluate", str(weights), "--data", str(data), "--out", str(tmp_path / "e"),
                             "--cache-dir", str(tmp_path / "c")])
    assert line == (f"model.pretrained: {weights} holds non-finite values (NaN or Inf) in tensor "
                    "'blocks.1.0.conv_dw.weight'; accepted: a weights file whose tensors are all finite (e.g. from a "
                    "run that did not diverge)")
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- names, search, splits, report


@pytest.mark.parametrize("name", ["ABSOLUTE", "../x", "..", "a/b"])
def test_a_pretrain_name_is_a_plain_name(tmp_path, capsys, monkeypatch, name):
    import harness.pretrain

    def must_not_run(*args, **kwargs):
        raise AssertionError("pretrain ran with a name that writes outside pretrained/")

    monkeypatch.setattr(harness.pretrain, "pretrain", must_not_run)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    name = str(tmp_path / "abs" / "path") if name == "ABSOLUTE" else name
    spec = Path(__file__).parent / "data" / "pretrain-tiny.yaml"
    line = one_line(capsys, ["pretrain", str(spec), "--set", f"name={name}", "--cache-dir", str(tmp_path / "c")])
    assert line.startswith(f"{spec}: name: name {name!r} ")
    assert "accepted" in line or "has characters outside letters, digits, '.', '_' and '-'" in line
    assert not (tmp_path / "c").exists() and not (tmp_path / "pretrained").exists()


def test_an_empty_search_space_is_refused(tmp_path, capsys):
    path = write(tmp_path, {**SUITE, "search": {"trials": 4, "space": {}}})
    line = one_line(capsys, ["validate", str(path)])
    assert line.startswith(f"{path}: search.space: nothing to tune for arm(s) baseline, pm: the space is empty; "
                           "accepted: at least one key path in search.space or in each arm's search.space")
    # one arm with a space of its own, one without: the one without is named
    arms = [SUITE["arms"][0], {**SUITE["arms"][1],
                               "search": {"space": {"preprocess.0.perona_malik.kappa": {"uniform": [0.05, 0.2]}}}}]
    path = write(tmp_path, {**SUITE, "arms": arms, "search": {"trials": 4}})
    assert "nothing to tune for arm(s) baseline: the space is empty" in one_line(capsys, ["validate", str(path)])
    # disabled: every arm trains untuned, nothing to refuse
    assert main(["validate", str(path), "--set", "search.enabled=false"]) == 0


def test_one_patient_needs_two_not_folds_le_1():
    with pytest.raises(SplitError) as info:
        make_splits(np.array([0, 1, 0, 1]), np.array(["p"] * 4), folds=2, repeats=1, seed=0)
    assert str(info.value) == ("the data has 1 patient(s); cross-validation needs at least 2 patients (2 folds, "
                               "patients are never split across folds); accepted: data with >= 2 patients")


def test_report_of_a_store_without_its_suite_record_exits_2(tmp_path, capsys):
    from harness.store import ResultsStore

    ResultsStore(tmp_path).close()
    line = one_line(capsys, ["report", str(tmp_path)])
    assert line == f"{tmp_path / 'results.sqlite'}: no suite recorded yet"
    assert not (tmp_path / "report.html").exists()


def test_per_stratum_intervals_of_bounded_metrics_stay_in_their_range():
    """Two runs whose per-stratum ROC-AUC are 1 and 0: a t-interval over them is [-5.9, 6.9]."""
    from harness.report.strata import stratify

    rows = []
    for run, flip in (("b/r0/f0", False), ("b/r0/f1", True)):
        for i, (label, prob) in enumerate([(0, 0.2), (1, 0.8), (0, 0.3), (1, 0.7)]):
            rows.append({"run_id": run, "arm": "b", "repeat": 0, "fold": int(flip), "sample_id": f"{run}{i}",
                         "group_id": f"g{i}", "video_id": f"v{i}", "label": label,
                         "prob": 1 - prob if flip else prob, "probe": "convex"})
    (table,) = stratify(pd.DataFrame(rows), ["probe"], ["b"], "roc_auc")
    cells = table.rows[0]["metrics"]
    assert cells["roc_auc"]["mean"] == 0.5
    for metric in ("roc_auc", "accuracy", "brier", "recall", "specificity"):
        lo, hi = cells[metric]["ci95"]
        assert 0.0 <= lo <= hi <= 1.0, (metric, lo, hi)
    assert cells["roc_auc"]["ci95"] == [0.0, 1.0]
