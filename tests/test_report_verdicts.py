"""The report's verdicts survive review (issue 13, with issue 10 item 3, 12 item 3 and 15 item 4).

Each test writes a small results store through the store's real write API, without frames or
training: patients with two videos of three frames, patient-grouped repeated folds, and per-arm
probabilities drawn so that an arm learns (``signal > 0``) or scores at chance (``signal = 0``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import stats
from harness.metrics import run_metrics
from harness.store import ResultsStore

REPEATS, FOLDS = 2, 3


def suite(arms: list[dict[str, Any]], primary_level: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"folds": FOLDS, "repeats": REPEATS, "primary_metric": "roc_auc"}
    if primary_level:
        ev["primary_level"] = primary_level
    return {
        "name": "verdicts",
        "description": "synthetic",
        "seed": 0,
        "data": {"source": "simulated"},
        "model": {"architecture": "efficientnet_b0", "pretrained": "none"},
        "training": {"epochs": 2, "batch_size": 8, "lr": 0.001},
        "evaluation": ev,
        "arms": arms,
        "report": {"baseline": "baseline", "rope": 0.01, "alpha": 0.05},
    }


def build(
    out: Path,
    signal: dict[str, float],
    *,
    arms: list[dict[str, Any]] | None = None,
    patients: int = 40,
    negative_patients: int = 20,
    failed: dict[str, list[tuple[int, int]]] | None = None,
    fits: dict[str, dict[tuple[int, int], dict[str, Any]]] | None = None,
    frame_auc: dict[str, dict[tuple[int, int], float]] | None = None,
    primary_level: str | None = None,
) -> Path:
    """A store of ``signal``'s arms (suite order); ``failed`` runs are failed, ``fits`` set the fit column,
    ``frame_auc`` overrides stored frame-level ROC-AUC values."""
    failed, fits, frame_auc = failed or {}, fits or {}, frame_auc or {}
    arms = arms or [{"name": a} for a in signal]
    store = ResultsStore(out)
    store.set_meta(suite_name="verdicts", suite_config=suite(arms, primary_level), suite_hash="h")
    ids, groups, videos, labels = [], [], [], []
    for p in range(patients):
        positive = p >= negative_patients
        for v in range(2):
            for f in range(3):
                ids.append(f"p{p:03d}_v{v}#{f}")
                groups.append(f"p{p:03d}")
                videos.append(f"p{p:03d}_v{v}")
                labels.append(int(positive and v == 0))
    ids_a, groups_a, videos_a, labels_a = map(np.array, (ids, groups, videos, labels))
    store.put_samples(ids, groups, videos, labels, None)
    names = sorted(set(groups))
    for r in range(REPEATS):
        order = np.random.default_rng(50 + r).permutation(len(names))
        folds = [[names[i] for i in order[k::FOLDS]] for k in range(FOLDS)]
        for f in range(FOLDS):
            test = set(folds[f])
            rest = [g for k, fg in enumerate(folds) if k != f for g in fg]
            store.put_splits([(r, f, g, "test") for g in test] + [(r, f, g, "val") for g in rest[:4]]
                             + [(r, f, g, "train") for g in rest[4:]])
            mask = np.isin(groups_a, list(test))
            y = labels_a[mask]
            common = np.random.default_rng(1000 * r + f).normal(0, 1.0, y.size)
            for i, arm in enumerate(signal):
                run_id = store.claim_run(arm, r, f, "h-" + arm, seed=r * 10 + f)
                if (r, f) in failed.get(arm, []):
                    store.fail_run(run_id, f"RuntimeError: out of memory in {arm} r{r}/f{f}")
                    continue
                own = np.random.default_rng(7 + 31 * i + 1000 * r + f).normal(0, 0.5, y.size)
                prob = 1 / (1 + np.exp(-(signal[arm] * (2 * y - 1) + common + own)))
                metrics = run_metrics(y, prob, videos_a[mask], groups_a[mask])
                if (r, f) in frame_auc.get(arm, {}):
                    for m in metrics:
                        if m["level"] == "frame" and m["metric"] == "roc_auc":
                            m["value"] = frame_auc[arm][(r, f)]
                n_test = int(mask.sum())
                store.finish_run(
                    run_id, metrics, list(zip(ids_a[mask], prob.tolist(), y.tolist())), timings={}, learned_params={},
                    epochs=[],
                    info={"n_train": len(ids) - n_test - 24, "n_val": 24, "n_test": n_test,
                          "fit": fits.get(arm, {}).get((r, f), {"status": "ok", "reason": ""})},
                )
    store.close()
    return out


def report(out: Path) -> tuple[dict[str, Any], str]:
    from harness.report import build_report

    path = build_report(out)
    return json.loads((out / "summary.json").read_text()), path.read_text(encoding="utf-8")


def comp(s: dict[str, Any], arm: str, key: str = "comparisons") -> dict[str, Any]:
    return next(c for c in s[key] if c["arm"] == arm and c["metric"] == "roc_auc")


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """A learning baseline; an arm with two failed runs and one that did not fit; a same-signal arm;
    the noise-floor arm; few negative patients (the patient level is not estimable)."""
    out = tmp_path_factory.mktemp("verdicts")
    arms = [
        {"name": "baseline"},
        {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 5}}]},
        {"name": "same", "preprocess": [{"gaussian": {"sigma": 1.0}}]},
        {"name": "noise-floor", "description": "the baseline, another seed", "training": {"seed_offset": 1}},
    ]
    build(
        out,
        {"baseline": 1.5, "pm": 2.2, "same": 1.5, "noise-floor": 1.5},
        arms=arms,
        negative_patients=8,
        failed={"pm": [(0, 1), (1, 2)]},
        fits={"pm": {(0, 0): {"status": "did_not_fit", "reason": "train loss 0.69 ≥ 0.95 × chance loss 0.69"}}},
    )
    s, html = report(out)
    return s, html, out


# --------------------------------------------------------------------------- 1. clustered McNemar


def test_mcnemar_is_clustered_by_patient_and_says_so(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, out = main
    pt = next(p for p in s["prediction_tests"] if p["arm"] == "same")
    assert pt["mcnemar"]["clustered"] is True and "Durkalski" in pt["mcnemar"]["form"]
    pred = ResultsStore(out, readonly=True).predictions()
    a = pred[(pred["arm"] == "same") & (pred["repeat"] == 0)].merge(
        pred[(pred["arm"] == "baseline") & (pred["repeat"] == 0)], on=["sample_id"], suffixes=("", "_b"))
    ref = stats.mcnemar(a["label"], (a["prob_b"] >= 0.5).astype(int), (a["prob"] >= 0.5).astype(int),
                        clusters=a["group_id"])
    assert pt["mcnemar"]["statistic"] == pytest.approx(ref["statistic"])
    assert "clustered by patient (Durkalski" in html


# --------------------------------------------------------------------------- 2. estimable levels


def test_patient_level_is_marked_not_estimable_instead_of_a_number(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, _ = main
    lv = s["levels"]
    assert lv["frame"]["estimable"] is True and lv["video"]["estimable"] is True
    assert lv["patient"]["estimable"] is False
    assert lv["patient"]["reason"].startswith("not estimable here, because")
    assert lv["patient"]["fewest_per_test_fold"]["negative"] < 5
    assert not [c for c in s["comparisons_other_levels"] if c["level"] == "patient"]
    assert "Patient level (mean of the frame probabilities): not estimable here, because" in html


# --------------------------------------------------------------------------- 3. video level co-primary


def test_video_level_is_co_primary_and_can_be_primary(main: tuple[dict[str, Any], str, Path], tmp_path: Path) -> None:
    s, html, _ = main
    assert s["primary_level"] == "frame"
    v = s["arms"]["same"]
    assert v["verdict_level"] == "frame" and set(v["verdicts"]) == {"frame", "video"}
    assert v["verdicts"]["video"] == stats.verdict(comp(s, "same", "comparisons_other_levels"), alpha=0.05)
    assert "Video level (co-primary):" in html
    build(tmp_path / "v", {"baseline": 1.5, "pm": 2.2}, primary_level="video")
    s2, html2 = report(tmp_path / "v")
    assert s2["primary_level"] == "video" and s2["arms"]["pm"]["verdict_level"] == "video"
    assert s2["arms"]["pm"]["verdict"] == s2["arms"]["pm"]["verdicts"]["video"]
    assert "Frame level (co-primary):" in html2


# --------------------------------------------------------------------------- 4. failed runs


def test_failed_runs_are_counted_with_a_sensitivity_line(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, out = main
    c = comp(s, "pm")
    fr = c["failed_runs"]
    assert fr["arm"] == 2 and fr["baseline"] == 0 and c["n_runs"] == REPEATS * FOLDS - 2
    m = ResultsStore(out, readonly=True).metrics()
    auc = m[(m["level"] == "frame") & (m["metric"] == "roc_auc")].pivot_table(
        index=["repeat", "fold"], columns="arm", values="value")
    pm = auc["pm"].copy()
    for how, fill in (("chance", 0.5), ("worst", pm.min())):
        d = (pm.fillna(fill) - auc["baseline"]).to_numpy()
        assert fr["sensitivity"][how]["mean_difference"] == pytest.approx(d.mean())
        ratio = c["test_train_ratio"]
        half = 2.570581836 * np.sqrt((1 / d.size + ratio) * d.var(ddof=1))  # t_{0.975, 5}
        assert fr["sensitivity"][how]["ci95"] == pytest.approx([d.mean() - half, d.mean() + half], rel=1e-6)
    assert s["arms"]["pm"]["runs"] == {"planned": 6, "done": 4, "failed": 2, "not_done": 2,
                                       "first_error": "RuntimeError: out of memory in pm r0/f1"}
    caveat = next(x for x in s["arms"]["pm"]["verdict_caveats"] if "did not complete" in x)
    assert "2 of 6 planned runs of pm did not complete" in caveat and "as chance" in caveat
    assert "2 of 6 planned runs of pm did not complete" in html


def test_an_arm_that_failed_entirely_and_a_failed_baseline_are_said(tmp_path: Path) -> None:
    all_runs = [(r, f) for r in range(REPEATS) for f in range(FOLDS)]
    build(tmp_path / "a", {"baseline": 1.5, "pm": 2.0, "dead": 1.0}, failed={"dead": all_runs})
    s, html = report(tmp_path / "a")
    assert s["arms"]["dead"]["verdict"].startswith("not compared: this arm has no completed run (6 of 6 failed")
    assert "dead" in re.sub(r"\s+", " ", html.split('id="methods"')[0])
    build(tmp_path / "b", {"baseline": 1.5, "pm": 2.0}, failed={"baseline": all_runs})
    s, html = report(tmp_path / "b")
    assert "No arm besides the baseline has completed runs" not in html
    assert s["arms"]["pm"]["verdict"].startswith("not compared: the baseline baseline has no completed run")
    assert "The baseline baseline has no completed run (6 of 6 failed" in html
    assert "pm: 6 of 6 runs completed" in html


# --------------------------------------------------------------------------- 5. power


def test_each_comparison_states_its_minimal_detectable_difference(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, out = main
    c = comp(s, "same")
    m = ResultsStore(out, readonly=True).metrics()
    auc = m[(m["level"] == "frame") & (m["metric"] == "roc_auc")].pivot_table(
        index=["repeat", "fold"], columns="arm", values="value")
    d = (auc["same"] - auc["baseline"]).to_numpy()
    n_arms = 3  # pm, same, noise-floor against the baseline
    expected = stats.minimal_detectable_difference(d.std(ddof=1), d.size, c["test_train_ratio"], 0.05 / n_arms, 0.8)
    assert c["mde"]["value"] == pytest.approx(expected) and c["mde"]["n_hypotheses"] == n_arms
    assert c["mde"]["alpha"] == pytest.approx(0.05 / n_arms) and c["mde"]["power"] == 0.8
    verdict = s["arms"]["same"]["verdict"]
    if verdict.startswith("no "):
        assert verdict.startswith(f"no difference larger than ±{expected:.2g} detected")
    assert "smallest difference the corrected t-test detects with power 0.8" in html  # the ROPE is justified


# --------------------------------------------------------------------------- 6. forest plot first


def test_forest_plot_is_the_first_thing_on_the_page(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, _ = main
    first_img = html.index("<img ")
    assert html.index('id="fig-forest"') < first_img < html.index('class="verdicts"')
    assert html[first_img:first_img + 40].startswith('<img src="data:image/png;base64,')
    assert "noise-floor arm" in html.split('id="fig-forest"')[1].split("</figure>")[0]


def test_forest_plot_draws_every_arm_with_the_noise_floor_band() -> None:
    from harness.report import figures

    rows = [{"arm": "a", "frame": (0.02, -0.01, 0.05), "video": None}, {"arm": "nf", "frame": (0.0, -0.02, 0.02),
                                                                         "video": (0.01, -0.03, 0.05)}]
    uri = figures.forest_plot(rows, ["frame", "video"], "roc_auc", 0.01, {"a": "#ff0000"}, {"frame": (-0.02, 0.02)}, "nf")
    assert uri.startswith("data:image/png;base64,")


# --------------------------------------------------------------------------- 7. bounded intervals


#: Frame-level ROC-AUCs that vary so widely over 6 runs that a t interval of their mean leaves [0, 1].
WIDE_AUC = {(0, 0): 0.02, (0, 1): 0.98, (0, 2): 0.97, (1, 0): 0.01, (1, 1): 0.99, (1, 2): 0.5}


def test_metric_intervals_stay_inside_zero_one(tmp_path: Path) -> None:
    build(tmp_path / "b", {"baseline": 1.5, "pm": 2.0}, frame_auc={"pm": WIDE_AUC})
    s, html = report(tmp_path / "b")
    auc = s["arms"]["pm"]["metrics"]["roc_auc"]
    assert auc["ci95"][0] < 0 or auc["ci95"][1] > 1  # the t-interval runs outside [0, 1] here ...
    lo, hi = auc["ci95_bounded"]
    assert 0 <= lo <= hi <= 1 and auc["ci95_clipped"] is True  # ... the shown one does not, and says it was cut
    assert auc["ci95_bounded_method"] == ("95 % corrected t interval of the mean over runs (Nadeau-Bengio variance), "
                                          "clipped to the metric's range [0, 1]")
    table = html.split('id="metrics"')[1].split("</table>")[0]
    assert f"[{lo:.3f}, {hi:.3f}] clipped" in table and f"{auc['ci95'][0]:.3f}," not in table
    assert "corrected 95 % t interval of the mean over runs" in html


# --------------------------------------------------------------------------- 8. chance check


def test_a_baseline_at_chance_is_said_first(tmp_path: Path) -> None:
    build(tmp_path / "c", {"baseline": 0.0, "pm": 0.0})
    s, html = report(tmp_path / "c")
    ch = s["chance_check"]
    assert ch["answerable"] is False and ch["baseline_above_chance"]["frame"] is False
    lo, hi = ch["levels"]["frame"]["baseline"]["ci95"]
    assert lo <= 0.5 <= hi
    assert html.index("cannot answer its question with this recipe") < html.index('class="verdicts"')
    assert any("not above chance" in c for c in s["arms"]["pm"]["verdict_caveats"])


def test_the_chance_check_interval_is_the_tables_one_inside_zero_one_and_labelled(tmp_path: Path) -> None:
    """Few runs, widely varying ROC-AUC: the corrected t interval of the mean would be about [-0.5, 1.6]."""
    from harness.report.inputs import read_store

    out = build(tmp_path / "w", {"baseline": 1.5, "pm": 1.5}, frame_auc={"baseline": WIDE_AUC, "pm": WIDE_AUC})
    s, html = report(out)
    values = [WIDE_AUC[k] for k in sorted(WIDE_AUC)]
    raw_lo, raw_hi = stats.corrected_mean_interval(values, read_store(out).split_sizes.ratio)
    assert raw_lo < 0 and raw_hi > 1  # the unclipped interval leaves [0, 1] at both ends
    ch = s["chance_check"]
    assert ch["interval"] == ("95 % corrected t interval of the mean over runs (Nadeau-Bengio variance), "
                              "clipped to the metric's range [0, 1]")
    base = ch["levels"]["frame"]["baseline"]
    assert base["ci95"] == [max(raw_lo, 0.0), min(raw_hi, 1.0)] == [0.0, 1.0] and base["clipped"] is True
    assert base["mean"] == pytest.approx(np.mean(values)) and base["above_chance"] is False
    # The same numbers as the metric tables (summary.json and the page) ...
    table = s["arms"]["baseline"]["metrics"]["roc_auc"]
    assert table["ci95_bounded"] == base["ci95"] and table["ci95_clipped"] is True
    assert ch["levels"]["frame"]["pm"]["ci95"] == s["arms"]["pm"]["metrics"]["roc_auc"]["ci95_bounded"]
    # ... and in the sentences: the message said first, the arm's caveat, each labelled as clipped.
    said = "95 % corrected interval [0.000, 1.000] (clipped to [0, 1])"
    assert f"frame-level roc_auc of baseline is {np.mean(values):.3f}, {said}, which includes chance" in ch["message"]
    assert html.count(said) >= 2  # the message and pm's caveat
    assert f"pm is not above chance at the frame level (roc_auc {np.mean(values):.3f}, {said} includes 0.5)." in \
        s["arms"]["pm"]["verdict_caveats"]
    metrics_table = html.split('id="metrics"')[1].split("</table>")[0]
    assert "[0.000, 1.000] clipped" in metrics_table
    assert f"{raw_lo:.3f}" not in html and f"{raw_hi:.3f}" not in html


def test_a_learning_baseline_passes_the_chance_check(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, _ = main
    assert s["chance_check"]["answerable"] is True and s["chance_check"]["baseline_above_chance"]["frame"] is True
    assert "cannot answer its question" not in html


def test_brier_and_log_loss_carry_the_calibration_caveat(main: tuple[dict[str, Any], str, Path]) -> None:
    _, html, _ = main
    assert "miscalibrated by construction" in html and "compare within one recipe only" in html


# --------------------------------------------------------------------------- noise floor and fit


def test_noise_floor_arm_is_found_and_every_verdict_reads_it(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, _ = main
    nf = s["noise_floor"]
    assert nf["arm"] == "noise-floor"
    ref = comp(s, "noise-floor")
    assert nf["differences"]["frame/none"]["ci95"] == ref["ci95"]
    pm = comp(s, "pm")
    lo, hi = ref["ci95"]
    exceeds = not (lo <= pm["mean_difference"] <= hi) and abs(pm["mean_difference"]) > abs(ref["mean_difference"])
    assert s["arms"]["pm"]["exceeds_noise_floor"] is exceeds
    for arm in ("pm", "same"):
        assert any("seed-noise floor" in c and "noise-floor" in c for c in s["arms"][arm]["verdict_caveats"])
    assert any("is the seed-noise floor" in c for c in s["arms"]["noise-floor"]["verdict_caveats"])


def test_noise_floor_detection_is_generic() -> None:
    from harness.report.checks import noise_floor_arm

    base = suite([{"name": "b"}, {"name": "x", "training": {"seed_offset": 3}}], None)
    assert noise_floor_arm(base, "b") == "x"
    other = suite([{"name": "b"}, {"name": "x", "training": {"seed_offset": 3, "lr": 0.1}}], None)
    assert noise_floor_arm(other, "b") is None  # differs by more than the seed
    filt = suite([{"name": "b"}, {"name": "x", "preprocess": [{"median": {}}], "training": {"seed_offset": 1}}])
    assert noise_floor_arm(filt, "b") is None


def test_runs_that_did_not_fit_are_counted_and_listed(main: tuple[dict[str, Any], str, Path]) -> None:
    s, html, _ = main
    assert s["arms"]["pm"]["fit"] == {"ok": 3, "did_not_fit": 1, "diverged": 0, "unknown": 0}
    assert s["arms"]["baseline"]["fit"] == {"ok": 6, "did_not_fit": 0, "diverged": 0, "unknown": 0}
    assert s["fit_problems"][0]["arm"] == "pm" and "chance loss" in s["fit_problems"][0]["reason"]
    assert any("1 run(s) of pm did not fit" in c for c in s["arms"]["pm"]["verdict_caveats"])
    problems = html.split('id="fit-problems"')[1].split("</table>")[0]
    assert "did not fit" in problems and "train loss 0.69" in problems
