"""``training.seeds: S``: S networks per (arm, repeat, fold), same split, other seeds, predictions averaged
(issue 26 §2). The seed-noise arm draws a set of seeds disjoint from the baseline's; S = 1 is the run as
before; the spread of the members' scores is stored with the run."""

from __future__ import annotations

import numpy as np
import pytest

from harness.execute import run_seed
from harness.runner import run_suite
from harness.store import ResultsStore
from harness.suite import load_suite
from harness.training.ensemble import combine, member_offsets
from harness.training.fit import FitResult
from harness.training.selection import FitDiagnosis
from test_runner import TINY, write_suite

OK = FitDiagnosis("ok", "", 0.69, 0.69, 0.5, 0.5, None)


def test_member_offsets_are_disjoint_across_seed_offsets() -> None:
    assert member_offsets(0, 3) == [0, 1, 2] and member_offsets(1, 3) == [3, 4, 5]
    assert member_offsets(0, 1) == [0] and member_offsets(1, 1) == [1]  # S = 1: the run's seed as before
    assert not set(member_offsets(0, 4)) & set(member_offsets(1, 4))


def _result(probs: list[float], train_seconds: float, rss: float) -> FitResult:
    return FitResult(test_probs=np.array(probs), history=[], learned_params={}, best_epoch=1, device="cpu",
                     diagnosis=OK,
                     timings={"train_seconds": train_seconds, "inference_ms_per_image": 2.0, "peak_rss_mb": rss,
                              "train_images_per_second": 100.0})


def test_combine_averages_the_probabilities_and_adds_up_the_cost() -> None:
    out = combine([_result([0.2, 0.8], 10.0, 500.0), _result([0.4, 0.6], 30.0, 700.0)])
    np.testing.assert_allclose(out.test_probs, [0.3, 0.7])
    assert out.timings["train_seconds"] == 40.0 and out.timings["inference_ms_per_image"] == 4.0
    assert out.timings["peak_rss_mb"] == 700.0 and out.timings["train_images_per_second"] == pytest.approx(100.0)


class _SeedProbs:
    """A fit whose test probabilities are a function of its seed (picklable); it records the seeds."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, model_cfg, train_cfg, data, seed, **kwargs):
        self.seeds.append(int(seed))
        rng = np.random.default_rng(seed)
        probs = np.clip(0.5 + 0.3 * (2 * data.test_y - 1) + rng.normal(0, 0.6, len(data.test_y)), 0.01, 0.99)
        return FitResult(test_probs=probs, timings={"train_seconds": 1.0}, history=[], learned_params={},
                         best_epoch=1, device="cpu", diagnosis=OK)


def test_a_run_averages_its_members_and_the_noise_floor_draws_other_seeds(tmp_path, cache_dir) -> None:
    arms = [{"name": "baseline"}, {"name": "noise-floor", "training": {"seed_offset": 1}}]
    suite = load_suite(write_suite(tmp_path, arms, training={**TINY["training"], "seeds": 3}))
    fit = _SeedProbs()
    summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, fit=fit)
    assert summary.ok and summary.done == 4
    expected = {(arm, f): [run_seed(suite.seed, 0, f, o) for o in member_offsets(offset, 3)]
                for arm, offset in (("baseline", 0), ("noise-floor", 1)) for f in (0, 1)}
    assert sorted(fit.seeds) == sorted(s for seeds in expected.values() for s in seeds)
    assert not {s for (a, _), v in expected.items() if a == "baseline" for s in v} & \
        {s for (a, _), v in expected.items() if a == "noise-floor" for s in v}
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        runs = store.runs(status="done").set_index("run_id")
        preds = store.predictions()
    for run_id, row in runs.iterrows():
        members = row["ensemble"]
        assert members["n"] == 3 and members["seeds"] == expected[(row["arm"], int(row["fold"]))]
        assert row["seed"] == members["seeds"][0]
        assert members["member_sd"]["frame/none/roc_auc"] > 0  # the members differ, and the spread is kept
        mine = preds[preds["run_id"] == run_id]
        # the stored prediction is the members' mean: recompute it from the fake's rule
        test_y = mine["label"].to_numpy()
        mean = np.mean([np.clip(0.5 + 0.3 * (2 * test_y - 1) + np.random.default_rng(s).normal(0, 0.6, len(test_y)),
                                0.01, 0.99) for s in members["seeds"]], axis=0)
        np.testing.assert_allclose(np.sort(mine["prob"].to_numpy()), np.sort(mean), rtol=0, atol=1e-12)


def test_one_seed_is_the_run_as_before(tmp_path, cache_dir) -> None:
    suite = load_suite(write_suite(tmp_path))
    assert "seeds" not in suite.model_dump(mode="json")["training"]  # the runs' identity is unchanged
    fit = _SeedProbs()
    run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, fit=fit)
    assert sorted(fit.seeds) == sorted(run_seed(suite.seed, 0, f, 0) for f in (0, 1))
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        assert store.runs()["ensemble"].isna().all()


@pytest.mark.usefixtures("one_thread")
def test_a_real_ensemble_trains_end_to_end(tmp_path, cache_dir) -> None:
    suite = load_suite(write_suite(tmp_path, training={**TINY["training"], "seeds": 2}))
    summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False)
    assert summary.ok and summary.done == 2
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        runs = store.runs(status="done")
    assert all(r["n"] == 2 and len(r["members"]) == 2 for r in runs["ensemble"])
    assert all(t["train_seconds"] > 0 for t in runs["timings"])


def test_the_report_states_the_ensembles_and_their_spread(tmp_path, cache_dir) -> None:
    import json

    from harness.report import build_report

    arms = [{"name": "baseline"}, {"name": "noise-floor", "training": {"seed_offset": 1}}]
    suite = load_suite(write_suite(tmp_path, arms, training={**TINY["training"], "seeds": 3}))
    run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, fit=_SeedProbs())
    page = build_report(tmp_path / "out").read_text(encoding="utf-8")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        runs = store.runs(status="done")
    for arm in ("baseline", "noise-floor"):
        mine = [r["member_sd"]["frame/none/roc_auc"] for r in runs.loc[runs["arm"] == arm, "ensemble"]]
        e = summary["arms"][arm]["ensemble"]
        assert e["seeds"] == 3 and e["runs"] == 2
        assert e["member_sd_mean"]["frame/none/roc_auc"] == pytest.approx(np.mean(mine))
        assert f"{arm} {np.mean(mine):.3f}" in page
    assert "averages the predictions of 3 networks trained with different seeds" in page


def test_the_dry_run_estimate_counts_every_network_of_an_ensemble(tmp_path, cache_dir, monkeypatch) -> None:
    """``--dry-run`` times one network; an ensemble of 3 trains and evaluates three per run."""
    import harness.estimate as estimate_mod
    from harness.estimate import Timing, estimate
    from harness.execute import load_suite_frames
    from harness.runner import make_plan, splits_for

    fixed = {"step": Timing.of([0.5]), "infer": Timing.of([0.002]), "build": Timing.of([1.0])}
    monkeypatch.setattr(estimate_mod, "time_network", lambda *a, **k: fixed)  # no timing noise
    phases = {}
    for seeds in (1, 3):
        suite = load_suite(write_suite(tmp_path, training={**TINY["training"], "seeds": seeds}))
        frames = load_suite_frames(suite, cache_dir)
        plan = make_plan(suite, splits_for(suite, frames), None, frames.content_hash, "code")
        phases[seeds] = estimate(suite, plan, None, frames, cache_dir).phases
    assert phases[1]["training"] > 0
    assert phases[3]["training"] == pytest.approx(3 * phases[1]["training"])
    assert phases[3]["evaluation"] == pytest.approx(3 * phases[1]["evaluation"])
