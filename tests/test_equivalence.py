"""Verdicts that decide (issue 26 §3): the equivalence margin, the four-way verdict, contrasts, the noise floor
as a defined test, and the label sensitivity.

The TOST is checked against a hand computation and against statsmodels; the report's numbers against the
stored per-run scores (written through the store's real API by ``build`` of tests/test_report_verdicts.py,
with the frame-level ROC-AUC of each run set by hand), recomputed here with :mod:`harness.stats`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from harness import stats
from harness.metrics import run_metrics
from harness.stats import corrected_tost, decide
from harness.store import ResultsStore, StoreError
from test_report_verdicts import FOLDS, REPEATS, build, suite

KEYS = [(r, f) for r in range(REPEATS) for f in range(FOLDS)]
BASE = [0.80, 0.82, 0.78, 0.81, 0.79, 0.80]
ARMS = [
    {"name": "baseline"},
    {"name": "better", "preprocess": [{"perona_malik": {"iterations": 5}}]},
    {"name": "same", "preprocess": [{"gaussian": {"sigma": 1.0}}]},
    {"name": "noisy", "preprocess": [{"gaussian": {"sigma": 2.0}}]},
    {"name": "noise-floor", "description": "the baseline, another seed", "training": {"seed_offset": 1}},
]
AUC = {
    "baseline": BASE,
    "better": [b + 0.10 + e for b, e in zip(BASE, [0.004, -0.003, 0.002, -0.004, 0.003, -0.002])],
    "same": [b + e for b, e in zip(BASE, [0.002, -0.001, 0.001, -0.002, 0.001, 0.000])],
    "noisy": [b + e for b, e in zip(BASE, [0.05, -0.06, 0.04, -0.03, 0.06, -0.05])],
    "noise-floor": [b + e for b, e in zip(BASE, [-0.003, 0.002, 0.001, 0.003, -0.002, -0.001])],
}


# --------------------------------------------------------------------------- the pure TOST


def test_tost_equals_a_hand_computation_with_the_correction() -> None:
    # d: mean 0.01; s² = (0 + 4 + 4 + 1 + 1 + 0)·1e-4 / 5 = 2e-4; σ̂² = (1/6 + 1/4)·2e-4 = 1/12000
    d = [0.01, 0.03, -0.01, 0.02, 0.00, 0.01]
    r = corrected_tost(d, ratio=0.25, margin=0.05)
    se = 1 / math.sqrt(12000)
    assert r.se == pytest.approx(se, rel=1e-12)
    assert r.t_lower == pytest.approx(0.06 / se, rel=1e-12)  # (0.01 + 0.05) / σ̂ = 6.5727
    assert r.t_upper == pytest.approx(-0.04 / se, rel=1e-12)  # (0.01 − 0.05) / σ̂ = −4.3818
    assert r.p_lower == pytest.approx(sps.t.sf(0.06 / se, 5), rel=1e-12)
    assert r.p_upper == pytest.approx(sps.t.cdf(-0.04 / se, 5), rel=1e-12)
    # Student's t with 5 df in closed form (odd df): F(t) = 1/2 + (θ + sin θ cos θ (1 + 2/3 cos² θ)) / π,
    # θ = atan(t / √5); the upper bound is the binding one
    theta = math.atan(-0.04 / se / math.sqrt(5))
    by_hand = 0.5 + (theta + math.sin(theta) * math.cos(theta) * (1 + 2 / 3 * math.cos(theta) ** 2)) / math.pi
    assert r.p == r.p_upper == pytest.approx(by_hand, rel=1e-12) == pytest.approx(0.00357134, abs=1e-8)
    half = sps.t.ppf(0.95, 5) * se
    assert r.ci90 == pytest.approx([0.01 - half, 0.01 + half]) and r.confidence == pytest.approx(0.90)
    # the correction's value: with ratio 0.25 the standard error is sqrt((1/6 + 1/4) / (1/6)) = sqrt(2.5) times
    # the uncorrected one, so the same data are further from equivalence
    plain = corrected_tost(d, ratio=0.0, margin=0.05)
    assert r.se == pytest.approx(plain.se * math.sqrt(2.5), rel=1e-12)
    assert plain.p < r.p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tost_without_the_correction_equals_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.8, 0.03, 10)
    arm = base + rng.normal(0.01, 0.02, 10)
    p, (t1, p1, df1), (t2, p2, df2) = ttost_paired(arm, base, -0.03, 0.03)
    r = corrected_tost(arm - base, ratio=0.0, margin=0.03)
    assert r.p == pytest.approx(p, rel=1e-10)
    assert (r.t_lower, r.p_lower, r.t_upper, r.p_upper) == pytest.approx((t1, p1, t2, p2), rel=1e-10)
    assert r.df == df1 == df2


def test_tost_interval_and_p_agree_and_degenerate_cases() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        d = rng.normal(rng.uniform(-0.05, 0.05), rng.uniform(0.005, 0.05), 8)
        r = corrected_tost(d, 0.2, 0.04)
        inside = -0.04 < r.ci90[0] and r.ci90[1] < 0.04
        assert inside == (r.p < 0.05)
    assert corrected_tost([0.01] * 4, 0.2, 0.05).p == 0.0  # all equal, inside the margin
    assert corrected_tost([0.07] * 4, 0.2, 0.05).p == 1.0  # all equal, outside
    for bad in ({"margin": 0.0}, {"margin": -0.1}, {"ratio": -1.0}):
        with pytest.raises(ValueError, match="margin|ratio"):
            corrected_tost([0.0, 0.1, 0.2], **{"ratio": 0.2, "margin": 0.05, **bad})


def test_decide_gives_four_answers_by_the_metric_direction() -> None:
    assert decide(0.01, 0.5, 0.1) == "better"
    assert decide(0.01, 0.5, -0.1) == "worse"
    assert decide(0.01, 0.5, -0.1, higher_is_better=False) == "better"  # brier, log-loss: lower is better
    assert decide(0.5, 0.01, 0.001) == "equivalent"
    assert decide(0.01, 0.01, 0.001) == "equivalent"  # detected, but smaller than the margin
    assert decide(0.5, 0.5, 0.02) == "undecided"
    assert decide(None, float("nan"), 0.02) == "undecided"


# --------------------------------------------------------------------------- the report


def _report(out: Path, **rep: Any) -> dict[str, Any]:
    from harness.report import build_report

    s = suite(ARMS)
    s["report"].update(rep)
    with ResultsStore(out) as store:
        store.set_meta(suite_config=s)
    build_report(out, markdown=out / "page.md", markdown_command="harness report")
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("equivalence")
    build(out, {a["name"]: 1.5 for a in ARMS}, arms=ARMS,
          frame_auc={arm: dict(zip(KEYS, values)) for arm, values in AUC.items()})
    return out


def _split(out: Path) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], float]]:
    runs = ResultsStore(out, readonly=True).runs()
    runs = runs[runs["arm"] == "baseline"]
    n_train = {(int(r.repeat), int(r.fold)): float(r.n_train + r.n_val) for r in runs.itertuples()}
    n_test = {(int(r.repeat), int(r.fold)): float(r.n_test) for r in runs.itertuples()}
    return n_train, n_test


def _diffs(a: str, b: str) -> np.ndarray:
    return np.array(AUC[a]) - np.array(AUC[b])


def _ratio(out: Path) -> float:
    n_train, n_test = _split(out)
    return float(np.mean([n_test[k] / n_train[k] for k in KEYS]))


def _comp(s: dict[str, Any], arm: str) -> dict[str, Any]:
    return next(c for c in s["comparisons"] if c["arm"] == arm and c["metric"] == "roc_auc")


@pytest.fixture(scope="module")
def generous(store: Path) -> tuple[dict[str, Any], str, str]:
    s = _report(store, equivalence_margin=0.05, contrasts=[["better", "same"], ["noisy", "same"]])
    return s, (store / "report.html").read_text(), (store / "page.md").read_text()


def test_an_equal_arm_is_equivalent_a_better_one_better_a_noisy_one_undecided(generous, store: Path) -> None:
    s, html, page = generous
    assert s["equivalence_margin"] == 0.05
    assert {a: s["arms"][a]["decision"] for a in ("better", "same", "noisy", "noise-floor")} == {
        "better": "better", "same": "equivalent", "noisy": "undecided", "noise-floor": "equivalent"}
    assert s["arms"]["same"]["verdict"].startswith("equivalent to the baseline within ±0.05 (")
    assert s["arms"]["better"]["verdict"].startswith("better than the baseline (")
    assert s["arms"]["noisy"]["verdict"].startswith("undecided: neither a difference from the baseline nor "
                                                    "equivalence within ±0.05 is shown (")
    # the undecided verdict states the interval and the margin
    eq = _comp(s, "noisy")["equivalence"]
    assert f"90 % corrected interval [{eq['ci90'][0]:+.3f}, {eq['ci90'][1]:+.3f}] against ±0.05" in \
        s["arms"]["noisy"]["verdict"]
    # the arm tables, the verdict boxes and the Markdown verdict lines carry it
    assert 'id="decision-rule"' in html and "TOST ±0.050" in html and '<div class="verdict equivalent">' in html
    assert "- **noisy** (frame level): undecided: neither a difference" in page
    assert "equivalence margin ±0.05" in page


def test_tost_p_values_are_the_corrected_tost_of_the_stored_runs_holm_across_arms(generous, store: Path) -> None:
    s, _, _ = generous
    ratio = _ratio(store)
    arms = ["better", "same", "noisy", "noise-floor"]
    expected = {a: corrected_tost(_diffs(a, "baseline"), ratio, 0.05) for a in arms}
    holm = multipletests([expected[a].p for a in arms], method="holm")[1]
    for arm, p_holm in zip(arms, holm):
        eq = _comp(s, arm)["equivalence"]
        assert eq["margin"] == 0.05 and eq["decision"] == s["arms"][arm]["decision"]
        assert eq["p_tost"] == pytest.approx(expected[arm].p, rel=1e-9, abs=1e-15)
        assert eq["p_tost_holm"] == pytest.approx(p_holm, rel=1e-9, abs=1e-15)
        assert eq["ci90"] == pytest.approx(expected[arm].ci90, rel=1e-9)
    # Holm changed something: the same arm's raw p is below its adjusted one
    assert _comp(s, "same")["equivalence"]["p_tost"] < _comp(s, "same")["equivalence"]["p_tost_holm"]
    # only the primary metric has a margin (it is in that metric's units)
    assert all("equivalence" not in c for c in s["comparisons"] if c["metric"] != "roc_auc")


def test_a_contrast_gives_the_expected_difference_and_p_holm_within_the_contrasts(generous, store: Path) -> None:
    s, html, page = generous
    n_train, n_test = _split(store)
    tr, te = [n_train[k] for k in KEYS], [n_test[k] for k in KEYS]
    frame = [c for c in s["contrasts"] if c["level"] == "frame"]
    assert [(c["first"], c["second"]) for c in frame] == [("better", "same"), ("noisy", "same")]
    ps = [stats.corrected_resampled_t(_diffs(a, b), tr, te, FOLDS, REPEATS)["p"] for a, b in (("better", "same"),
                                                                                              ("noisy", "same"))]
    for c, (a, b), p, p_holm in zip(frame, [("better", "same"), ("noisy", "same")], ps, stats.holm(ps)):
        assert c["mean_difference"] == pytest.approx(float(_diffs(a, b).mean()), abs=1e-12)
        assert c["tests"]["corrected_t"]["p"] == pytest.approx(p, rel=1e-9)
        assert c["tests"]["corrected_t"]["p_holm"] == pytest.approx(p_holm, rel=1e-9)
        tost = corrected_tost(_diffs(a, b), _ratio(store), 0.05)
        assert c["equivalence"]["p_tost"] == pytest.approx(tost.p, rel=1e-9)
    assert frame[0]["decision"] == "better" and frame[0]["verdict"].startswith("better than same (")
    assert frame[1]["decision"] == "undecided"
    assert 'id="contrasts"' in html and "#### Contrasts between arms" in page


def test_the_noise_floor_is_a_defined_test_against_the_margin(generous) -> None:
    s, html, _ = generous
    test = s["noise_floor"]["test"]["frame/none"]
    assert test["within_margin"] is True and test["p_tost_holm"] == _comp(s, "noise-floor")["equivalence"]["p_tost_holm"]
    caveat = next(c for c in s["arms"]["better"]["verdict_caveats"] if c.startswith("Seed-noise floor"))
    assert "tested against the margin (corrected TOST of noise-floor): the seeds alone move roc_auc by less than ±0.05" \
        in caveat


def test_a_tiny_margin_leaves_the_equal_arm_undecided(store: Path, tmp_path: Path) -> None:
    s = _report(store, equivalence_margin=0.001)
    assert s["arms"]["same"]["decision"] == "undecided" and s["arms"]["better"]["decision"] == "better"
    assert s["noise_floor"]["test"]["frame/none"]["within_margin"] is False
    assert "the seeds alone are not shown to move roc_auc by less than ±0.001" in " ".join(
        s["arms"]["same"]["verdict_caveats"])


def test_without_a_margin_the_verdicts_are_todays_and_contrasts_still_run(store: Path) -> None:
    s = _report(store, contrasts=[["better", "same"]])
    assert "equivalence_margin" not in s and "sensitivity" not in s and "test" not in s["noise_floor"]
    assert all("decision" not in a for a in s["arms"].values())
    assert all("equivalence" not in c for c in s["comparisons"])
    assert s["arms"]["same"]["verdict"] == stats.verdict(_comp(s, "same"), alpha=0.05)  # the Bayesian sentence
    (frame, *_) = [c for c in s["contrasts"] if c["level"] == "frame"]
    assert "equivalence" not in frame and "decision" not in frame
    assert frame["mean_difference"] == pytest.approx(float(_diffs("better", "same").mean()), abs=1e-12)
    assert frame["verdict"].startswith("better with probability > 0.99 (mean difference +0.0998")


# --------------------------------------------------------------------------- the suite refuses


def test_the_suite_refuses_an_unknown_contrast_arm_a_margin_not_above_zero_and_a_bad_exclusion() -> None:
    from harness.suite import SuiteError, load_suite

    with pytest.raises(SuiteError, match=r"report\.contrasts\[0\]: 'nope' not an arm; accepted: baseline"):
        load_suite("suites/quick.yaml", ["report.contrasts=[[baseline, nope]]"])
    with pytest.raises(SuiteError, match=r"report\.contrasts: \[0\]: \['baseline'\]; accepted: two different arm"):
        load_suite("suites/quick.yaml", ["report.contrasts=[[baseline]]"])
    for margin in ("0", "-0.05"):
        with pytest.raises(SuiteError, match=r"report\.equivalence_margin: .*accepted: a finite number > 0"):
            load_suite("suites/quick.yaml", [f"report.equivalence_margin={margin}"])
    with pytest.raises(SuiteError, match=r"report\.sensitivity: \[0\]\.exclude: \{\}"):
        load_suite("suites/quick.yaml", ["report.sensitivity=[{name: amb, exclude: {}}]"])
    ok = load_suite("suites/quick.yaml", ["report.equivalence_margin=0.05", "report.contrasts=[[learnable-stem, baseline]]",
                                          "report.sensitivity=[{name: amb, exclude: {probe: convex, label: 0}}]"])
    assert ok.report.equivalence_margin == 0.05 and ok.report.contrasts == [["learnable-stem", "baseline"]]


def test_validate_refuses_an_exclusion_on_a_column_the_data_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    rc = main(["validate", "suites/quick.yaml", "--set", "report.sensitivity=[{name: amb, exclude: {severity: 2}}]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "report.sensitivity[0] (amb): column(s) severity not in the samples' metadata; accepted: " in err[0]


# --------------------------------------------------------------------------- label sensitivity

RULE = {"name": "ambiguous-labels", "description": "severity 2-3 labelled no", "exclude": {"severity": [2, 3], "label": 0}}


def build_ambiguous(out: Path, rule: dict[str, Any] = RULE) -> Path:
    """``fooled`` scores every frame as ``baseline`` does but calls the ambiguous negatives (severity 2-3 stored as
    text, label 0) positive: it is worse with them and identical without them."""
    build(out, {"baseline": 1.5, "fooled": 1.5}, arms=[{"name": "baseline"}, {"name": "fooled"}])
    with ResultsStore(out) as store:
        samples = store.samples()
        severity = [str(int(g[1:]) % 4) for g in samples["group_id"]]
        store.put_samples(samples["sample_id"], samples["group_id"], samples["video_id"], samples["label"],
                          pd.DataFrame({"severity": severity}))
        pred = store.predictions()
        runs = store.runs()
    # the fooled arm's runs again, through the real API, with the baseline's probabilities changed on those frames
    s = suite([{"name": "baseline"}, {"name": "fooled"}])
    s["report"].update(equivalence_margin=0.05, sensitivity=[rule])
    out2 = out.parent / (out.name + "-fooled")
    store = ResultsStore(out2)
    store.set_meta(suite_name="verdicts", suite_config=s, suite_hash="h")
    with ResultsStore(out, readonly=True) as old:
        splits, samples = old.splits(), old.samples()
    store.put_samples(samples["sample_id"], samples["group_id"], samples["video_id"], samples["label"],
                      samples[["severity"]])
    for (r, f), part in splits.groupby(["repeat", "fold"]):
        store.put_splits(list(zip(part["repeat"], part["fold"], part["group_id"], part["role"])))
    base = pred[pred["arm"] == "baseline"]
    for row in runs[runs["arm"] == "baseline"].itertuples():
        run = base[(base["repeat"] == row.repeat) & (base["fold"] == row.fold)]
        sev = run["sample_id"].map(dict(zip(samples["sample_id"], samples["severity"])))
        ambiguous = (run["label"] == 0) & sev.isin(["2", "3"])
        for arm, prob in (("baseline", run["prob"]), ("fooled", run["prob"].where(~ambiguous, 0.99))):
            run_id = store.claim_run(arm, int(row.repeat), int(row.fold), "h-" + arm, seed=0)
            metrics = run_metrics(run["label"].to_numpy(), prob.to_numpy(), run["video_id"].to_numpy(),
                                  run["group_id"].to_numpy())
            store.finish_run(run_id, metrics, list(zip(run["sample_id"], prob.tolist(), run["label"].tolist())),
                             timings={}, learned_params={}, epochs=[],
                             info={"n_train": int(row.n_train), "n_val": int(row.n_val), "n_test": int(row.n_test),
                                   "fit": {"status": "ok", "reason": ""}})
    store.close()
    return out2


def test_the_verdicts_without_the_ambiguous_labels_are_recomputed_from_the_predictions(tmp_path: Path) -> None:
    from harness.report import build_report

    out = build_ambiguous(tmp_path / "amb")
    build_report(out, markdown=out / "page.md", markdown_command="harness report")
    s = json.loads((out / "summary.json").read_text())
    (sens,) = s["sensitivity"]
    assert sens["name"] == "ambiguous-labels" and sens["rule"] == "label = 0 and severity in {2, 3}"
    row = next(r for r in sens["rows"] if r["arm"] == "fooled")
    full, without = row["all_samples"], row["without"]
    # with the ambiguous frames the fooled arm is worse; without them it is the baseline itself
    assert full["mean_difference"] == pytest.approx(_comp(s, "fooled")["mean_difference"]) and full["mean_difference"] < -0.01
    assert full["decision"] == s["arms"]["fooled"]["decision"] == "worse"
    assert without["mean_difference"] == 0.0 and without["decision"] == "equivalent" and row["changed"] is True
    # the numbers are the runs' ROC-AUC on the frames kept, recomputed from the stored predictions
    pred = ResultsStore(out, readonly=True).predictions()
    base = pred[(pred["arm"] == "baseline") & ~((pred["label"] == 0) & pred["severity"].isin(["2", "3"]))]
    hand = [roc_auc_score(g["label"], g["prob"]) for _, g in base.groupby(["repeat", "fold"])]
    assert without["mean_baseline"] == pytest.approx(float(np.mean(hand)), rel=1e-12)
    assert without["mean_baseline"] != pytest.approx(full["mean_baseline"], abs=1e-6)  # recomputed, not copied
    n_amb = pred[(pred["arm"] == "baseline") & (pred["label"] == 0) & pred["severity"].isin(["2", "3"])]
    assert sens["n_excluded"] == n_amb["sample_id"].nunique() > 0 and sens["n_excluded_positive"] == 0
    html = (out / "report.html").read_text()
    assert 'id="sensitivity-ambiguous-labels"' in html and "Verdicts without ambiguous-labels" in html
    assert "#### Verdicts without ambiguous-labels" in (out / "page.md").read_text()


def test_the_report_refuses_an_exclusion_on_a_column_the_store_lacks(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main
    from harness.report import build_report

    out = build_ambiguous(tmp_path / "bad", {"name": "amb", "exclude": {"grade": [2]}})
    with pytest.raises(StoreError) as err:
        build_report(out)
    message = str(err.value)
    assert "\n" not in message and "report.sensitivity[0] (amb): column(s) grade not in the samples' metadata; " \
        "accepted: sample_id, group_id, video_id, label, severity" in message
    assert not (out / "summary.json").exists() and not (out / "report.html").exists()
    assert main(["report", str(out)]) == 2 and "grade" in capsys.readouterr().err
