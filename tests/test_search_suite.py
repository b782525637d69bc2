"""A tuned suite end to end (32 px, 1 epoch, 2 trials, 2 inner folds): studies next to the store,
search records in the store, the report's Tuning section and summary.json; ``--dry-run`` counts
trials and inner fits; and a suite without ``search`` computes exactly what it computed before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from harness.runner import run_suite
from harness.store import ResultsStore
from harness.suite import load_suite

pytestmark = pytest.mark.slow

TINY = {
    "name": "tiny-search",
    "seed": 0,
    "data": {"source": "simulated", "patients": 10, "frames_per_patient": 3, "image_size": 32},
    "model": {"pretrained": "none"},
    "training": {"epochs": 1, "batch_size": 8, "num_threads": 1},
    "evaluation": {"folds": 2, "repeats": 1},
    "report": {"gradcam": False},
    "arms": [{"name": "pm", "preprocess": [{"perona_malik": {"iterations": 4, "kappa": 0.1, "step": 0.2}}]}],
}
SEARCH = {"trials": 2, "inner_folds": 2, "sampler": "random", "pruner": "none",
          "space": {"training.lr": {"log_uniform": [1e-4, 1e-2]}}}


def write(tmp_path: Path, **changes) -> Path:
    data = {**yaml.safe_load(yaml.safe_dump(TINY)), **changes}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tuned_suite_end_to_end(tmp_path):
    arms = [{**TINY["arms"][0], "search": {"space": {"preprocess.0.perona_malik.kappa": {"log_uniform": [0.02, 0.5]}}}}]
    suite = load_suite(write(tmp_path, search=SEARCH, arms=arms))
    lines: list[str] = []
    run_suite(suite, tmp_path / "plan", dry_run=True, cache_dir=tmp_path / "cache", echo=lines.append)
    assert any(line.startswith("search: 2 trials x 2 inner folds per tuned run") and "4 trials, 8 inner fits" in line
               for line in lines), lines

    out = tmp_path / "out"
    summary = run_suite(suite, out, cache_dir=tmp_path / "cache", progress=False, echo=lambda s: None)
    assert summary.ok and summary.report is not None, (summary.failed, summary.report_error)
    assert sorted(p.name for p in (out / "studies").iterdir()) == ["pm-r0-f0.sqlite3", "pm-r0-f1.sqlite3"]
    with ResultsStore(out, readonly=True) as store:
        searches = store.searches()
        splits = store.splits()
        samples = store.samples()
    assert len(searches) == 2
    for row in searches.itertuples():
        rec = row.record
        assert rec["n_trials"] == 2 and rec["trials"][0]["origin"] == "suite"
        assert rec["trials"][0]["params"] == {"training.lr": 0.001, "preprocess.0.perona_malik.kappa": 0.1}
        assert rec["leakage"]["test_samples_in_trials"] == 0
        test_groups = set(splits[(splits["fold"] == row.fold) & (splits["role"] == "test")]["group_id"])
        outer_train = samples[~samples["group_id"].isin(test_groups)]
        assert all(t["samples_seen"] == len(outer_train) for t in rec["trials"])
        inner = {g for fold in rec["leakage"]["inner_groups"] for ids in fold.values() for g in ids}
        assert inner == set(outer_train["group_id"]) and not inner & test_groups
    doc = json.loads((out / "summary.json").read_text())
    search = doc["arms"]["pm"]["search"]
    assert search["trials"] == 2 and len(search["inner_best"]) == 2 and search["seconds"] > 0
    assert [(c["repeat"], c["fold"]) for c in search["chosen"]] == [(0, 0), (0, 1)]
    assert set(search["chosen"][0]["params"]) == {"training.lr", "preprocess.0.perona_malik.kappa"}
    html = (out / "report.html").read_text()
    assert search["test_samples_in_trials"] == 0
    assert 'id="tuning"' in html and 'id="fig-tuning-curve"' in html and "suite's own" in html
    # The outer score beside the inner one is read at the level the trials were scored at (frames here).
    with ResultsStore(out, readonly=True) as store:
        frame_auc = store.metrics().query("arm == 'pm' and level == 'frame' and metric == 'roc_auc'")
    assert search["level"] == "frame"
    assert search["outer_test"] == pytest.approx(frame_auc.sort_values(["repeat", "fold"])["value"].tolist())

    # Resuming the finished suite redoes nothing and trains no trial.
    again = run_suite(suite, out, cache_dir=tmp_path / "cache", progress=False, report=False, echo=lambda s: None)
    assert again.skipped == 2 and again.done == 0


def test_without_search_the_numbers_are_unchanged(tmp_path):
    """A suite without ``search`` trains exactly what execute_run trained before the search existed."""
    from harness.cv import get_split
    from harness.execute import execute_run, load_suite_frames, run_seed
    from harness.preprocess import preprocess_frames
    from harness.training import RunData, fit_evaluate

    suite = load_suite(write(tmp_path))
    assert suite.search is None
    cache = str(tmp_path / "cache")
    outcome = execute_run(suite.to_payload(), "pm", 0, 1, None, cache)
    assert outcome.search is None and not (tmp_path / "studies").exists()
    frames = load_suite_frames(suite, cache)
    split = get_split(frames.labels, frames.groups, 2, 1, 0, suite.training.val_fraction, 0, 1)
    prep = preprocess_frames(frames.images, frames.content_hash, suite.arms[0].preprocess, cache)

    def take(idx):
        return np.ascontiguousarray(prep.images[idx], dtype=np.float32), frames.labels[idx].astype(np.int64)

    data = RunData(*take(split.train_idx), *take(split.val_idx), *take(split.test_idx))
    direct = fit_evaluate(suite.arm_model("pm"), suite.arm_training("pm"), data, run_seed(0, 0, 1))
    assert [p for _, p, _ in outcome.predictions] == [float(p) for p in direct.test_probs]


def test_tuned_and_untuned_verdicts_side_by_side(tmp_path):
    """search.arms tunes a subset again as <arm>~tuned; every arm also runs untuned under its own name,
    the very runs of the suite without a search (same identity, same numbers); the report, summary.json
    and the Markdown block set the two verdicts side by side."""
    from harness.report.analysis import analyse
    from harness.report.inputs import read_store
    from harness.report.markdown import write_markdown

    arms = [{"name": "baseline"}, TINY["arms"][0]]
    search = {**SEARCH, "arms": ["baseline", "pm"]}
    tuned = load_suite(write(tmp_path, search=search, arms=arms, name="pair"))
    assert [r.name for r in tuned.run_arms()] == ["baseline", "pm", "baseline~tuned", "pm~tuned"]
    out = tmp_path / "out"
    summary = run_suite(tuned, out, cache_dir=tmp_path / "cache", progress=False, echo=lambda s: None)
    assert summary.ok and summary.done == 8, (summary.failed, summary.report_error)
    with ResultsStore(out, readonly=True) as store:
        runs = store.runs(status="done")
        searches = store.searches()
        preds = store.predictions()
    assert sorted(set(runs["arm"])) == ["baseline", "baseline~tuned", "pm", "pm~tuned"]
    assert sorted(set(searches["arm"])) == ["baseline~tuned", "pm~tuned"]  # only the variants searched

    # The untuned runs are those of the same suite without a search: the same numbers.
    plain_dir = tmp_path / "plain"
    plain_dir.mkdir()
    plain = load_suite(write(plain_dir, arms=arms, name="pair"))
    run_suite(plain, tmp_path / "plain-out", cache_dir=tmp_path / "cache", progress=False, report=False,
              echo=lambda s: None)
    with ResultsStore(tmp_path / "plain-out", readonly=True) as store:
        plain_preds = store.predictions()
    mine = preds[preds["arm"] == "pm"].sort_values(["repeat", "fold", "sample_id"])["prob"].to_numpy()
    theirs = plain_preds[plain_preds["arm"] == "pm"].sort_values(["repeat", "fold", "sample_id"])["prob"].to_numpy()
    np.testing.assert_array_equal(mine, theirs)
    assert tuned.run_config_hash("pm") == plain.run_config_hash("pm")

    doc = json.loads((out / "summary.json").read_text())
    assert list(doc["arms"]) == ["baseline", "pm"]  # the main family: the arms' own (untuned) runs
    (effect,) = doc["tuning_effect"]
    assert effect["arm"] == "pm"
    assert effect["untuned"]["arm"] == "pm" and effect["tuned"]["arm"] == "pm~tuned"
    analysis = analyse(read_store(out))
    assert analysis.variant is not None and analysis.variant.settings.baseline == "baseline~tuned"
    assert {(c.arm, c.versus) for c in analysis.variant.comparisons} == {("pm~tuned", "baseline~tuned")}
    assert {(c.arm, c.versus) for c in analysis.comparisons} == {("pm", "baseline")}
    html = (out / "report.html").read_text()
    assert 'id="tuning-effect"' in html
    page, _ = write_markdown(analysis, tmp_path / "results.md", "cmd")
    text = page.read_text()
    assert "#### Does tuning change the verdict?" in text and "| `pm` |" in text
    # The tuned runs are the variant here (search.arms): their search is shown all the same, in the HTML
    # and on the page, and the run count covers both families.
    assert "#### Tuning: nested hyper-parameter search" in text and "`pm~tuned`: 2 trials × 2 inner folds" in text
    assert "- **Runs**: 8 of 8 done, 0 failed (2 arms × 2 patient-grouped folds × 1 repeat(s), each arm also run as " \
           "`<arm>~tuned`: 4 arms)" in text
    assert 'id="tuning"' in html and "<h3>pm~tuned</h3>" in html

    # The Tuning section shows the current suite's tuned runs only (an arm removed since is not reported).
    from harness.report.tuning import tuning

    assert sorted(tuning(read_store(out))) == ["baseline~tuned", "pm~tuned"]
    with ResultsStore(out) as store:
        store.set_meta(run_arms=[r for r in store.meta()["run_arms"] if r["name"] != "pm~tuned"])
    assert sorted(tuning(read_store(out))) == ["baseline~tuned"]
