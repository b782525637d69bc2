"""External validation (``evaluation.external``): every outer-fold model scored on further data sets,
stored per run, analysed in the report's External validation section and in ``summary.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from harness.runner import run_suite
from harness.store import ResultsStore
from harness.suite import SuiteError, load_suite

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def manifest_set(root: Path, patients: int = 4, images: int = 2) -> Path:
    """A tiny image manifest: bright vertical lines (B-line-like) in positive images, 2 images per patient."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["file,label,patient"]
    for p in range(patients):
        for i in range(images):
            label = (p + i) % 2
            img = (rng.random((40, 40)) * 80).astype(np.uint8)
            if label:
                img[8:, 18:22] = 230
            name = f"p{p}_{i}.png"
            Image.fromarray(img).save(root / name)
            rows.append(f"{name},{label},pt{p}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def suite_file(tmp_path: Path, external: dict, arms=None) -> Path:
    suite = {
        "name": "ext",
        "seed": 0,
        "data": {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32},
        "model": {"pretrained": "none"},
        "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
        "evaluation": {"folds": 2, "repeats": 1, "external": external},
        "arms": arms or [{"name": "baseline"}, {"name": "seed2", "training": {"seed_offset": 1}}],
    }
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_external_schema_key_paths(tmp_path):
    path = suite_file(tmp_path, {"sim": {"source": "simulated", "patientz": 3}, "m": {"source": "manifest"}})
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    lines = str(err.value).splitlines()
    assert any(": evaluation.external.sim.patientz: unknown key; accepted: source, patients" in line
               for line in lines), lines
    assert any("evaluation.external.m.path: required key is missing" in line for line in lines), lines
    path = suite_file(tmp_path, {"bad name": {"source": "simulated"}})
    with pytest.raises(SuiteError, match="external set name 'bad name'"):
        load_suite(path)


def test_external_sets_hash_only_when_present(tmp_path):
    plain = load_suite(suite_file(tmp_path, {}))
    with_ext = load_suite(suite_file(tmp_path, {"sim": {"source": "simulated", "patients": 4, "image_size": 32}}))
    assert plain.run_config_hash("baseline") != with_ext.run_config_hash("baseline")
    del_ext = yaml.safe_load((tmp_path / "ext.yaml").read_text())
    del del_ext["evaluation"]["external"]
    (tmp_path / "ext.yaml").write_text(yaml.safe_dump(del_ext))
    assert load_suite(tmp_path / "ext.yaml").run_config_hash("baseline") == plain.run_config_hash("baseline")


def test_external_simulated_and_manifest_end_to_end(tmp_path, cache_dir):
    csv = manifest_set(tmp_path / "manifest")
    external = {
        "sim-other": {"source": "simulated", "patients": 4, "frames_per_patient": 4, "frames_per_video": 2,
                      "image_size": 32, "seed": 7, "speckle": 1.4},
        "hospital-b": {"source": "manifest", "path": str(csv), "group_column": "patient", "image_size": 32},
    }
    arms = [{"name": "baseline"}, {"name": "seed2", "training": {"seed_offset": 1}},
            {"name": "gauss", "preprocess": [{"gaussian": {"sigma": 1.0}}]}]
    suite = load_suite(suite_file(tmp_path, external, arms))
    out = tmp_path / "out"
    summary = run_suite(suite, out, cache_dir=cache_dir, progress=False)
    assert summary.ok, summary.failed
    assert summary.report is not None, summary.report_error
    with ResultsStore(out, readonly=True) as store:
        em, ep, es = store.external_metrics(), store.external_predictions(), store.external_samples()
        meta = store.meta()
    assert set(em["dataset"]) == {"sim-other", "hospital-b"}
    assert set(meta["external"]) == {"sim-other", "hospital-b"} and meta["external"]["hospital-b"]["n_samples"] == 8
    # every run scores every external frame once
    for name, n in (("sim-other", 16), ("hospital-b", 8)):
        counts = ep[ep["dataset"] == name].groupby("run_id")["sample_id"].nunique()
        assert len(counts) == 6 and set(counts) == {n}
    assert ep["group_id"].notna().all() and set(es[es["dataset"] == "hospital-b"]["group_id"]) == {f"pt{i}" for i in range(4)}
    assert {"frame", "video"} <= set(em[em["dataset"] == "sim-other"]["level"])
    data = json.loads((out / "summary.json").read_text())
    ext = data["external"]
    assert set(ext) == {"sim-other", "hospital-b"}
    auc = ext["sim-other"]["arms"]["baseline"]["metrics"]["roc_auc"]
    assert auc["n"] == 2 and 0.0 <= auc["mean"] <= 1.0
    comps = [c for c in ext["sim-other"]["comparisons"] if c["metric"] == "roc_auc" and c["level"] == "frame"]
    assert {c["arm"] for c in comps} == {"seed2", "gauss"} and all(c["versus"] == "baseline" for c in comps)
    assert set(ext["sim-other"]["delong"]) == {"seed2", "gauss"}
    html = (out / "report.html").read_text()
    assert 'id="external"' in html and "hospital-b" in html and "Clustered DeLong on sim-other" in html
    # resume: nothing redone while the external sets are unchanged
    again = run_suite(load_suite(tmp_path / "ext.yaml"), out, cache_dir=cache_dir, progress=False, report=False)
    assert again.done == 0 and again.skipped == 6


@pytest.mark.real_data
@pytest.mark.skipif(not os.environ.get("LUS_COVID_BLUES"), reason="LUS_COVID_BLUES not set")
def test_external_covid_blues(tmp_path, cache_dir):
    external = {"covid-blues": {"source": "covid-blues", "frame_step": 50, "max_frames_per_video": 1,
                                "image_size": 32}}
    suite = load_suite(suite_file(tmp_path, external, [{"name": "baseline"}]))
    out = tmp_path / "out"
    summary = run_suite(suite, out, cache_dir=cache_dir, progress=False)
    assert summary.ok, summary.failed
    with ResultsStore(out, readonly=True) as store:
        ep = store.external_predictions()
    assert len(ep) and ep["group_id"].notna().all()
    data = json.loads((out / "summary.json").read_text())
    assert "roc_auc" in data["external"]["covid-blues"]["arms"]["baseline"]["metrics"]
