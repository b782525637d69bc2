"""Patient-grouped, stratified, repeated k-fold cross-validation shared by every arm.

Outer splits: scikit-learn ``StratifiedGroupKFold(folds, shuffle=True, random_state=seed + repeat)``
for each repeat, so repeats differ in their shuffles and every arm sees the same folds. Inner
validation (model selection / early stopping): the training patients of a fold are split again,
patient-grouped and stratified, so that about ``val_fraction`` of them validate.

Every split is checked for leakage before anything trains; the check is returned with the split
(``Split.leakage``) and recorded with every run.

Example::

    splits = make_splits(labels, groups, folds=5, repeats=3, seed=0, val_fraction=0.2)
    s = splits[0]; s.train_idx, s.val_idx, s.test_idx, s.leakage["groups_in_train_and_test"]  # -> 0
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


class SplitError(ValueError):
    """The data cannot be split as the suite asks (one line: what and what is accepted)."""


@dataclass(frozen=True)
class Split:
    repeat: int
    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    leakage: dict[str, int] = field(default_factory=dict)

    def roles(self, groups: np.ndarray) -> list[tuple[int, int, str, str]]:
        """``(repeat, fold, group_id, role)`` rows for the results store."""
        rows = []
        for role, idx in (("train", self.train_idx), ("val", self.val_idx), ("test", self.test_idx)):
            rows += [(self.repeat, self.fold, str(g), role) for g in np.unique(groups[idx])]
        return rows


def _inner_seed(seed: int, repeat: int, fold: int) -> int:
    return int(np.random.SeedSequence([seed, repeat, fold]).generate_state(1)[0])


def leakage_check(groups: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict[str, int]:
    """Counts of patients (and frames) shared between roles; all must be 0."""
    g_train, g_val, g_test = (set(np.unique(groups[i]).tolist()) for i in (train, val, test))
    return {
        "groups_in_train_and_test": len(g_train & g_test),
        "groups_in_val_and_test": len(g_val & g_test),
        "groups_in_train_and_val": len(g_train & g_val),
        "samples_in_two_roles": int(len(np.intersect1d(train, test)) + len(np.intersect1d(val, test))
                                    + len(np.intersect1d(train, val))),
        "n_train_groups": len(g_train),
        "n_val_groups": len(g_val),
        "n_test_groups": len(g_test),
    }


def _inner_split(labels: np.ndarray, groups: np.ndarray, train: np.ndarray, val_fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-grouped stratified validation split of the training indices."""
    n_groups = len(np.unique(groups[train]))
    if n_groups < 2:
        raise SplitError(f"a training fold has {n_groups} patient(s); the inner validation split needs >= 2 "
                         "(accepted: more patients or fewer folds)")
    n_splits = int(min(max(2, round(1.0 / val_fraction)), n_groups))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    y, g = labels[train], groups[train]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        parts = list(splitter.split(np.zeros(len(train)), y, g))
    # Prefer a validation part holding both classes (so validation AUC is defined) when one exists.
    chosen = None
    for fit_part, val_part in parts:
        if chosen is None:
            chosen = (fit_part, val_part)
        if len(np.unique(y[val_part])) == len(np.unique(y)) and len(np.unique(y[fit_part])) == len(np.unique(y)):
            chosen = (fit_part, val_part)
            break
    assert chosen is not None
    return np.sort(train[chosen[0]]), np.sort(train[chosen[1]])


def make_splits(labels: np.ndarray, groups: np.ndarray, folds: int, repeats: int, seed: int,
                val_fraction: float = 0.2) -> list[Split]:
    """All ``repeats x folds`` splits (repeat-major), each checked for leakage.

    Raises :class:`SplitError` for fewer patients than folds, a single class, or a class absent from
    a training fold — before anything trains.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    if labels.shape != groups.shape:
        raise SplitError(f"{len(labels)} labels but {len(groups)} group ids")
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise SplitError(f"the data has {n_groups} patient(s); cross-validation needs at least 2 patients (2 folds, "
                         "patients are never split across folds); accepted: data with >= 2 patients")
    if n_groups < folds:
        raise SplitError(f"the data has {n_groups} patients but evaluation.folds is {folds}; "
                         f"accepted: folds <= {n_groups} (patients are never split across folds)")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise SplitError(f"the data has a single class ({classes.tolist()}); accepted: both classes present")
    out: list[Split] = []
    for repeat in range(repeats):
        outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
        with warnings.catch_warnings():
            # sklearn counts frames per class, not patients; the checks below are the ones that matter
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            outer_parts = list(outer.split(np.zeros(len(labels)), labels, groups))
        for fold, (train_val, test) in enumerate(outer_parts):
            missing = sorted(set(classes.tolist()) - set(np.unique(labels[train_val]).tolist()))
            if missing:
                raise SplitError(f"repeat {repeat} fold {fold}: class {missing} is absent from the training "
                                 "patients; accepted: more patients per class or fewer folds")
            train, val = _inner_split(labels, groups, train_val, val_fraction, _inner_seed(seed, repeat, fold))
            test = np.sort(test)
            check = leakage_check(groups, train, val, test)
            if check["groups_in_train_and_test"] or check["groups_in_val_and_test"] \
                    or check["groups_in_train_and_val"] or check["samples_in_two_roles"]:
                raise SplitError(f"repeat {repeat} fold {fold}: leakage between roles: {check}")
            out.append(Split(repeat, fold, train, val, test, check))
    return out


def get_split(labels: np.ndarray, groups: np.ndarray, folds: int, repeats: int, seed: int,
              val_fraction: float, repeat: int, fold: int) -> Split:
    """The one split a run needs (the same as ``make_splits(...)`` gives for it)."""
    for split in make_splits(labels, groups, folds, repeat + 1, seed, val_fraction)[repeat * folds:]:
        if split.fold == fold:
            return split
    raise SplitError(f"fold {fold} out of range; accepted: 0..{folds - 1}")
