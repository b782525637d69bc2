"""Issue 15, items 1 and 2: a resume redoes exactly the runs whose inputs changed — the data's
content, the suite, or the code that computes the numbers — and says why in one line per reason;
``--out`` naming a file (or a path below one, or a foreign SQLite file) is refused before anything
is written. Training is stubbed (the identity logic is what is tested), so these run in seconds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

import harness.versions
from harness.runner import OutDirError, make_plan, redo_lines, redo_reasons, run_suite
from harness.store import ResultsStore, StoreError
from harness.suite import load_suite


class StubFit:
    """A fit that trains nothing: probabilities from the labels, and it counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model_cfg, train_cfg, data, seed, on_the_fly=None, want_state_dict=False, **kw):
        from harness.training import FitDiagnosis, FitResult

        self.calls += 1
        probs = np.clip(0.3 + 0.4 * data.test_y, 0.01, 0.99).astype(float)
        return FitResult(probs, {"run_seconds": 0.01}, [], {}, 1, "cpu", FitDiagnosis("ok", "stub", 0.69, None, 0.1,
                                                                                    None, None))


def _manifest(tmp_path: Path, flip: bool = False) -> Path:
    from PIL import Image

    root = tmp_path / "data"
    root.mkdir(exist_ok=True)
    rows = ["file,b_lines,patient"]
    rng = np.random.default_rng(0)
    for i in range(8):
        name = f"img{i}.png"
        if not (root / name).exists():
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / name)
        label = i % 2 if not flip else 1 - i % 2
        rows.append(f"{name},{'yes' if label else 'no'},p{i // 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def _suite(tmp_path: Path, epochs: int = 1) -> Path:
    data = {"name": "resume", "seed": 0,
            "data": {"source": "manifest", "path": "data/labels.csv", "file_column": "file", "label_column": "b_lines",
                     "group_column": "patient", "image_size": 16},
            "model": {"pretrained": "none"}, "training": {"epochs": epochs, "batch_size": 4},
            "evaluation": {"folds": 2}, "report": {"gradcam": False},
            "arms": [{"name": "a"}, {"name": "b", "training": {"epochs": epochs}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(tmp_path: Path, **kw):
    lines: list[str] = []
    fit = StubFit()
    suite = load_suite(tmp_path / "suite.yaml")
    summary = run_suite(suite, tmp_path / "out", cache_dir=tmp_path / "cache", report=False, progress=False,
                        fit=fit, echo=lines.append, **kw)
    return summary, fit, lines


def _redone(lines: list[str]) -> list[str]:
    return [line for line in lines if " redone: " in line]


def test_changed_data_suite_and_code_redo_exactly_the_affected_runs(tmp_path, monkeypatch):
    _manifest(tmp_path)
    _suite(tmp_path)
    first, fit, lines = _run(tmp_path)
    assert first.ok and fit.calls == 4 and not _redone(lines)

    same, fit, lines = _run(tmp_path)  # nothing changed: nothing redone
    assert fit.calls == 0 and same.skipped == 4
    assert "4 of 4 runs already done with the same config, data and code; 0 to run" in lines

    _manifest(tmp_path, flip=True)  # the case: labels swapped, same config
    changed, fit, lines = _run(tmp_path)
    assert fit.calls == 4 and changed.skipped == 0
    assert _redone(lines) == ["4 runs redone: the data changed since they ran"]
    store = ResultsStore(tmp_path / "out", readonly=True)
    runs = store.runs()
    assert runs["data_hash"].nunique() == 1 and runs["data_hash"].iloc[0] == store.meta()["data_content_hash"]
    preds = store.predictions()  # predictions and samples describe the same (new) data
    samples = store.samples().set_index("sample_id")
    assert (preds["label"].to_numpy() == samples.loc[preds["sample_id"], "label"].to_numpy()).all()
    store.close()

    # one arm's settings change: only its runs are redone
    data = yaml.safe_load((tmp_path / "suite.yaml").read_text())
    data["arms"][1]["training"]["epochs"] = 2
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(data))
    suite_changed, fit, lines = _run(tmp_path)
    assert fit.calls == 2 and suite_changed.skipped == 2
    assert _redone(lines) == ["2 runs redone: the suite's settings for them changed since they ran"]

    # the code that computes the numbers changes: every run is redone
    monkeypatch.setattr(harness.versions, "code_version", lambda: "0123456789abcdef")
    code_changed, fit, lines = _run(tmp_path)
    assert fit.calls == 4
    assert _redone(lines) == ["4 runs redone: the code that computes them changed since they ran"]
    store = ResultsStore(tmp_path / "out", readonly=True)
    assert set(store.runs()["code_version"]) == {"0123456789abcdef"} and set(store.runs()["status"]) == {"done"}


def test_dry_run_names_the_reasons_and_writes_nothing(tmp_path, monkeypatch):
    _manifest(tmp_path)
    _suite(tmp_path)
    _run(tmp_path)
    db = tmp_path / "out" / "results.sqlite"
    before = db.read_bytes()
    _manifest(tmp_path, flip=True)
    import harness.estimate

    monkeypatch.setattr(harness.estimate, "estimate", lambda *a, **k: harness.estimate.Estimate())
    _, fit, lines = _run(tmp_path, dry_run=True)
    assert fit.calls == 0 and _redone(lines) == ["4 runs redone: the data changed since they ran"]
    assert db.read_bytes() == before


def test_redo_reasons_one_per_cause():
    want = ("c", "d", "k")
    assert redo_reasons(None, want) == ()
    assert redo_reasons(("done", ("c", "d", "k")), want) == ()
    assert redo_reasons(("done", ("c", "d2", "k")), want) == ("data",)
    assert redo_reasons(("done", ("c2", "d", "k2")), want) == ("config", "code")
    assert redo_reasons(("done", ("c", None, None)), want) == ("unrecorded",)  # a store of an older version
    assert redo_reasons(("failed", ("c", "d", "k")), want) == ("failed",)
    assert redo_reasons(("running", ("c", "d", "k")), want) == ("interrupted",)
    assert redo_reasons(("stale", ("c", "d", "k")), want) == ("stale",)


def test_store_of_an_older_version_is_redone_and_says_why(tmp_path):
    _manifest(tmp_path)
    _suite(tmp_path)
    _run(tmp_path)
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as conn:  # as an older harness left it
        conn.execute("UPDATE runs SET data_hash=NULL, code_version=NULL")
    _, fit, lines = _run(tmp_path)
    assert fit.calls == 4
    assert _redone(lines) == ["4 runs redone: the store does not say which data and code they ran with "
                              "(written by an older version)"]


def test_preprocessing_cache_key_follows_the_filter_code(tmp_path, monkeypatch):
    from harness.preprocess import cache_key

    steps = [{"gaussian": {"sigma": 1.0}}]
    key = cache_key("frames-hash", steps)
    assert cache_key("frames-hash", steps) == key and cache_key("other-frames", steps) != key
    harness.versions.filters_version.cache_clear()
    monkeypatch.setattr(harness.versions, "version_of", lambda patterns: "changed-filters")
    try:
        assert cache_key("frames-hash", steps) != key
    finally:
        harness.versions.filters_version.cache_clear()


def test_code_version_ignores_docstrings_not_code(tmp_path):
    from harness.versions import source_digest

    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Doc."""\ndef f(x):\n    """What f does."""\n    return x + 1  # comment\n')
    b.write_text('"""Another doc."""\ndef f(x):\n    """Reworded."""\n    return x + 1\n')
    c.write_text('"""Doc."""\ndef f(x):\n    """What f does."""\n    return x + 2\n')
    assert source_digest(a) == source_digest(b) != source_digest(c)


def test_the_c_kernels_are_part_of_both_code_versions():
    """The C kernels compute numbers (filters, learnable layers): an edit to one must redo the runs
    and the preprocessing cache, as an edit to the Python code does."""
    from harness.versions import CODE_SOURCES, FILTER_SOURCES, ROOT, _files

    for patterns in (CODE_SOURCES, FILTER_SOURCES):
        names = {p.relative_to(ROOT).as_posix() for p in _files(patterns)}
        assert {"diffusion_filters/_native/perona_malik.c", "diffusion_filters/_native/fastmath.h",
                "diffusion_filters/_native/__init__.py", "diffusion_filters/_native/autograd.py"} <= names


def test_the_backbones_and_the_nested_search_are_part_of_the_code_version():
    """Lite0's weights are mapped in harness/backbones.py and a tuned run's numbers are the search's
    choice: an edit to either redoes the runs (and starts new studies, keyed by the code version)."""
    from harness.versions import CODE_SOURCES, ROOT, _files

    names = {p.relative_to(ROOT).as_posix() for p in _files(CODE_SOURCES)}
    assert {"harness/backbones.py", "harness/search/nested.py", "harness/suite/search.py"} <= names


def test_make_plan_without_identity_keeps_the_old_contract(tmp_path):
    store = ResultsStore(tmp_path / "s")
    store.claim_run("a", 0, 0, "h", seed=0)
    store.finish_run("a/r0/f0", [], [], {}, {}, [])
    suite = load_suite(_suite(tmp_path))
    suite_hash = suite.run_config_hash("a")
    with sqlite3.connect(tmp_path / "s" / "results.sqlite") as conn:
        conn.execute("UPDATE runs SET config_hash=?", (suite_hash,))
    plan = make_plan(suite, [], store)
    assert [r.done for r in plan.runs if r.arm == "a"] == [True, False]
    assert redo_lines(plan) == []


# --------------------------------------------------------------------------- item 2: --out


def test_out_naming_a_file_or_below_a_file_is_refused_before_anything_is_written(tmp_path):
    _manifest(tmp_path)
    _suite(tmp_path)
    suite = load_suite(tmp_path / "suite.yaml")
    other = tmp_path / "results.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE mine (x)")
    before = other.read_bytes()
    for out, message in ((other, "is a file, not a directory"), (other / "sub", "is a file, so no directory")):
        with pytest.raises(OutDirError, match=message):
            run_suite(suite, out, cache_dir=tmp_path / "cache", report=False, progress=False, fit=StubFit())
    assert other.read_bytes() == before and not Path(f"{other}-wal").exists()


def test_foreign_sqlite_in_the_out_directory_is_left_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with sqlite3.connect(out / "results.sqlite") as conn:
        conn.execute("CREATE TABLE mine (x)")
    before = (out / "results.sqlite").read_bytes()
    with pytest.raises(StoreError, match="not a results store .tables: mine.; nothing was written"):
        ResultsStore(out)
    assert (out / "results.sqlite").read_bytes() == before
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_cli_out_file_exit_2_and_report_output_says_where_summary_goes(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    _manifest(tmp_path)
    path = _suite(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    assert main(["run", str(path), "--out", str(tmp_path / "file.txt" / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, so no directory can be made below it" in err[0]

    # report -o FILE: summary.json / metrics.csv written beside FILE are named, never silently replaced
    import harness.report

    def fake_build(out_dir, output=None, **named):  # the destinations' own checks: test_report_destinations.py
        target = Path(output) if output else Path(out_dir) / "report.html"
        target.write_text("<html/>")
        (target.parent / "summary.json").write_text("{}")
        (target.parent / "metrics.csv").write_text("")
        return target

    monkeypatch.setattr(harness.report, "build_report", fake_build)
    results = tmp_path / "results"
    store = ResultsStore(results)
    store.set_meta(suite_config={"name": "x"})  # a store without its suite record is refused (exit 2)
    store.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text('{"format": "lus-harness summary 1", "suite": {"name": "x"}}')
    assert main(["report", str(results), "-o", str(elsewhere / "r.html")]) == 0
    out = capsys.readouterr().out
    assert f"summary.json and metrics.csv: written to {elsewhere.resolve()} (replaced this suite's earlier " \
           "summary.json)" in out
