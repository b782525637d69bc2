"""The search section of a suite: key paths, distributions and bounds are checked before anything
runs, with the key path in every message; a suite without ``search`` hashes as it did."""

from __future__ import annotations

from pathlib import Path

from harness.suite.search import apply_params, arm_space
from harness.suite import SuiteError, validate_suite

BASE = {
    "name": "s", "seed": 0,
    "data": {"source": "simulated", "patients": 8, "frames_per_patient": 2, "image_size": 32},
    "training": {"epochs": 4, "lr": 0.001},
    "evaluation": {"folds": 2},
}
PM = {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 10, "kappa": 0.1, "step": 0.2}}]}
STEM = {"name": "stem", "model": {"stem": {"type": "diffusion", "mode": "replace", "iterations": 4}}}


def check(arms, search, tmp_path=Path(".")) -> list[str]:
    data = {**BASE, "arms": arms}
    if search is not None:
        data["search"] = search
    try:
        validate_suite(data, base_dir=tmp_path, label="S")
    except SuiteError as err:
        return err.lines
    return []


def with_space(arm, space):
    return {**arm, "search": {"space": space}}


def test_a_valid_space_passes_and_merges_with_the_arms():
    search = {"trials": 3, "space": {"training.lr": {"log_uniform": [1e-4, 1e-2]}, "training.epochs": {"int": [2, 8]}}}
    arms = [{"name": "b"},
            with_space(PM, {"preprocess.0.perona_malik.kappa": {"log_uniform": [0.02, 0.5]},
                            "preprocess.0.perona_malik.iterations": {"int": [2, 30]}}),
            with_space(STEM, {"training.diffusion_lr_multiplier": {"log_uniform": [1, 100]},
                              "model.stem.iterations": {"int": [2, 8]}})]
    assert check(arms, search) == []
    suite = validate_suite({**BASE, "arms": arms, "search": search}, base_dir=Path("."))
    assert set(arm_space(suite, suite.arms[1])) == {"training.lr", "training.epochs", "preprocess.0.perona_malik.kappa",
                                                    "preprocess.0.perona_malik.iterations"}
    tuned = apply_params(suite.arms[1], {"preprocess.0.perona_malik.kappa": 0.3, "training.lr": 0.005})
    assert tuned.preprocess[0]["perona_malik"] == {"iterations": 10, "kappa": 0.3, "step": 0.2}
    assert suite.arm_training(tuned).lr == 0.005 and suite.arms[1].preprocess[0]["perona_malik"]["kappa"] == 0.1


def test_unknown_keys_name_the_path_and_the_accepted_keys():
    lines = check([with_space(PM, {"preprocess.0.perona_malik.kapa": {"log_uniform": [0.02, 0.5]}})], {"trials": 2})
    assert lines == ["S: arms[0].search.space.preprocess.0.perona_malik.kapa: no such key; accepted: iterations, "
                     "kappa, step, conductance, spacing"]
    lines = check([{"name": "b"}], {"trials": 2, "space": {"training.learning_rate": {"uniform": [0.1, 0.2]}}})
    assert len(lines) == 1 and lines[0].startswith("S: search.space.training.learning_rate (arm b): no such key; "
                                                   "accepted: epochs, batch_size, lr,")
    lines = check([with_space(PM, {"preprocess.1.perona_malik.kappa": {"uniform": [0.05, 0.2]}})], {"trials": 2})
    assert lines == ["S: arms[0].search.space.preprocess.1.perona_malik.kappa: no preprocessing step 1; accepted: 0..0"]
    lines = check([with_space({"name": "b"}, {"model.stem.iterations": {"int": [2, 8]}})], {"trials": 2})
    assert lines == ["S: arms[0].search.space.model.stem.iterations: model.stem is not set for this arm; it has "
                     "no keys"]


def test_bounds_must_lie_inside_what_the_filter_and_the_schema_accept():
    lines = check([with_space(PM, {"preprocess.0.perona_malik.step": {"uniform": [0.1, 0.9]}})], {"trials": 2})
    assert len(lines) == 1 and lines[0].startswith(
        "S: arms[0].search.space.preprocess.0.perona_malik.step: uniform [0.1, 0.9] is not inside what perona_malik "
        "accepts: step must be a number or tensor in (0, 0.25]")
    lines = check([with_space(PM, {"preprocess.0.perona_malik.iterations": {"int": [2, 20000]}})], {"trials": 2})
    assert len(lines) == 1 and "iterations must be an integer in [0, 10000]" in lines[0]
    lines = check([{"name": "b"}], {"trials": 2, "space": {"model.drop_rate": {"uniform": [0.1, 1.0]}}})
    assert lines == ["S: search.space.model.drop_rate (arm b): uniform [0.1, 1]: the end 1.0 is not accepted: "
                     "Input should be less than 1"]


def test_distribution_types_and_the_arms_own_value():
    lines = check([{"name": "b"}], {"trials": 2, "space": {"training.epochs": {"uniform": [1, 8]}}})
    assert lines == ["S: search.space.training.epochs (arm b): an integer key; accepted: {int: [low, high]} or "
                     "{choice: [...]} (got uniform)"]
    lines = check([{"name": "b"}], {"trials": 2, "space": {"training.lr": {"log_uniform": [0.01, 0.1]}}})
    assert lines == ["S: search.space.training.lr (arm b): log_uniform [0.01, 0.1] does not contain the arm's own "
                     "value 0.001; trial 0 is the suite's own configuration, so the range must hold it"]
    lines = check([{"name": "b"}], {"trials": 2, "space": {"training.lr": {"log_uniform": [0, 0.1]}}})
    assert lines == ["S: search.space: training.lr: log_uniform needs low > 0, got 0"]
    lines = check([{"name": "b"}], {"trials": 2, "space": {"training.lr": {"normal": [0, 0.1]}}})
    assert len(lines) == 1 and "is not a distribution; accepted: {uniform: [low, high]}" in lines[0]
    lines = check([{"name": "b"}], {"trials": 2, "space": {"training.val_fraction": {"uniform": [0.1, 0.3]}}})
    assert lines == ["S: search.space.training.val_fraction (arm b): not searchable: the inner validation split "
                     "is shared by every arm"]
    lines = check([with_space({"name": "b"}, {"training.diffusion_lr_multiplier": {"log_uniform": [1, 100]}})],
                  {"trials": 2})
    assert len(lines) == 1 and "this arm has no diffusion layers" in lines[0]
    assert check([{"name": "b"}], {"trials": 2, "space": {"training.class_balance": {"choice": ["loss", "none"]}}}) \
        == []


def test_an_arm_search_needs_the_shared_budget():
    lines = check([with_space({"name": "b"}, {"training.lr": {"log_uniform": [1e-4, 1e-2]}})], None)
    assert lines == ["S: arms[0].search: an arm adds to the search space of a top-level search section (trials, "
                     "inner_folds, ...); accepted: add one"]
    lines = check([{"name": "b"}], {"space": {}})
    assert lines == ["S: search.trials: required key is missing"]


def test_the_search_changes_the_run_hash_and_its_absence_does_not():
    plain = validate_suite({**BASE, "arms": [{"name": "b"}]}, base_dir=Path("."))
    space = {"training.lr": {"log_uniform": [1e-4, 1e-2]}}  # an empty space is refused: nothing to tune
    tuned = validate_suite({**BASE, "arms": [{"name": "b"}], "search": {"trials": 2, "space": space}},
                           base_dir=Path("."))
    more = validate_suite({**BASE, "arms": [{"name": "b"}], "search": {"trials": 3, "space": space}},
                          base_dir=Path("."))
    hashes = {plain.run_config_hash("b"), tuned.run_config_hash("b"), more.run_config_hash("b")}
    assert len(hashes) == 3
    # Without a search section nothing of it enters the hash (so existing stores keep their runs).
    from harness.suite.search import search_identity

    assert search_identity(plain, plain.run_arms()[0]) is None and plain.search is None


def test_a_disabled_search_trains_every_arm_untuned():
    arms = [{"name": "b"}, with_space(PM, {"preprocess.0.perona_malik.kappa": {"log_uniform": [0.02, 0.5]}})]
    plain = validate_suite({**BASE, "arms": [{"name": "b"}, PM]}, base_dir=Path("."))
    off = validate_suite({**BASE, "arms": arms, "search": {"trials": 4, "enabled": False}}, base_dir=Path("."))
    assert arm_space(off, off.arms[1]) is None
    assert [off.run_config_hash(a) for a in ("b", "pm")] == [plain.run_config_hash(a) for a in ("b", "pm")]


# ----------------------------------------------------------------------------- tuned and untuned runs
LR = {"training.lr": {"log_uniform": [1e-4, 1e-2]}}


def test_a_subset_of_tuned_arms_runs_every_arm_untuned_and_the_subset_tuned_again():
    arms = [{"name": "b"}, PM, STEM]
    plain = validate_suite({**BASE, "arms": arms}, base_dir=Path("."))
    subset = validate_suite({**BASE, "arms": arms, "search": {"trials": 2, "space": LR, "arms": ["b", "pm"]}},
                            base_dir=Path("."))
    assert [(r.name, r.arm.name, r.tuned) for r in subset.run_arms()] == [
        ("b", "b", False), ("pm", "pm", False), ("stem", "stem", False), ("b~tuned", "b", True),
        ("pm~tuned", "pm", True)]
    # Untuned runs are the very runs of the suite without a search (same identity: shared, checked).
    for name in ("b", "pm", "stem"):
        assert subset.run_config_hash(name) == plain.run_config_hash(name)
    assert subset.run_config_hash("pm~tuned") not in {plain.run_config_hash(n) for n in ("b", "pm", "stem")}
    assert subset.run_arm("pm~tuned").variant == "tuned"


def test_also_untuned_adds_an_untuned_twin_of_every_tuned_arm():
    arms = [{"name": "b"}, PM]
    plain = validate_suite({**BASE, "arms": arms}, base_dir=Path("."))
    both = validate_suite({**BASE, "arms": arms, "search": {"trials": 2, "space": LR, "also_untuned": True}},
                          base_dir=Path("."))
    assert [(r.name, r.tuned) for r in both.run_arms()] == [("b", True), ("pm", True), ("b~untuned", False),
                                                            ("pm~untuned", False)]
    assert both.run_config_hash("pm~untuned") == plain.run_config_hash("pm") != both.run_config_hash("pm")
    off = validate_suite({**BASE, "arms": arms, "search": {"trials": 2, "space": LR, "also_untuned": True,
                                                           "enabled": False}}, base_dir=Path("."))
    assert [r.name for r in off.run_arms()] == ["b", "pm"]  # disabled: every arm untuned, no twin


def test_search_arms_are_checked():
    arms = [{"name": "b"}, PM]
    assert check(arms, {"trials": 2, "space": LR, "arms": ["pm", "nope"]}) == [
        "S: search.arms: ['nope'] not arms of the suite; accepted: b, pm"]
    assert check(arms, {"trials": 2, "space": LR, "arms": ["pm"]}) == [
        "S: search.arms: the baseline 'b' is not tuned: a tuned arm is compared with the tuned baseline (b~tuned); "
        "accepted: a list that holds 'b'"]
    own = with_space(PM, {"preprocess.0.perona_malik.kappa": {"log_uniform": [0.02, 0.5]}})
    assert check([{"name": "b"}, own, {**STEM, "search": {"space": LR}}],
                 {"trials": 2, "space": LR, "arms": ["b", "pm"]}) == [
        "S: arms[2].search: arm stem adds to the search space but search.arms does not tune it; accepted: add "
        "'stem' to search.arms"]
    # an arm the search does not tune needs no space of its own
    assert check([{"name": "b"}, PM, STEM], {"trials": 2, "space": {}, "arms": ["b", "pm"]}) != []
    assert check([{"name": "b", "search": {"space": LR}}, own, STEM], {"trials": 2, "arms": ["b", "pm"]}) == []
