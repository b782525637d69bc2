"""The manipulation check (issue 26 §1): does each arm's filter act, and is it more than a Gaussian?

On numpy-made speckled frames (bright band, disc, multiplicative gamma speckle): a filter that does
nothing is ≈ identity, Perona-Malik with a κ far above every gradient (the heat equation) is ≈ the
Gaussian control, Perona-Malik with a small κ is neither and keeps edges the Gaussian blurs; the
numbers match a hand computation. Then a tiny suite end to end: the store's meta holds the checks, and
summary.json, the page, the Markdown block and the verdicts flag the identity-like and Gaussian-like
arms and the diffusion blocks whose gates stayed closed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from harness.manipulation import (
    GAUSSIAN_DISTANCE,
    IDENTITY_CHANGE,
    check_pipelines,
    relative_change,
    sample_frames,
)
from harness.report.learned import ParameterChanges
from harness.report.manipulation import GATE_OPEN_MIN, NOT_A_TEST, learned_check, manipulation

pytestmark = pytest.mark.usefixtures("one_thread")

GAUSSIAN = [{"gaussian": {"sigma": 2.0}}]
IDENTITY = [{"median": {"size": 1}}]
TINY_BLUR = [{"gaussian": {"sigma": 0.3}}]
# conductance exp(-(|∇u|/κ)²) ≈ 1 everywhere: the heat equation for t = 10 x 0.2 = 2, i.e. a Gaussian of σ = √(2t) = 2
PM_ISOTROPIC = [{"perona_malik": {"kappa": 1000.0, "iterations": 10, "step": 0.2}}]
PM_EDGES = [{"perona_malik": {"kappa": 0.1, "iterations": 30, "step": 0.2}}]


def speckled(n: int = 8, size: int = 64, seed: int = 0, looks: int = 4) -> np.ndarray:
    """(n, size, size) uint8: a background of 0.25, a band of 0.7 and a disc of 0.5, times gamma speckle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for i in range(n):
        base = np.full((size, size), 0.25)
        base[(yy > size * 0.3 + i) & (yy < size * 0.45 + i)] = 0.7
        base[(xx - size * 0.65) ** 2 + (yy - size * 0.7) ** 2 < (size * 0.15) ** 2] = 0.5
        frames.append(np.round(np.clip(base * rng.gamma(looks, 1 / looks, (size, size)), 0, 1) * 255).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture(scope="module")
def checked():
    pipelines = {"baseline": [], "gaussian": GAUSSIAN, "identity": IDENTITY, "tiny-blur": TINY_BLUR,
                 "pm-isotropic": PM_ISOTROPIC, "pm-edges": PM_EDGES}
    result = check_pipelines(speckled(), pipelines, groups=np.repeat(["p0", "p1", "p2", "p3"], 2), seed=0)
    return result, {c.arm: c for c in result.checks}


def test_every_arm_with_a_pipeline_is_checked_on_the_whole_small_sample(checked) -> None:
    result, by_arm = checked
    assert list(by_arm) == ["gaussian", "identity", "tiny-blur", "pm-isotropic", "pm-edges"]  # baseline: no filter
    assert result.n_frames == 8 and result.n_patients == 4 and all(c.n_frames == 8 for c in result.checks)
    assert by_arm["gaussian"].is_control and by_arm["pm-edges"].control == "gaussian"
    assert by_arm["gaussian"].reading == "the Gaussian control" and not by_arm["gaussian"].flagged


def test_a_filter_that_does_nothing_is_identity(checked) -> None:
    _, by_arm = checked
    ident, tiny = by_arm["identity"], by_arm["tiny-blur"]
    assert ident.relative_change == pytest.approx(0.0, abs=1e-6) and ident.identity and ident.flagged
    assert 0.005 < tiny.relative_change < IDENTITY_CHANGE and tiny.identity  # σ 0.3: 0.7 % of the frames' norm
    assert ident.reading == "≈ identity (relative change 0.00% < 1%)"
    assert ident.anisotropy is None and ident.anisotropy_matched is None  # a ratio of rounding errors: not given
    assert ident.speckle_cov_ratio == pytest.approx(1.0, abs=1e-6)
    assert ident.edge_preservation == pytest.approx(1.0, abs=1e-6)
    assert not ident.gaussian_control and not ident.gaussian_like


def test_isotropic_perona_malik_is_the_gaussian_control(checked) -> None:
    _, by_arm = checked
    pm = by_arm["pm-isotropic"]
    assert pm.relative_change == pytest.approx(by_arm["gaussian"].relative_change, rel=0.01)
    assert pm.anisotropy < 0.01 < GAUSSIAN_DISTANCE and pm.matched_sigma == 2.0
    assert pm.gaussian_control and pm.flagged and not pm.identity
    assert pm.reading.startswith("≈ the Gaussian control gaussian (anisotropy 0.00 < 0.25)")


def test_edge_keeping_perona_malik_is_not_flagged_and_keeps_edges_the_gaussian_blurs(checked) -> None:
    _, by_arm = checked
    pm, g = by_arm["pm-edges"], by_arm["gaussian"]
    assert not pm.flagged and pm.relative_change > 0.1
    assert pm.anisotropy > 1.0 and pm.anisotropy_matched > GAUSSIAN_DISTANCE
    assert pm.edge_preservation > 0.9 > 0.3 > g.edge_preservation
    assert pm.reading.startswith("acts: relative change 23.")


def test_smoothing_reduces_the_speckle(checked) -> None:
    _, by_arm = checked
    for arm in ("gaussian", "pm-isotropic", "pm-edges"):
        assert by_arm[arm].speckle_cov_ratio < 0.8, arm
    assert by_arm["gaussian"].speckle_cov_ratio < by_arm["pm-edges"].speckle_cov_ratio


def test_relative_change_matches_a_hand_computation_on_two_frames() -> None:
    frames = speckled(n=2, size=48, seed=3)
    result = check_pipelines(frames, {"g": [{"gaussian": {"sigma": 1.5}}]}, groups=["a", "b"], seed=1)
    x = frames.astype(np.float64) / 255
    # the library's Gaussian is SciPy's with reflection and truncate 4; the harness clips to [0, 1]
    y = np.clip(np.stack([ndimage.gaussian_filter(f, 1.5, mode="reflect", truncate=4.0) for f in x]), 0, 1)
    by_hand = np.mean([np.linalg.norm(b - a) / np.linalg.norm(a) for a, b in zip(x, y, strict=True)])
    assert result.n_frames == 2
    assert result.checks[0].relative_change == pytest.approx(by_hand, rel=1e-4)
    assert relative_change(x, y) == pytest.approx(by_hand, rel=1e-12)


def test_the_sample_is_seeded_and_patient_stratified() -> None:
    groups = np.repeat([f"p{i}" for i in range(10)], [1, 2, 3, 4, 5, 6, 7, 8, 9, 50])
    a, b = sample_frames(groups, 0, 20), sample_frames(groups, 0, 20)
    assert np.array_equal(a, b) and len(a) == 20 and len(set(a.tolist())) == 20
    counts = {p: int(np.sum(groups[a] == p)) for p in np.unique(groups)}
    assert min(counts.values()) >= 1 and counts["p9"] <= 4  # every patient in; the 50-frame one does not dominate
    assert not np.array_equal(a, sample_frames(groups, 1, 20))
    assert len(sample_frames(groups, 0, 1000)) == len(groups)


def test_a_failing_pipeline_is_its_record_and_the_others_are_checked() -> None:
    result = check_pipelines(speckled(n=2, size=32), {"bad": [{"gaussian": {"sigma": -1.0}}], "g": GAUSSIAN},
                             groups=["a", "b"])
    bad, g = result.checks
    assert bad.error and bad.reading.startswith("not checked: ValueError") and not bad.flagged
    assert g.is_control and g.error is None and g.relative_change > 0.1


def _changes(gate_final: list[float], n_runs: int = 2) -> ParameterChanges:
    initial = {"blocks": {"blocks.1.2.gate": np.full(3, 0.02), "blocks.1.2.kappa": np.full(3, 0.7)}}
    final = {"blocks": {"blocks.1.2.gate": np.tile(gate_final, (n_runs, 1)),
                        "blocks.1.2.kappa": np.full((n_runs, 3), 0.8)}}
    return ParameterChanges(initial, final, {"blocks": [f"blocks/r0/f{i}" for i in range(n_runs)]})


def test_gates_that_stayed_near_their_start_are_closed() -> None:
    closed = learned_check("blocks", _changes([0.017, 0.02, 0.024]))
    assert closed.gates_open is False and closed.closed
    assert closed.gate_initial == pytest.approx(0.02) and closed.gate_final == pytest.approx(0.0203333, rel=1e-4)
    assert closed.gate_final_max == pytest.approx(0.024) and closed.parameters["kappa"] == pytest.approx((0.7, 0.8))
    assert closed.reading.startswith("≈ baseline (gates closed): gate mean 0.020 → 0.020")
    opened = learned_check("blocks", _changes([0.02, 0.05, 0.08]))  # mean 0.05 > 2 x 0.02
    assert opened.gates_open and opened.reading.startswith("open")
    assert learned_check("blocks", _changes([0.02, 0.02, GATE_OPEN_MIN * 3.1])).gates_open  # mean above 0.1
    rows = manipulation({}, ["baseline", "blocks"], _changes([0.017, 0.02, 0.024]))
    assert [r.arm for r in rows.rows] == ["blocks"]
    assert rows.rows[0].caveat == f"Its manipulation check says ≈ baseline (gates closed: mean 0.020 → 0.020): {NOT_A_TEST}."


def test_a_tuned_arm_keeps_its_check_but_gets_no_caveat() -> None:
    meta = {"manipulation": [{"arm": "pm", "identity": True, "relative_change": 0.001, "reading": "≈ identity"}],
            "run_arms": [{"name": "pm", "arm": "pm", "tuned": True}, {"name": "pm~untuned", "arm": "pm", "tuned": False}]}
    rows = manipulation(meta, ["pm", "pm~untuned"], ParameterChanges({}, {}, {}))
    tuned, untuned = rows.rows
    assert tuned.caveat is None and "tuned runs chose others" in tuned.reading
    assert untuned.caveat is not None and untuned.caveat.startswith("Its manipulation check says ≈ identity")


@pytest.mark.slow
def test_a_tiny_suite_flags_its_identity_and_gaussian_like_arms(tmp_path, cache_dir) -> None:
    from harness.report import build_report
    from harness.runner import run_suite
    from harness.store import ResultsStore
    from harness.suite import load_suite
    from test_runner import write_suite

    arms = [{"name": "baseline"}, {"name": "gaussian", "preprocess": GAUSSIAN},
            {"name": "identity-like", "preprocess": IDENTITY}, {"name": "pm-isotropic", "preprocess": PM_ISOTROPIC},
            {"name": "blocks", "model": {"diffusion_blocks": {"after_stages": [1], "iterations": 1}}}]
    suite = load_suite(write_suite(tmp_path, arms))
    lines: list[str] = []
    summary = run_suite(suite, tmp_path / "out", cache_dir=cache_dir, report=False, progress=False, echo=lines.append)
    assert summary.ok, summary.failed
    line = next(x for x in lines if x.startswith("manipulation check:"))
    assert line.startswith("manipulation check: 3 arm(s) on 18 frames of 6 patients in ")
    assert "identity-like ≈ identity" in line and "pm-isotropic ≈ the Gaussian control gaussian" in line
    with ResultsStore(tmp_path / "out", readonly=True) as store:
        meta = store.meta()
    stored = {r["arm"]: r for r in meta["manipulation"]}
    assert list(stored) == ["gaussian", "identity-like", "pm-isotropic"]
    assert stored["identity-like"]["identity"] and stored["identity-like"]["flagged"]
    assert stored["pm-isotropic"]["gaussian_control"] and stored["pm-isotropic"]["anisotropy"] < 0.05
    assert stored["gaussian"]["is_control"] and not stored["gaussian"]["flagged"]
    assert meta["manipulation_sample"]["n_frames"] == 18 and meta["manipulation_sample"]["seed"] == 0

    page = build_report(tmp_path / "out")
    out = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = {r["arm"]: r for r in out["manipulation"]["arms"]}
    assert list(rows) == ["gaussian", "identity-like", "pm-isotropic", "blocks"]
    assert [a for a, r in rows.items() if r["flagged"]] == ["identity-like", "pm-isotropic", "blocks"]
    assert rows["blocks"]["learned"]["gates_closed"] and rows["blocks"]["filter"] is None
    assert out["manipulation"]["sample"]["n_patients"] == 6
    caveats = {a: out["arms"][a]["verdict_caveats"] for a in rows}
    assert not any(NOT_A_TEST in c for c in caveats["gaussian"])
    assert f"Its manipulation check says ≈ identity (its preprocessing changes the frames by 0.00%, under 1 %): " \
           f"{NOT_A_TEST}." in caveats["identity-like"]
    assert any(c.startswith("Its manipulation check says ≈ the Gaussian control gaussian (anisotropy 0.0")
               and c.endswith(f"{NOT_A_TEST}.") for c in caveats["pm-isotropic"])
    assert any("≈ baseline (gates closed" in c for c in caveats["blocks"])
    html = page.read_text()
    assert 'id="manipulation"' in html and html.count('class="flagged"') == 3 and NOT_A_TEST in html

    from harness.report.analysis import analyse
    from harness.report.inputs import read_store
    from harness.report.markdown import render_block

    block = render_block(analyse(read_store(tmp_path / "out")), "harness report", None, None)
    assert "#### Manipulation check" in block and "| `identity-like` | 0.00% |" in block
    assert block.count(NOT_A_TEST) == 3
