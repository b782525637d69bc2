"""The explain step: sample frames and Grad-CAM maps computed once after the runs, stored, reused
on resume, replaced when a checkpoint changes; and a report that only reads them (it builds with
the network, training and data-decoding code blocked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from harness.explain import explain_suite
from harness.runner import load_suite_frames, run_suite
from harness.store import ResultsStore
from harness.suite import load_suite
from harness.versions import file_sha256

ROOT = Path(__file__).resolve().parent.parent
PM = [{"perona_malik": {"iterations": 2, "kappa": 0.1, "step": 0.2}}]
TINY = {
    "name": "tiny-explain",
    "seed": 0,
    "data": {"source": "simulated", "patients": 6, "frames_per_patient": 3, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8},
    "evaluation": {"folds": 2, "repeats": 1},
    "arms": [{"name": "baseline"}, {"name": "pm", "preprocess": PM}],
}


def _figure_block(page: str, fig_id: str) -> str:
    start = page.index(f'id="fig-{fig_id}"')
    return page[start : page.index("</figure>", start)]


def _has_image(page: str, fig_id: str) -> bool:
    return '<img src="data:image/png;base64,' in _figure_block(page, fig_id)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny suite run end to end once (4 runs, explain step, report)."""
    tmp = tmp_path_factory.mktemp("explain")
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    suite = load_suite(path)
    lines: list[str] = []
    summary = run_suite(suite, tmp / "out", cache_dir=tmp / "cache", progress=False, echo=lines.append)
    assert summary.ok and summary.report is not None, (summary.failed, summary.report_error)
    return {"suite": suite, "out": tmp / "out", "cache": tmp / "cache", "lines": lines, "summary": summary}


def _copy(ran: dict[str, Any], tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(ran["out"], out, ignore=shutil.ignore_patterns(".lock"))
    return out


# ----------------------------------------------------------------------------- (a) end to end


@pytest.mark.slow
def test_explanations_land_in_the_store(ran: dict[str, Any]) -> None:
    from harness.preprocess import preprocess_frames

    assert any(line.startswith("explanations: 2 arms computed, 0 reused") for line in ran["lines"]), ran["lines"]
    store = ResultsStore(ran["out"], readonly=True)
    arms = store.explanation_arms().set_index("arm")
    e = store.explanations()
    runs = store.runs(status="done").set_index("run_id")
    preds = store.predictions()
    store.close()
    assert sorted(arms.index) == ["baseline", "pm"]
    assert arms["note"].isna().all() and not arms["key"].str.startswith("failed:").any()
    for arm in ("baseline", "pm"):  # keyed by the content of the checkpoint the run recorded
        ckpt = ran["out"] / runs.loc[f"{arm}/r0/f0", "checkpoint"]
        assert arms.loc[arm, "checkpoint_hash"] == file_sha256(ckpt)
    # 2 frames per class, the same frames for both arms, all from the saved models' test fold
    by_arm = {arm: g.sort_values("position") for arm, g in e.groupby("arm")}
    assert list(by_arm["baseline"]["sample_id"]) == list(by_arm["pm"]["sample_id"])
    assert sorted(by_arm["pm"]["label"]) == [0, 0, 1, 1]
    test_fold = set(preds[(preds["repeat"] == 0) & (preds["fold"] == 0)]["sample_id"])
    assert set(by_arm["pm"]["sample_id"]) <= test_fold
    frames = load_suite_frames(ran["suite"], ran["cache"])
    index = {s: i for i, s in enumerate(frames.sample_ids)}
    rows = [index[s] for s in by_arm["pm"]["sample_id"]]
    # processed = exactly what the network saw (the runner's preprocessing cache)
    seen = preprocess_frames(frames.images, frames.content_hash, PM, ran["cache"]).images[rows]
    for j, (_, row) in enumerate(by_arm["pm"].iterrows()):
        assert row["raw"].dtype == np.uint8 and np.array_equal(row["raw"], frames.images[rows[j]])
        assert np.allclose(row["processed"], seen[j], atol=1e-6)
        assert not np.allclose(row["processed"], row["raw"] / 255.0, atol=1e-3)  # the filter changed it
    for _, row in by_arm["baseline"].iterrows():
        assert np.allclose(row["processed"], row["raw"] / np.float32(255.0))
    for _, row in e.iterrows():
        cam = row["cam"]
        assert cam.shape == (32, 32) and cam.dtype == np.float32 and 0 <= cam.min() <= cam.max() <= 1


@pytest.mark.slow
def test_report_shows_frames_and_gradcam_from_the_store(ran: dict[str, Any]) -> None:
    page = ran["summary"].report.read_text(encoding="utf-8")
    assert _has_image(page, "frames") and _has_image(page, "gradcam")


# ----------------------------------------------------------------------------- (b) the report reads only


BLOCKED_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    # Training, networks, filters, the data package and the suite schema (which imports it).
    BLOCKED = ("harness.models", "harness.training", "harness.explain", "harness.gradcam", "harness.preprocess",
               "harness.runner", "harness.execute", "harness.data", "harness.suite",
               "diffusion_filters", "torch", "pytorch_grad_cam", "timm")

    def blocked(name):
        return any(name == b or name.startswith(b + ".") for b in BLOCKED)

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if blocked(name):
                raise ImportError(f"{name} is blocked: the report must not import it")
            return None

    sys.meta_path.insert(0, Block())
    from harness.report import build_report

    build_report(sys.argv[1], sys.argv[2])
    leaked = sorted(m for m in sys.modules if blocked(m))
    assert not leaked, leaked
    print("ok")
    """
)


@pytest.mark.slow
def test_report_builds_without_network_training_or_data_code(ran: dict[str, Any], tmp_path: Path) -> None:
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_SCRIPT)
    html = tmp_path / "report.html"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script), str(ran["out"]), str(html)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
    page = html.read_text(encoding="utf-8")
    assert _has_image(page, "frames") and _has_image(page, "gradcam")


def test_report_package_source_never_imports_training_side() -> None:
    """A cheap static guard beside the subprocess test."""
    forbidden = ("harness.models", "harness.training", "harness.data", "harness.explain", "harness.gradcam",
                 "harness.preprocess", "torch", "pytorch_grad_cam")
    for path in sorted((ROOT / "harness" / "report").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for name in forbidden:
            assert f"import {name}" not in text and f"from {name} " not in text and f"from {name}." not in text, \
                f"{path.name} imports {name}"


# ----------------------------------------------------------------------------- (c) resume / replace


@pytest.mark.slow
def test_second_run_reuses_explanations(ran: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    import harness.explain

    out = _copy(ran, tmp_path)
    before = ResultsStore(out, readonly=True).explanation_arms()

    def no_cams(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("explanations were recomputed")

    monkeypatch.setattr(harness.explain, "arm_cams", no_cams)
    monkeypatch.setattr(harness.explain, "filter_frames", no_cams)
    lines: list[str] = []
    summary = run_suite(ran["suite"], out, cache_dir=ran["cache"], progress=False, report=False, echo=lines.append)
    assert summary.ok and summary.done == 0 and summary.skipped == 4
    assert any(line.startswith("explanations: 0 arms computed, 2 reused") for line in lines), lines
    after = ResultsStore(out, readonly=True).explanation_arms()
    assert after.equals(before)  # same keys, same creation times: nothing was rewritten


@pytest.mark.slow
def test_changed_checkpoint_replaces_explanations(ran: dict[str, Any], tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    out = _copy(ran, tmp_path)
    ckpt = out / "checkpoints" / "baseline.safetensors"
    state = load_file(str(ckpt))
    rng = np.random.default_rng(0)
    state = {k: (v + rng.normal(0, 0.2, v.shape).astype(np.float32) if v.dtype == np.float32 and v.ndim >= 2 else v)
             for k, v in state.items()}
    save_file(state, str(ckpt))
    store = ResultsStore(out)
    old = store.explanations().set_index(["arm", "sample_id"])
    old_arms = store.explanation_arms().set_index("arm")
    summary = explain_suite(ran["suite"], out, store, load_suite_frames(ran["suite"], ran["cache"]))
    assert summary.computed == ["baseline"] and summary.reused == ["pm"] and not summary.notes
    new = store.explanations().set_index(["arm", "sample_id"])
    arms = store.explanation_arms().set_index("arm")
    store.close()
    assert arms.loc["baseline", "checkpoint_hash"] == file_sha256(ckpt) != old_arms.loc["baseline", "checkpoint_hash"]
    assert arms.loc["pm", "created_at"] == old_arms.loc["pm", "created_at"]
    assert len(new) == len(old)
    changed = [not np.allclose(new.loc[i, "cam"], old.loc[i, "cam"]) for i in new.index if i[0] == "baseline"]
    assert any(changed)


@pytest.mark.slow
def test_a_tuned_run_is_explained_with_the_parameters_it_was_trained_with(ran: dict[str, Any], tmp_path: Path,
                                                                         monkeypatch) -> None:
    """The checkpoint of a tuned run was trained on the parameters its search chose: its frames are
    filtered (and its Grad-CAM computed) with those, not with the suite's defaults."""
    import harness.explain as explain

    out = _copy(ran, tmp_path)
    chosen = {"preprocess.0.perona_malik.kappa": 0.279, "preprocess.0.perona_malik.iterations": 14}
    seen: list[list[dict[str, Any]]] = []
    real = explain.filter_frames
    monkeypatch.setattr(explain, "filter_frames", lambda steps, images, **kw: seen.append(list(steps)) or real(steps, images, **kw))
    with ResultsStore(out) as store:
        run = store.runs(status="done").query("arm == 'pm'").sort_values(["repeat", "fold"]).iloc[0]
        store.put_search(str(run["run_id"]), {"params": chosen, "inner_best": 0.9})
        summary = explain_suite(ran["suite"], out, store, load_suite_frames(ran["suite"], ran["cache"]))
    assert "pm" in summary.computed  # the key holds the pipeline: the tuned one differs from the suite's
    pm_steps = [s[0]["perona_malik"] for s in seen if s]  # the baseline filters nothing
    assert pm_steps and all((p["kappa"], p["iterations"]) == (0.279, 14) for p in pm_steps)


# ----------------------------------------------------------------------------- options and failures


@pytest.mark.slow
def test_gradcam_off_stores_frames_only(ran: dict[str, Any], tmp_path: Path) -> None:
    out = _copy(ran, tmp_path)
    suite = ran["suite"].model_copy(update={"report": ran["suite"].report.model_copy(update={"gradcam": False})})
    with ResultsStore(out) as store:
        summary = explain_suite(suite, out, store, load_suite_frames(suite, ran["cache"]))
        e = store.explanations()
    assert sorted(summary.computed) == ["baseline", "pm"]  # the key changed: recomputed, nothing stale
    assert len(e) == 8 and e["cam"].isna().all() and all(p.shape == (32, 32) for p in e["processed"])


@pytest.mark.slow
def test_failures_become_notes_and_are_retried(ran: dict[str, Any], tmp_path: Path) -> None:
    from harness.report import build_report

    out = _copy(ran, tmp_path)
    (out / "checkpoints" / "pm.safetensors").write_bytes(b"not a checkpoint")  # a damaged file
    (out / "checkpoints" / "baseline.safetensors").unlink()  # a missing one
    frames = load_suite_frames(ran["suite"], ran["cache"])
    with ResultsStore(out) as store:
        n_runs = len(store.runs(status="done"))
        summary = explain_suite(ran["suite"], out, store, frames)
        arms = store.explanation_arms().set_index("arm")
        assert len(store.runs(status="done")) == n_runs  # no run result is touched
        # the damaged checkpoint is retried next time (its key is marked failed); the missing one is not
        again = explain_suite(ran["suite"], out, store, frames)
    assert sorted(summary.computed) == ["baseline", "pm"]
    assert "missing" in summary.notes["baseline"] and "Grad-CAM failed" in summary.notes["pm"]
    assert arms.loc["pm", "key"].startswith("failed:") and not arms.loc["baseline", "key"].startswith("failed:")
    assert again.computed == ["pm"] and again.reused == ["baseline"]
    page = build_report(out).read_text(encoding="utf-8")
    assert _has_image(page, "frames") and not _has_image(page, "gradcam")
    block = _figure_block(page, "gradcam")
    assert "missing" in block and "Grad-CAM failed" in block


@pytest.mark.slow
def test_explain_never_raises(ran: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    import harness.explain

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(harness.explain, "choose", boom)
    out = _copy(ran, tmp_path)
    with ResultsStore(out) as store:
        summary = harness.explain.explain_suite(ran["suite"], out, store, load_suite_frames(ran["suite"], ran["cache"]))
        arms = store.explanation_arms().set_index("arm")
        assert store.explanations().empty and len(store.runs(status="done")) == 4
    assert summary.notes == {a: "explain failed: RuntimeError: disk on fire" for a in ("baseline", "pm")}
    assert list(arms["note"]) == ["explain failed: RuntimeError: disk on fire"] * 2


@pytest.mark.slow
def test_report_of_a_store_without_explanations(ran: dict[str, Any], tmp_path: Path) -> None:
    """An older store (no explanations tables): the figures say why they are missing, the report builds."""
    import sqlite3

    from harness.report import build_report

    out = _copy(ran, tmp_path)
    conn = sqlite3.connect(out / "results.sqlite")
    conn.executescript("DROP TABLE explanations; DROP TABLE explanation_arms;")
    conn.close()
    page = build_report(out).read_text(encoding="utf-8")
    for fig in ("frames", "gradcam"):
        block = _figure_block(page, fig)
        assert not _has_image(page, fig) and "no sample frames" in block and "run the suite again" in block


# ----------------------------------------------------------------------------- Grad-CAM units


def test_gradcam_of_a_model_with_a_known_answer() -> None:
    """class-1 logit = 2 * mean(conv_head channel 0) and channel 0 = the image, so Grad-CAM's
    weight is positive for channel 0 and zero for channel 1: the map is the min-max scaled image."""
    import torch
    from torch import nn

    from harness.gradcam import compute_cams, target_layer

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_head = nn.Conv2d(1, 2, 1, bias=False)
            self.fc = nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.conv_head.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
                self.fc.weight[:] = torch.tensor([[0.0, 1.0], [2.0, 0.0]])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv_head(x).mean(dim=(2, 3)))

    x = torch.rand(2, 1, 12, 10, generator=torch.Generator().manual_seed(0))
    x[0, 0, 2:5, 1:4] += 3.0  # a bright patch
    model = Tiny()
    assert target_layer(model) is model.conv_head
    cams = compute_cams(model, x)
    for cam, img in zip(cams, x[:, 0].numpy()):
        expected = (img - img.min()) / (img.max() - img.min())
        assert cam.shape == img.shape
        assert np.allclose(cam, expected, atol=1e-5)
    assert np.unravel_index(np.argmax(cams[0]), cams[0].shape)[0] in (2, 3, 4)

    class NoHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)

    no_head = NoHead()
    assert target_layer(no_head) is no_head.b


def test_gradcam_layer_keeps_a_usable_resolution() -> None:
    """At 32 px EfficientNet-B0's conv_head is 1 x 1 (a constant map): a deeper-than-7x7 stage is
    explained instead; at 224 px conv_head (7 x 7) is."""
    import torch

    from harness.gradcam import compute_cams, target_layer
    from harness.models import create_model
    from harness.suite import ModelConfig

    model = create_model(ModelConfig(pretrained="none"), in_chans=1).eval()
    small = target_layer(model, torch.rand(1, 1, 32, 32))
    assert small is model.blocks[1]  # 8 x 8 at 32 px
    assert target_layer(model, torch.rand(1, 1, 224, 224)) is model.conv_head
    cams = compute_cams(model, torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert all(c.shape == (32, 32) and c.max() > c.min() for c in cams)
