"""The report, built from a synthetic results store written through the store's real write API.

The store holds 3 arms x 2 repeats x 3 folds of a 30-patient data set (2 videos of 2 frames each
per patient) with predictions, metadata, timings, learned parameters, epochs, a failed run of a
fourth arm and a skipped item.  ``make_store`` is shared with tests/test_report_browser.py.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness.metrics import run_metrics
from harness.store import ResultsStore
from harness.versions import code_version as current_code

ARMS = ("baseline", "pm", "stem")
REPEATS, FOLDS = 2, 3
N_PATIENTS, VIDEOS, FRAMES = 30, 2, 2  # simulated: patients, clips per patient, frames per clip
SIGNAL = {"baseline": 1.0, "pm": 1.5, "stem": 1.0}  # pm separates the classes better


def suite_dict(description: str = "A synthetic store for the report's tests.") -> dict[str, Any]:
    """The suite as the runner stores it (``Suite.model_dump(mode='json')`` when it validates)."""
    raw = {
        "name": "tiny",
        "description": description,
        "seed": 0,
        "data": {
            "source": "simulated",
            "patients": N_PATIENTS,
            "frames_per_patient": VIDEOS * FRAMES,
            "frames_per_video": FRAMES,
            "image_size": 32,
        },
        "model": {"architecture": "efficientnet_b0", "pretrained": "none"},
        "training": {"epochs": 3, "batch_size": 8, "lr": 0.001},
        "evaluation": {"folds": FOLDS, "repeats": REPEATS, "primary_metric": "roc_auc"},
        "arms": [
            {"name": "baseline"},
            {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 5, "kappa": 0.1, "step": 0.2}}]},
            {"name": "stem", "model": {"stem": {"type": "diffusion", "mode": "replace", "iterations": 2}}},
            {"name": "broken", "preprocess": [{"gaussian": {"sigma": 1.0}}]},
        ],
        "report": {
            "baseline": "baseline",
            "rope": 0.01,
            "alpha": 0.05,
            "strata": ["b_line_count", "probe"],
            "gradcam": True,
        },
    }
    try:
        from harness.suite import Suite

        return Suite.model_validate(raw).model_dump(mode="json")
    except Exception:  # the filters/layers of the arms are not registered: store it as written
        return raw


def frames(suite: dict[str, Any], cache_dir: Path) -> Any:
    """The simulated frames of the suite (0.2 s): the store refers to the real sample ids, so the
    report can show these frames and compute Grad-CAM maps on them."""
    from pydantic import TypeAdapter

    from harness.data import load_frames
    from harness.data.config import DataConfig

    cfg = TypeAdapter(DataConfig).validate_python(suite["data"])
    return load_frames(cfg, base_dir=Path.cwd(), cache_dir=cache_dir)


def samples(fs: Any) -> pd.DataFrame:
    df = pd.DataFrame({"sample_id": fs.sample_ids, "group_id": fs.groups, "video_id": fs.videos, "label": fs.labels})
    return pd.concat([df, fs.metadata[["b_line_count", "probe"]].reset_index(drop=True)], axis=1)


def split_groups(groups: list[str], repeat: int) -> list[list[str]]:
    order = np.random.default_rng(100 + repeat).permutation(len(groups))
    return [[groups[i] for i in order[k::FOLDS]] for k in range(FOLDS)]


def save_checkpoints(out_dir: Path, suite: dict[str, Any]) -> dict[str, str]:
    """Untrained but real checkpoints of each arm's network (what Grad-CAM reloads)."""
    from safetensors.torch import save_file

    from harness.models import create_model
    from harness.suite import ModelConfig, deep_merge

    paths = {}
    for arm in ARMS:
        override = next(a.get("model") or {} for a in suite["arms"] if a["name"] == arm)
        try:
            model = create_model(ModelConfig.model_validate(deep_merge(suite["model"], override)), in_chans=1)
        except Exception:  # e.g. the diffusion stem is not available: the report must say so
            continue
        rel = f"checkpoints/{arm}.safetensors"
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / rel))
        paths[arm] = rel
    return paths


def make_store(
    out_dir: Path,
    description: str = "A synthetic store for the report's tests.",
    checkpoints: bool = False,
    rename: dict[str, str] | None = None,
    code_version: str | None = None,
) -> dict[str, Any]:
    """Write the synthetic store into ``out_dir``; returns what a test needs to check values.

    ``rename`` maps arm names to others (as written in the store, unvalidated); ``code_version`` is the
    one the runs record (default: this checkout's)."""
    rename = rename or {}
    store = ResultsStore(out_dir)
    suite = suite_dict(description)
    for a in suite["arms"]:
        a["name"] = rename.get(a["name"], a["name"])
    cache_dir = out_dir / "cache"
    df = samples(frames(suite, cache_dir))
    ckpts = save_checkpoints(out_dir, suite) if checkpoints else {}
    store.set_meta(
        suite_name="tiny",
        suite_config=suite,
        suite_hash="abc123",
        suite_path=None,
        cache_dir=str(cache_dir),
        checkpoints=ckpts,
        environment={"python": "3.11", "torch": "2.x", "cpu": "test CPU"},
        command="python -m harness run suites/tiny.yaml --out reports/tiny",
        data_description="12 simulated patients, 48 frames of 32 x 32 px.",
        data_content_hash="deadbeef",
        started_at=1_700_000_000.0,
    )
    store.put_samples(df["sample_id"], df["group_id"], df["video_id"], df["label"], df[["b_line_count", "probe"]])
    store.put_skipped([{"item": "P99_v0.mp4", "reason": "cannot decode <video>"}])
    store.put_preprocessing("pm", "hash-pm", 2.5, len(df))
    roc: dict[str, list[float]] = {a: [] for a in ARMS}
    for r in range(REPEATS):
        folds = split_groups(sorted(df["group_id"].unique()), r)
        for f in range(FOLDS):
            test_groups = set(folds[f])
            rest = [g for k, fg in enumerate(folds) if k != f for g in fg]
            val_groups, train_groups = set(rest[:2]), set(rest[2:])
            store.put_splits(
                [(r, f, g, "test") for g in test_groups]
                + [(r, f, g, "val") for g in val_groups]
                + [(r, f, g, "train") for g in train_groups]
            )
            test = df[df["group_id"].isin(test_groups)].reset_index(drop=True)
            y = test["label"].to_numpy()
            rng = np.random.default_rng(1000 * r + f)
            common = rng.normal(0, 1.3, len(y))  # shared by all arms: the paired design
            for a_i, arm in enumerate(ARMS):
                own = np.random.default_rng(7 + 31 * a_i + 1000 * r + f).normal(0, 0.4, len(y))
                prob = 1 / (1 + np.exp(-(SIGNAL[arm] * (2 * y - 1) + common + own)))
                metrics = run_metrics(y, prob, test["video_id"].to_numpy(), test["group_id"].to_numpy())
                roc[arm].append(next(m["value"] for m in metrics if m["metric"] == "roc_auc" and m["level"] == "frame"))
                run_id = store.claim_run(rename.get(arm, arm), r, f, "h-" + arm, seed=r * 10 + f,
                                         code_version=code_version if code_version is not None else current_code())
                learned = (
                    {"stem.kappa": list(np.linspace(0.05, 0.3, 8) + 0.01 * f), "stem.step": [0.2] * 8}
                    if arm == "stem"
                    else {}
                )
                history = [
                    {
                        "epoch": e,
                        "train_loss": 0.7 - 0.1 * e,
                        "val_loss": 0.7,
                        "val_roc_auc": 0.6,
                        "lr": 1e-3,
                        "seconds": 1.0,
                        "learned_params": ({"stem.kappa": [0.1 + 0.02 * e] * 8} if arm == "stem" else {}),
                    }
                    for e in range(3)
                ]
                store.finish_run(
                    run_id,
                    metrics,
                    list(zip(test["sample_id"], prob.tolist(), y.tolist())),
                    timings={
                        "train_seconds": 10.0 * (1 + a_i) + f,
                        "inference_ms_per_image": 2.0 + a_i,
                        "peak_rss_mb": 500.0,
                    },
                    learned_params=learned,
                    epochs=history,
                    checkpoint=ckpts.get(arm) if r == 0 and f == 0 else None,
                    info={
                        "n_train": int(df["group_id"].isin(train_groups).sum()),
                        "n_val": int(df["group_id"].isin(val_groups).sum()),
                        "n_test": len(test),
                        "n_test_groups": len(test_groups),
                        "n_train_groups": len(train_groups),
                        "n_val_groups": len(val_groups),
                        "leakage_check": {
                            "groups_in_train_and_test": 0,
                            "groups_in_val_and_test": 0,
                            "groups_in_train_and_val": 0,
                            "samples_in_two_roles": 0,
                        },
                        "device": "cpu",
                    },
                )
    bad = store.claim_run("broken", 0, 0, "h-broken", seed=0)
    store.fail_run(bad, "loss became NaN at epoch 2 <oops>")
    store.close()
    return {"roc": roc, "samples": df}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from harness.report import build_report

    out = tmp_path_factory.mktemp("report")
    info = make_store(out, description="Escaping check: <script>alert(1)</script> & more", checkpoints=True)
    path = build_report(out)
    return {
        "out": out,
        "html_path": path,
        "html": path.read_text(encoding="utf-8"),
        "summary": json.loads((out / "summary.json").read_text(encoding="utf-8")),
        **info,
    }


def test_writes_three_files_beside_each_other(built: dict[str, Any]) -> None:
    assert built["html_path"] == built["out"] / "report.html"
    for name in ("report.html", "summary.json", "metrics.csv"):
        assert (built["out"] / name).stat().st_size > 0


def test_summary_keys_and_known_values(built: dict[str, Any]) -> None:
    s = built["summary"]
    assert {"suite", "baseline", "primary_metric", "arms", "comparisons"} <= set(s)
    assert s["suite"]["name"] == "tiny" and s["baseline"] == "baseline" and s["primary_metric"] == "roc_auc"
    auc = s["arms"]["pm"]["metrics"]["roc_auc"]
    assert {"mean", "std", "ci95", "per_run"} <= set(auc)
    assert auc["mean"] == pytest.approx(np.mean(built["roc"]["pm"]), abs=1e-12)
    assert auc["std"] == pytest.approx(np.std(built["roc"]["pm"], ddof=1), abs=1e-12)
    assert len(auc["per_run"]) == REPEATS * FOLDS
    assert set(auc["per_run"][0]) == {"repeat", "fold", "value"}
    assert auc["per_run"][0]["value"] == pytest.approx(built["roc"]["pm"][0], abs=1e-12)
    lo, hi = auc["ci95"]
    assert lo < auc["mean"] < hi
    # video level is present too (2 frames per video)
    assert "video/mean" in s["arms"]["pm"]["levels"]


def test_comparisons_every_test_and_holm(built: dict[str, Any]) -> None:
    s = built["summary"]
    comps = s["comparisons"]
    n_metrics = len(s["arms"]["baseline"]["metrics"])
    assert n_metrics == 10
    assert len(comps) == 2 * n_metrics  # pm and stem against the baseline (broken has no runs)
    assert {(c["arm"], c["versus"]) for c in comps} == {("pm", "baseline"), ("stem", "baseline")}
    for c in comps:
        assert {"arm", "versus", "metric", "mean_difference", "ci95", "tests"} <= set(c)
        t = c["tests"]
        for name in ("corrected_t", "wilcoxon"):
            assert {"statistic", "p", "p_holm"} <= set(t[name])
            if t[name]["p"] is not None:
                assert t[name]["p_holm"] >= t[name]["p"] - 1e-15
        assert {"p_worse", "p_rope", "p_better"} <= set(t["bayes_correlated_t"])
        assert sum(t["bayes_correlated_t"][k] for k in ("p_worse", "p_rope", "p_better")) == pytest.approx(1.0)
        assert {"statistic", "p"} <= set(t["delong"]) and {"statistic", "p"} <= set(t["mcnemar"])
    pm_auc = next(c for c in comps if c["arm"] == "pm" and c["metric"] == "roc_auc")
    diff = np.array(built["roc"]["pm"]) - np.array(built["roc"]["baseline"])
    assert pm_auc["mean_difference"] == pytest.approx(diff.mean(), abs=1e-12)
    assert pm_auc["mean_difference"] > 0 and pm_auc["tests"]["bayes_correlated_t"]["p_better"] > 0.5
    assert pm_auc["tests"]["delong"]["p"] is not None
    # lower-is-better: "better" for the Brier score means a lower score
    pm_brier = next(c for c in comps if c["arm"] == "pm" and c["metric"] == "brier")
    assert pm_brier["mean_difference"] < 0
    assert pm_brier["tests"]["bayes_correlated_t"]["p_better"] > pm_brier["tests"]["bayes_correlated_t"]["p_worse"]


def test_ranking_strata_timing_failed_and_skipped(built: dict[str, Any]) -> None:
    s = built["summary"]
    assert s["friedman"]["available"] and s["friedman"]["n_arms"] == 3 and s["friedman"]["cd"] > 0
    assert s["friedman"]["mean_ranks"]["pm"] < s["friedman"]["mean_ranks"]["baseline"]
    columns = [st["column"] for st in s["strata"]]
    assert columns == ["b_line_count", "probe"]
    strata = {r["stratum"] for r in s["strata"][0]["rows"]}
    assert strata == {str(v) for v in built["samples"]["b_line_count"].unique()}  # few levels: one stratum each
    zero = next(r for r in s["strata"][0]["rows"] if r["stratum"] == "0" and r["arm"] == "baseline")
    assert zero["positive_rate"] == 0 and zero["metrics"]["roc_auc"]["mean"] is None
    assert s["arms"]["stem"]["timing"]["train_seconds"] == pytest.approx(np.mean([30.0 + f for f in range(FOLDS)]))
    assert s["arms"]["pm"]["timing"]["preprocessing_seconds"] == pytest.approx(2.5)
    kappa = s["learned_parameters"]["stem"]["stem.kappa"]
    expected = np.concatenate([np.linspace(0.05, 0.3, 8) + 0.01 * f for _ in range(REPEATS) for f in range(FOLDS)])
    assert kappa["n"] == expected.size and kappa["mean"] == pytest.approx(expected.mean())
    assert kappa["min"] == pytest.approx(expected.min()) and kappa["max"] == pytest.approx(expected.max())
    assert set(s["learned_parameters"]) == {"stem"}
    assert s["leakage"] == {"total": 18, "passed": 18, "failed": 0, "unknown": 0, "details": []}
    assert s["failed_runs"] == [
        {"arm": "broken", "repeat": 0, "fold": 0, "status": "failed", "error": "loss became NaN at epoch 2 <oops>"}
    ]
    assert s["skipped"] == [{"item": "P99_v0.mp4", "reason": "cannot decode <video>"}]


def test_summary_json_is_strict_json(built: dict[str, Any]) -> None:
    text = (built["out"] / "summary.json").read_text(encoding="utf-8")
    assert not re.search(r"[:\[,]\s*-?(NaN|Infinity)\b", text)
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_metrics_csv(built: dict[str, Any]) -> None:
    df = pd.read_csv(built["out"] / "metrics.csv")
    assert list(df.columns) == ["run_id", "arm", "repeat", "fold", "level", "aggregation", "metric", "value"]
    frame_auc = df[(df["metric"] == "roc_auc") & (df["level"] == "frame") & (df["arm"] == "baseline")]
    assert len(frame_auc) == REPEATS * FOLDS
    assert frame_auc["value"].to_numpy() == pytest.approx(built["roc"]["baseline"])


def test_html_has_every_section_arm_and_figure(built: dict[str, Any]) -> None:
    page = built["html"]
    for arm in ARMS:
        assert f">{arm}<" in page
    for section in (
        "verdict",
        "methods",
        "metrics",
        "comparisons",
        "ranking",
        "strata",
        "figures",
        "timing",
        "integrity",
        "environment",
    ):
        assert f'id="{section}"' in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 6  # roc, paired, cd, timing, learned, strata x2 (frames/Grad-CAM need the data)
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    for fig in ("fig-roc", "fig-paired", "fig-cd", "fig-timing", "fig-learned", "fig-frames", "fig-gradcam"):
        assert f'id="{fig}"' in page
    assert "python -m harness run suites/tiny.yaml --out reports/tiny" in page
    assert "Perona" in page or "perona_malik" in page  # the arm's filter is described


def test_html_is_self_contained(built: dict[str, Any]) -> None:
    page = built["html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page, re.I)
    assert not re.search(r"@import", page)
    assert "<script" not in page.lower().replace("&lt;script", "")
    assert "<link" not in page.lower()
    assert "default-src &#39;none&#39;" in page  # the Content-Security-Policy meta tag


def test_user_strings_are_escaped(built: dict[str, Any]) -> None:
    page = built["html"]
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "loss became NaN at epoch 2 &lt;oops&gt;" in page
    assert "cannot decode &lt;video&gt;" in page


def test_verdicts_use_stats_verdict(built: dict[str, Any]) -> None:
    from harness import stats

    s = built["summary"]
    comp = next(c for c in s["comparisons"] if c["arm"] == "pm" and c["metric"] == "roc_auc")
    assert s["arms"]["pm"]["verdict"] == stats.verdict(comp, alpha=0.05)
    assert s["arms"]["pm"]["verdict"].split(" (")[0] in built["html"]


def test_the_code_that_computed_the_runs_is_stated(built: dict[str, Any]) -> None:
    """Runs of this checkout's code: said so, no warning. Runs of other code (the store of an older
    checkout): the page opens with it, summary.json and the Markdown block say it, nothing else changes."""
    from harness.report import build_report
    from harness.report.analysis import analyse
    from harness.report.inputs import read_store
    from harness.report.markdown import render_block

    assert built["summary"]["code"] == {"runs": {current_code(): 18}, "current": current_code(), "is_current": True}
    assert 'id="code-check"' not in built["html"]
    assert f"<dt>code_version</dt><dd>{current_code()} (this checkout&#39;s)</dd>" in built["html"]

    out = built["out"].parent / "old-code"
    make_store(out, code_version="0123456789abcdef")
    html = build_report(out).read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["code"] == {"runs": {"0123456789abcdef": 18}, "current": current_code(), "is_current": False}
    warning = re.search(r'<p class="note bad code-check" id="code-check"><strong>(.*?)</strong>', html)
    assert warning is not None and warning.group(1) == (
        f"Code version 0123456789abcdef (18 runs); this checkout computes {current_code()}: these runs were computed "
        "by other code, and `harness run` on this suite would redo them.")
    assert html.index('id="code-check"') < html.index('class="question"')  # before the verdicts
    block = render_block(analyse(read_store(out)), "python -m harness report X --markdown docs/results.md", None, None)
    assert f"- **Code version** 0123456789abcdef (18 runs); this checkout computes {current_code()}" in block
    current = render_block(analyse(read_store(built["out"])), "cmd", None, None)
    assert f"- **Code version** {current_code()}; " in current  # no "(this checkout's)" in a committed page


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    from harness.report import build_report
    from harness.store import StoreError

    with pytest.raises(StoreError, match="no results store"):
        build_report(tmp_path)


def test_output_path_and_nan_metrics(tmp_path: Path) -> None:
    """``output`` moves all three files; a NaN metric (one-class fold) is null in JSON, not NaN."""
    from harness.report import build_report

    make_store(tmp_path / "run")
    store = ResultsStore(tmp_path / "run")
    first = str(store.samples()["sample_id"].iloc[0])
    run_id = store.claim_run("baseline", 0, 0, "h-baseline", seed=0)
    store.finish_run(
        run_id,
        [
            {"level": "frame", "aggregation": "none", "metric": "roc_auc", "value": math.nan},
            {"level": "frame", "aggregation": "none", "metric": "accuracy", "value": 0.5},
        ],
        [(first, 0.4, 0)],
        timings={},
        learned_params={},
        epochs=[],
    )
    store.close()
    out = build_report(tmp_path / "run", tmp_path / "elsewhere" / "r.html")
    assert out == tmp_path / "elsewhere" / "r.html" and out.is_file()
    summary = json.loads((out.parent / "summary.json").read_text())
    assert (out.parent / "metrics.csv").is_file()
    per_run = summary["arms"]["baseline"]["metrics"]["roc_auc"]["per_run"]
    assert (0, 0) not in {(r["repeat"], r["fold"]) for r in per_run}  # the NaN run is left out...
    assert [n for n in summary["notes"] if "no finite score" in n] == [  # ...and said so, once per arm
        "pm: up to 1 run(s) had no finite score in this arm or in baseline (a failed run, or a metric undefined on "
        "a fold); its comparisons use the runs both arms have.",
        "stem: up to 1 run(s) had no finite score in this arm or in baseline (a failed run, or a metric undefined on "
        "a fold); its comparisons use the runs both arms have.",
    ]


def test_prediction_tests_match_independent_references(built: dict[str, Any]) -> None:
    """McNemar against statsmodels, DeLong against the stats module fed by hand, Friedman against
    scipy, the corrected t-test against its formula and Holm against statsmodels."""
    from scipy.stats import friedmanchisquare
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
    from statsmodels.stats.multitest import multipletests

    from harness import stats

    s = built["summary"]
    pred = ResultsStore(built["out"], readonly=True).predictions()
    pt = {p["arm"]: p for p in s["prediction_tests"]}
    a = pred[pred["arm"] == "pm"].merge(
        pred[pred["arm"] == "baseline"], on=["repeat", "fold", "sample_id"], suffixes=("", "_b")
    )
    rep0 = a[a["repeat"] == 0]
    ok_a, ok_b = (rep0["prob"] >= 0.5) == rep0["label"], (rep0["prob_b"] >= 0.5) == rep0["label"]
    table = [
        [int((ok_b & ok_a).sum()), int((ok_b & ~ok_a).sum())],
        [int((~ok_b & ok_a).sum()), int((~ok_b & ~ok_a).sum())],
    ]
    # Several frames per patient: the clustered statistic (Durkalski et al. 2003), by an independent loop.
    num = den = 0.0
    for _, g in rep0.assign(ok_a=ok_a, ok_b=ok_b).groupby("group_id"):
        diff = int((g["ok_b"] & ~g["ok_a"]).sum()) - int((~g["ok_b"] & g["ok_a"]).sum())
        num, den = num + diff, den + diff**2
    from scipy.stats import chi2 as chi2_dist

    assert pt["pm"]["mcnemar"]["clustered"] is True and "Durkalski" in pt["pm"]["mcnemar"]["form"]
    assert pt["pm"]["mcnemar"]["statistic"] == pytest.approx(num**2 / den, rel=1e-12)
    assert pt["pm"]["mcnemar"]["p"] == pytest.approx(chi2_dist.sf(num**2 / den, 1), rel=1e-9)
    assert s["comparisons"][0]["tests"]["mcnemar"]["clustered"] is True
    # The unclustered test (what the report ran before) treats frames as independent; it is not what is reported.
    ref = sm_mcnemar(table, exact=(table[0][1] + table[1][0]) < 25, correction=True)
    assert pt["pm"]["mcnemar"]["p"] != pytest.approx(ref.pvalue, rel=1e-6)
    assert len(rep0) == len(built["samples"])  # one repeat tests every sample exactly once

    folds = []
    for (r, _fold), g in a.groupby(["repeat", "fold"]):
        try:
            d = stats.delong_paired(g["label"], g["prob"], g["prob_b"], clusters=g["group_id"])
        except ValueError:  # a fold with a class held by a single patient: not testable, left out
            continue
        folds.append({**d, "repeat": r})
    assert len(folds) == pt["pm"]["delong"]["n_folds"] + pt["pm"]["delong"].get("n_folds_skipped", 0) >= 2
    assert pt["pm"]["delong"]["p"] == pytest.approx(stats.combine_delong_folds(folds)["p"], rel=1e-9)

    m = pd.read_csv(built["out"] / "metrics.csv")
    auc = m[(m["metric"] == "roc_auc") & (m["level"] == "frame")].pivot_table(
        index=["repeat", "fold"], columns="arm", values="value"
    )
    chi2, p = friedmanchisquare(*(auc[arm] for arm in ARMS))
    assert s["friedman"]["statistic"] == pytest.approx(chi2) and s["friedman"]["p"] == pytest.approx(p)

    runs = ResultsStore(built["out"], readonly=True).runs("done")
    base_runs = runs[runs["arm"] == "baseline"].set_index(["repeat", "fold"]).loc[auc.index]
    ratio = np.mean(base_runs["n_test"] / (base_runs["n_train"] + base_runs["n_val"]))
    comps = {(c["arm"], c["metric"]): c for c in s["comparisons"]}
    raw = {}
    for arm in ("pm", "stem"):
        d = (auc[arm] - auc["baseline"]).to_numpy()
        t = d.mean() / np.sqrt((1 / d.size + ratio) * d.var(ddof=1))
        assert comps[(arm, "roc_auc")]["tests"]["corrected_t"]["statistic"] == pytest.approx(t, rel=1e-7)  # metrics.csv keeps 10 digits
        raw[arm] = comps[(arm, "roc_auc")]["tests"]["corrected_t"]["p"]
    holm = multipletests([raw["pm"], raw["stem"]], method="holm")[1]
    assert comps[("pm", "roc_auc")]["tests"]["corrected_t"]["p_holm"] == pytest.approx(holm[0])
    assert comps[("stem", "roc_auc")]["tests"]["corrected_t"]["p_holm"] == pytest.approx(holm[1])


def test_hostile_arm_name_is_escaped(tmp_path: Path) -> None:
    """Arm names are limited by the schema, but a store is read as it is: markup in one is text."""
    from harness.report import build_report

    hostile = '<img src=x onerror="alert(1)">'
    make_store(tmp_path, rename={"stem": hostile})
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert hostile not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page


# ----------------------------------------------------------------------------- units


def test_mean_roc_is_the_vertical_average() -> None:
    from harness.report.figures import mean_roc

    grid = np.linspace(0, 1, 5)
    curves = [
        (np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])),
        (np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.5, 1.0])),
    ]
    mean, sd = mean_roc(curves, grid)
    # curve 1 at fpr .25 = 0.5, curve 2 = 0.5 + 0.5*0.25 = 0.625
    assert mean == pytest.approx([0.0, (0.5 + 0.625) / 2, (1.0 + 0.75) / 2, (1.0 + 0.875) / 2, 1.0])
    assert sd[2] == pytest.approx(0.125)


def test_cd_cliques() -> None:
    from harness.report.figures import cd_cliques

    ranks = {"a": 1.0, "b": 1.5, "c": 2.9, "d": 3.2}
    assert cd_cliques(ranks, 1.0) == [["a", "b"], ["c", "d"]]
    assert cd_cliques(ranks, 2.0) == [["a", "b", "c"], ["b", "c", "d"]]
    assert cd_cliques(ranks, 0.1) == []


def test_jsonable_and_formatting() -> None:
    from harness.jsonable import jsonable
    from harness.report.html import fmt, fmt_ci, fmt_p, fmt_p_text

    assert jsonable({"a": float("nan"), "b": [np.float32(1.5), np.int64(2), (np.inf,)], 3: np.bool_(True)}) == {
        "a": None,
        "b": [1.5, 2, [None]],
        "3": True,
    }
    assert fmt(float("nan")) == "–" and fmt(0.12345) == "0.123" and fmt(None) == "–"
    assert fmt_p(0.0004) == "<0.001" and fmt_p(0.04) == "0.040" and fmt_p_text(1e-5) == "p < 0.001"
    assert fmt_ci([0.1, 0.2]) == "[0.100, 0.200]" and fmt_ci(None) == "–" and fmt_ci([float("nan"), 1]) == "–"


def test_summary_json_is_written_from_the_analysis(built: dict[str, Any]) -> None:
    """One analysis object feeds summary.json and the page; the score index is built once and owned by the inputs."""
    from harness.jsonable import jsonable
    from harness.report.analysis import analyse
    from harness.report.inputs import read_store
    from harness.report.outputs import summary

    inputs = read_store(built["out"])
    assert inputs.scores is inputs.scores  # computed once per Inputs, no module-level cache
    analysis = analyse(inputs)
    assert jsonable(summary(analysis)) == built["summary"]
    verdicts = {v.arm: v for v in analysis.verdicts}
    assert set(verdicts) == {"pm", "stem", "broken"}  # every arm besides the baseline, even one that failed
    assert verdicts["broken"].comparison is None and verdicts["broken"].kind == "not-compared"
    assert "no completed run" in verdicts["broken"].text and "loss became NaN" in verdicts["broken"].text
    assert analysis.arm_summaries["pm"].verdict == verdicts["pm"].text == built["summary"]["arms"]["pm"]["verdict"]
    pm = next(c for c in analysis.comparisons if c.arm == "pm" and c.metric == "roc_auc")
    assert f"{pm.mean_difference:.3f}" in built["html"]  # the page shows the same numbers
    assert analysis.ranking.available and set(analysis.ranking.mean_ranks) == {"baseline", "pm", "stem"}


def test_figure_specs_are_plain_functions_with_unique_ids() -> None:
    from harness.report.figure_specs import SPECS

    ids = [s.id for s in SPECS]
    assert len(ids) == len(set(ids)) >= 8
    assert ids[0] == "forest"  # the first thing a reader sees
    for spec in SPECS:  # module-level functions, not closures over report state
        assert spec.make.__qualname__ == spec.make.__name__ and spec.make.__closure__ is None
        assert spec.shown.__qualname__ == spec.shown.__name__


def test_report_modules_hold_no_module_level_cache() -> None:
    import importlib
    import pkgutil

    import harness.report

    checked, offenders = [], []
    for info in pkgutil.iter_modules(harness.report.__path__):
        if info.name == "samples":  # not this test's concern: it reads the store's explanations
            continue
        module = importlib.import_module(f"harness.report.{info.name}")
        checked.append(info.name)
        offenders += [f"harness.report.{info.name}.{name}" for name, value in vars(module).items()
                      if name.startswith("_") and not name.startswith("__") and isinstance(value, (dict, list, set))]
    assert {"analysis", "inputs", "figure_specs", "outputs"} <= set(checked)
    assert offenders == [], f"module-level mutable state: {offenders}"
