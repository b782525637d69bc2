"""Patient-grouped repeated CV: no leakage, stratification, determinism, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from harness.cv import SplitError, get_split, make_splits


def data(n_groups=12, per_group=4, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"p{i}" for i in range(n_groups)], per_group)
    labels = np.repeat(rng.permutation(np.arange(n_groups) % 2), per_group)  # balanced patient labels
    return labels, groups


def test_splits_are_patient_grouped_and_cover_everything():
    labels, groups = data()
    splits = make_splits(labels, groups, folds=3, repeats=2, seed=5, val_fraction=0.25)
    assert [(s.repeat, s.fold) for s in splits] == [(r, f) for r in range(2) for f in range(3)]
    for r in range(2):
        tests = np.concatenate([s.test_idx for s in splits if s.repeat == r])
        assert sorted(tests.tolist()) == list(range(len(labels)))  # each frame tested once per repeat
    for s in splits:
        parts = [set(groups[i]) for i in (s.train_idx, s.val_idx, s.test_idx)]
        assert not (parts[0] & parts[2]) and not (parts[1] & parts[2]) and not (parts[0] & parts[1])
        assert len(s.train_idx) + len(s.val_idx) + len(s.test_idx) == len(labels)
        assert s.leakage["groups_in_train_and_test"] == 0 and s.leakage["samples_in_two_roles"] == 0
        assert s.leakage["n_test_groups"] == 4 and s.leakage["n_val_groups"] >= 1
        assert set(labels[s.train_idx]) == {0, 1} and set(labels[s.test_idx]) == {0, 1}
        roles = s.roles(groups)
        assert len(roles) == 12 and {r[3] for r in roles} == {"train", "val", "test"}
    # repeats shuffle differently
    assert not all(np.array_equal(a.test_idx, b.test_idx) for a, b in zip(splits[:3], splits[3:], strict=True))


def test_deterministic_and_get_split_matches():
    labels, groups = data()
    a = make_splits(labels, groups, 3, 2, seed=1)
    b = make_splits(labels, groups, 3, 2, seed=1)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.train_idx, y.train_idx) and np.array_equal(x.val_idx, y.val_idx)
    one = get_split(labels, groups, 3, 2, 1, 0.2, repeat=1, fold=2)
    assert np.array_equal(one.test_idx, a[5].test_idx) and np.array_equal(one.val_idx, a[5].val_idx)
    c = make_splits(labels, groups, 3, 1, seed=2)
    assert any(not np.array_equal(x.test_idx, y.test_idx) for x, y in zip(a[:3], c, strict=True))


def test_clear_errors_before_training():
    labels, groups = data(n_groups=4)
    with pytest.raises(SplitError, match="4 patients but evaluation.folds is 5; accepted: folds <= 4"):
        make_splits(labels, groups, 5, 1, 0)
    with pytest.raises(SplitError, match="single class"):
        make_splits(np.zeros_like(labels), groups, 2, 1, 0)
    # a single positive patient: some training fold lacks class 1
    labels = np.array([1] * 2 + [0] * 10)
    groups = np.repeat([f"p{i}" for i in range(6)], 2)
    with pytest.raises(SplitError, match=r"class \[1\] is absent from the training patients"):
        make_splits(labels, groups, 3, 1, 0)
