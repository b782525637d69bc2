"""Suite schema: validation messages with key paths, overrides, arm models, hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.suite import SuiteError, apply_override, load_suite

SUITES = Path(__file__).resolve().parent.parent / "suites"

BASE = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "simulated", "patients": 6, "frames_per_patient": 2, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"folds": 2, "repeats": 1},
    "arms": [
        {"name": "baseline"},
        {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 2, "kappa": 0.1, "step": 0.2}}]},
        {"name": "stem", "model": {"stem": {"mode": "replace", "iterations": 2}}},
    ],
    "report": {"baseline": "baseline"},
}


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def errors(tmp_path: Path, data: dict, overrides=()) -> list[str]:
    path = write(tmp_path, data)
    with pytest.raises(SuiteError) as info:
        load_suite(path, overrides)
    for line in info.value.lines:
        assert line.startswith(f"{path}: "), line
    return [line.removeprefix(f"{path}: ") for line in info.value.lines]


def test_valid_suite_and_defaults(tmp_path):
    suite = load_suite(write(tmp_path, BASE))
    assert suite.base_dir == tmp_path.resolve() and suite.source_path == (tmp_path / "s.yaml").resolve()
    assert suite.training.weight_decay == 0.05 and suite.training.val_fraction == 0.2
    assert suite.evaluation.primary_metric == "roc_auc"
    assert suite.baseline == "baseline"
    assert suite.strata == ["b_line_count", "speckle_level", "probe"]  # the data source's default
    stem = suite.arm_model("stem")
    assert stem.stem is not None and stem.stem.iterations == 2 and stem.stem.trainable
    assert stem.pretrained == "none" and suite.arm_model("baseline").stem is None


def test_error_paths_and_accepted_values(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(BASE))
    bad["training"]["epochs"] = 0
    bad["training"]["optimizer"] = "sgd"
    bad["evaluation"]["primary_metric"] = "auc"
    bad["arms"][0]["name"] = "base line"
    bad["model"]["pretrained"] = "weights.txt"
    lines = errors(tmp_path, bad)
    joined = "\n".join(lines)
    assert "training.epochs: Input should be greater than or equal to 1 (got 0)" in joined
    assert "training.optimizer: unknown key; accepted: epochs, batch_size, lr" in joined
    assert "evaluation.primary_metric: 'auc' is not accepted; accepted: 'accuracy'" in joined
    assert "arms[0].name: arm name 'base line' has characters outside letters" in joined
    assert "model.pretrained: 'weights.txt' is not a weights file; accepted: none, imagenet" in joined
    assert len(lines) == 5


def test_data_section_errors_name_the_key(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(BASE))
    bad["data"]["patientz"] = 3
    lines = errors(tmp_path, bad)
    assert lines == [lines[0]] and lines[0].startswith("data.patientz: unknown key; accepted: source, patients")
    bad["data"] = {"source": "dicom"}
    (line,) = errors(tmp_path, bad)
    assert line.startswith("data: 'dicom' is not accepted; accepted: 'simulated', 'covid-blues', 'manifest'")


def test_arm_model_override_errors_and_semantics(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(BASE))
    bad["arms"][2]["model"] = {"stem": {"mode": "swap"}, "diffusion_blocks": {"after_stages": [9]}}
    bad["arms"].append({"name": "pm"})
    bad["report"]["baseline"] = "nothing"
    lines = errors(tmp_path, bad)
    assert any(line.startswith("arms[2].model.stem.mode: 'swap' is not accepted; accepted: 'replace' or 'prepend'")
               for line in lines), lines
    assert any(line.startswith("arms[2].model.diffusion_blocks.after_stages: stage(s) [9] out of range")
               for line in lines)
    assert "arms[3].name: 'pm' already names arms[1]; arm names must be unique" in lines
    assert any(line.startswith("report.baseline: 'nothing' is not an arm; accepted: baseline, pm, stem")
               for line in lines)


def test_missing_weights_file_is_reported_before_training(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["model"]["pretrained"] = "w/missing.safetensors"
    (line,) = errors(tmp_path, data)
    assert line.startswith("model.pretrained: weights file") and "missing.safetensors' not found" in line
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "missing.safetensors").write_bytes(b"")
    suite = load_suite(write(tmp_path, data))
    assert suite.arm_model("baseline").pretrained == str((tmp_path / "w" / "missing.safetensors").resolve())


def test_pipeline_errors_carry_key_path(tmp_path):
    pytest.importorskip("diffusion_filters").Pipeline  # noqa: B018 (filters engineer's API)
    bad = yaml.safe_load(yaml.safe_dump(BASE))
    bad["arms"][1]["preprocess"] = [{"perona_malik": {"iterations": 2, "kappa": -1.0, "step": 0.2}},
                                    {"perona_malik": {"iterations": 2, "kappa": 0.1, "step": 0.2, "zeta": 1}},
                                    {"wavelet": {}}]
    lines = errors(tmp_path, bad)
    assert lines[0].startswith("arms[1].preprocess[0].perona_malik.kappa: "), lines
    assert lines[1].startswith("arms[1].preprocess[1].perona_malik.zeta: unknown parameter; accepted:"), lines
    assert lines[2].startswith("arms[1].preprocess[2].wavelet: unknown filter; accepted: "), lines
    assert "perona_malik" in lines[2]


def test_overrides(tmp_path):
    path = write(tmp_path, BASE)
    suite = load_suite(path, ["training.epochs=3", "arms.1.name=pm2", "arms[2].model.stem.trainable=false",
                              "data.speckle=0.5", "report.strata=[probe]"])
    assert suite.training.epochs == 3 and suite.arms[1].name == "pm2"
    assert suite.arm_model("stem").stem.trainable is False
    assert suite.data.speckle == 0.5 and suite.strata == ["probe"]
    with pytest.raises(SuiteError, match=r"arms.7: index out of range; accepted: 0..2"):
        load_suite(path, ["arms.7.name=x"])
    with pytest.raises(SuiteError, match=r"expected key.path=value"):
        load_suite(path, ["training.epochs"])
    with pytest.raises(SuiteError, match=r"training.epochs: Input should be a valid integer"):
        load_suite(path, ["training.epochs=many"])
    data = {"a": 1}
    with pytest.raises(ValueError, match="a is a value, not a mapping"):
        apply_override(data, "a.b=2")


def test_file_level_errors(tmp_path):
    with pytest.raises(SuiteError, match="nope.yaml: file not found"):
        load_suite(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SuiteError, match=r"broken.yaml: line \d+, column \d+: invalid YAML"):
        load_suite(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(SuiteError, match="a suite is a mapping of sections; accepted keys: name, description"):
        load_suite(path)
    path.write_text("!!python/object/apply:os.system ['echo unsafe']\n")
    with pytest.raises(SuiteError, match="invalid YAML"):
        load_suite(path)


def test_run_config_hash(tmp_path):
    suite = load_suite(write(tmp_path, BASE))
    h = {a.name: suite.run_config_hash(a) for a in suite.arms}
    assert len(set(h.values())) == 3
    same = load_suite(write(tmp_path, BASE), ["report.rope=0.05", "description=changed", "name=other"])
    assert {a.name: same.config_hash(a) for a in same.arms} == h  # report/name do not change the runs
    for change in ["training.epochs=2", "seed=1", "data.patients=8", "evaluation.folds=3",
                   "model.drop_rate=0.3"]:
        other = load_suite(write(tmp_path, BASE), [change])
        assert other.run_config_hash("baseline") != h["baseline"], change
    other = load_suite(write(tmp_path, BASE), ["arms.2.model.stem.iterations=3"])
    assert other.run_config_hash("stem") != h["stem"] and other.run_config_hash("baseline") == h["baseline"]


def test_payload_round_trip(tmp_path):
    suite = load_suite(write(tmp_path, BASE))
    again = type(suite).from_payload(suite.to_payload())
    assert again == suite and again.base_dir == suite.base_dir
    assert again.run_config_hash("pm") == suite.run_config_hash("pm")


@pytest.mark.parametrize("name", ["quick", "full", "simulated"])
def test_shipped_suites_validate(name, monkeypatch):
    monkeypatch.setenv("LUS_COVID_BLUES", "/nonexistent")  # validation must not need the data
    suite = load_suite(SUITES / f"{name}.yaml")
    names = {a.name for a in suite.arms}
    assert {"baseline", "perona-malik", "coherence-enhancing", "edge-enhancing", "nonlocal-means", "srad",
            "gaussian", "learnable-stem", "diffusion-prepend", "diffusion-blocks"} <= names
    assert suite.baseline == "baseline"


def test_arm_training_overrides_merge_and_are_checked(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["arms"].append({"name": "noise-floor", "training": {"seed_offset": 1, "lr": 0.01}})
    suite = load_suite(write(tmp_path, data))
    merged = suite.arm_training("noise-floor")
    assert (merged.seed_offset, merged.lr, merged.epochs) == (1, 0.01, 1)
    assert suite.arm_training("baseline") == suite.training
    # The override changes that arm's run identity only.
    plain = load_suite(write(tmp_path, BASE, "plain.yaml"))
    assert suite.run_config_hash("baseline") == plain.run_config_hash("baseline")
    assert suite.run_config_hash("noise-floor") != suite.run_config_hash("baseline")
    data["arms"][-1]["training"] = {"lr": -1, "val_fraction": 0.3}
    lines = errors(tmp_path, data)
    assert any("arms[3].training.lr: Input should be greater than 0 (got -1)" in line for line in lines)
    assert any("arms[3].training.val_fraction: the inner validation split is shared by every arm" in line
               for line in lines)
