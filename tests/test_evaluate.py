"""``harness evaluate WEIGHTS --data YAML``: a weights file scored on a data set without training, with
bootstrap-over-patients intervals, written as evaluation.json / evaluation.html / predictions.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.cli import main
from harness.evaluate import bootstrap_by_patient
from harness.pretrain import WEIGHTS_FILE, load_spec, pretrain

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DATA = {"source": "simulated", "patients": 6, "frames_per_patient": 4, "frames_per_video": 2, "image_size": 32,
        "seed": 3}


@pytest.fixture(scope="module")
def weights(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("pre")
    spec = load_spec(Path(__file__).parent / "data" / "pretrain-tiny.yaml")
    pretrain(spec, out, cache_dir=cache_dir, echo=lambda _: None)
    return out / WEIGHTS_FILE


def test_evaluate_data_section(tmp_path, weights, cache_dir):
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump(DATA))
    out = tmp_path / "eval"
    rc = main(["evaluate", str(weights), "--data", str(data), "--out", str(out), "--bootstrap", "30",
               "--cache-dir", str(cache_dir)])
    assert rc == 0
    result = json.loads((out / "evaluation.json").read_text())
    frame = result["metrics"]["frame/none"]["roc_auc"]
    assert frame["value"] is None or 0.0 <= frame["value"] <= 1.0
    assert "video/mean" in result["metrics"]
    assert result["data"]["n_frames"] == 24 and result["data"]["n_patients"] == 6
    assert result["bootstrap"]["unit"] == "patient" and result["bootstrap"]["n"] == 30
    assert result["model_card"]["name"] == "tiny"
    preds = (out / "predictions.csv").read_text().splitlines()
    assert preds[0] == "sample_id,group_id,video_id,label,prob" and len(preds) == 25
    page = (out / "evaluation.html").read_text()
    assert "roc_auc" in page and "<script" not in page


def test_evaluate_suite_checkpoint_with_arm(tmp_path, weights, cache_dir):
    suite = {"name": "s", "data": DATA, "model": {"pretrained": "none"}, "training": {"epochs": 1},
             "arms": [{"name": "baseline"}, {"name": "g", "preprocess": [{"gaussian": {"sigma": 1.0}}]}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "eval2"
    assert main(["evaluate", str(weights), "--data", str(path), "--arm", "g", "--out", str(out), "--bootstrap", "0",
                 "--cache-dir", str(cache_dir)]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["arm"] == "g" and result["metrics"]["frame/none"]["roc_auc"]["ci95"] is None


def test_evaluate_bad_input_one_line(tmp_path, weights, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: simulated\npatientz: 3\n")
    assert main(["evaluate", str(weights), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "patientz: unknown key" in err[0]
    assert main(["evaluate", str(tmp_path / "missing.safetensors"), "--data", str(bad)]) == 2


def test_bootstrap_by_patient_intervals():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(20)], 3)
    labels = np.repeat(rng.integers(0, 2, 20), 3)
    probs = np.clip(labels * 0.6 + rng.random(60) * 0.5, 0, 1)
    out = bootstrap_by_patient(labels, probs, groups, groups, 50)
    lo, hi = out[("frame", "none", "roc_auc")]["ci95"]
    assert 0.0 <= lo <= hi <= 1.0 and out[("frame", "none", "roc_auc")]["n_valid"] >= 45
