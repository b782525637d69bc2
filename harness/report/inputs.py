"""What the report reads: the results store as typed inputs, plus indexes computed once from them.

The report only ever reads the store (results of ``done`` runs through
:class:`harness.store.ResultsStore`'s read API); it never trains, builds a network or decodes data.
It shows the arms of the suite the store records (the latest run's): runs of arms removed from the
suite stay in the store, untouched, and out of the report.

Variants: a suite that tunes some arms and also runs them untuned stores the second set of runs as
``<arm>~tuned`` or ``<arm>~untuned`` (:mod:`harness.variants`). ``Inputs`` shows one family at a
time: the arms' own runs (``family == ""``), or, from :meth:`Inputs.variant`, the variant's runs,
compared with the baseline's variant; the report sets the two families' verdicts side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.metrics import METRIC_NAMES, in_range, range_text
from harness.store import StoreError
from harness.variants import VARIANT_SEPARATOR, split_variant

RunKey = tuple[int, int]  # (repeat, fold)
ScoreKey = tuple[str, str, str, str]  # (arm, level, aggregation, metric)

# The levels a store holds, in the order the report shows them, with their table titles.
LEVEL_TITLES: dict[tuple[str, str], str] = {
    ("frame", "none"): "Frame level",
    ("video", "mean"): "Video level (mean of the frame probabilities)",
    ("video", "max"): "Video level (maximum frame probability)",
    ("patient", "mean"): "Patient level (mean of the frame probabilities)",
    ("patient", "max"): "Patient level (maximum frame probability)",
}


class StoredValueError(StoreError):
    """A value in the store that it cannot hold (a metric outside its range, a probability outside [0, 1],
    a label other than 0 / 1): the report refuses the store before it writes anything, and the command
    line says so in one line with exit status 2 (a :class:`~harness.store.StoreError`)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (notes in the report stay one line each)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ScoreIndex:
    """Every finite per-run score keyed by (arm, level, aggregation, metric), built once.

    The analysis asks for the same arm / metric series many times; scanning the long metrics
    table each time would dominate the report's run time.
    """

    def __init__(self, metrics: pd.DataFrame) -> None:
        self._index: dict[ScoreKey, dict[RunKey, float]] = {}
        if not len(metrics):
            return
        cols = ["arm", "level", "aggregation", "metric", "repeat", "fold", "value"]
        for arm, level, agg, metric, r, f, v in metrics[cols].itertuples(index=False, name=None):
            if v is not None and np.isfinite(float(v)):
                key = (str(arm), str(level), str(agg), str(metric))
                self._index.setdefault(key, {})[(int(r), int(f))] = float(v)

    def get(self, arm: str, level: str, aggregation: str, metric: str) -> dict[RunKey, float]:
        """``{(repeat, fold): value}`` of one arm / level / metric (a copy: callers may change it)."""
        return dict(self._index.get((arm, level, aggregation, metric), {}))


@dataclass
class SplitSizes:
    """Outer training size (training + inner validation) and test size per (repeat, fold)."""

    n_train: dict[RunKey, float]
    n_test: dict[RunKey, float]

    @property
    def ratio(self) -> float:
        """Mean of the per-run n_test / n_train (the corrected t-test's correction)."""
        if not self.n_train:
            return float("nan")
        return float(np.mean([self.n_test[k] / self.n_train[k] for k in self.n_train]))


@dataclass
class Inputs:
    """Everything the report reads from the store, plus the rebuilt suite."""

    out_dir: Path
    store_path: Path
    meta: dict[str, Any]
    suite_dict: dict[str, Any]
    runs: pd.DataFrame
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    epochs: pd.DataFrame
    splits: pd.DataFrame
    preprocessing: pd.DataFrame
    skipped: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)  # problems met while reading
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)  # sample_id, group_id, video_id, label, ...
    family: str = ""  # "" : the arms' own runs; "tuned" / "untuned": that variant's runs (<arm>~<family>)

    @property
    def arms(self) -> list[str]:
        """The arms of the stored suite, in its order (an arm only the store knows, e.g. one removed from
        the suite since it ran, is not reported: :func:`read_store` leaves its rows out); for a variant
        family, the stored names of that variant (``<arm>~tuned``)."""
        if not self.family:
            return [a["name"] for a in self.suite_dict.get("arms", [])]
        return [n for n in run_arm_names(self.meta, self.suite_dict) if split_variant(n)[1] == self.family]

    @property
    def variants(self) -> list[str]:
        """The variant families the suite ran besides the arms' own runs (``tuned`` or ``untuned``)."""
        found = [split_variant(n)[1] for n in run_arm_names(self.meta, self.suite_dict)]
        return list(dict.fromkeys(v for v in found if v))

    @property
    def tuned_family(self) -> str:
        """Which family the search tuned: the arms' own runs ("") or the ``tuned`` variant."""
        return "tuned" if "tuned" in self.variants else ""

    def variant(self, family: str) -> Inputs:
        """The same store seen as one variant family: its arms, runs and scores only (baseline:
        the baseline's variant)."""
        names = {n for n in run_arm_names(self.meta, self.suite_dict) if split_variant(n)[1] == family}
        return replace(self, family=family, notes=list(self.notes),
                       **{k: _of_arms(getattr(self, k), names)
                          for k in ("runs", "metrics", "predictions", "epochs", "preprocessing")})

    def own_name(self, arm: str) -> str:
        """The stored name of ``arm`` (a suite arm's name) in this family."""
        return f"{arm}{VARIANT_SEPARATOR}{self.family}" if self.family else arm

    @property
    def planned_runs(self) -> list[RunKey]:
        """Every (repeat, fold) the suite's evaluation plans for each arm."""
        ev = self.suite_dict.get("evaluation", {}) or {}
        folds, repeats = int(ev.get("folds", 0) or 0), int(ev.get("repeats", 1) or 1)
        return [(r, f) for r in range(repeats) for f in range(folds)]

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]

    @cached_property
    def scores(self) -> ScoreIndex:
        return ScoreIndex(self.metrics)

    @cached_property
    def levels(self) -> list[tuple[str, str]]:
        """(level, aggregation) pairs present, known ones first in :data:`LEVEL_TITLES` order."""
        m = self.metrics
        present = {(str(lv), str(a)) for lv, a in zip(m["level"], m["aggregation"])} if len(m) else set()
        known = [k for k in LEVEL_TITLES if k in present]
        return known + sorted(present - set(known))

    @cached_property
    def metric_names(self) -> list[str]:
        """Metrics present, in the schema's order, then unknown ones (from newer code) sorted."""
        present = set(self.metrics["metric"]) if len(self.metrics) else set()
        return [m for m in METRIC_NAMES if m in present] + sorted(present - set(METRIC_NAMES))

    @cached_property
    def split_sizes(self) -> SplitSizes:
        """The splits are shared by all arms, so the first done run of each (repeat, fold) gives them."""
        n_train: dict[RunKey, float] = {}
        n_test: dict[RunKey, float] = {}
        for row in self.done.itertuples(index=False):
            key = (int(row.repeat), int(row.fold))
            if key in n_train or _missing(row.n_train) or _missing(row.n_test):
                continue
            n_val = 0 if _missing(row.n_val) else row.n_val
            n_train[key] = float(row.n_train) + float(n_val)
            n_test[key] = float(row.n_test)
        return SplitSizes(n_train, n_test)

    def arm_config(self, arm: str) -> dict[str, Any]:
        """The arm's entry of the stored suite ({} for an arm the suite no longer has); a variant's name
        gives its arm's entry."""
        base = split_variant(arm)[0]
        return next((a for a in self.suite_dict.get("arms", []) if a.get("name") == base), {})


def run_arm_names(meta: dict[str, Any], suite_dict: dict[str, Any]) -> list[str]:
    """Every set of runs the stored suite planned (meta ``run_arms``, written by the runner); a store
    written before variants existed planned each arm once."""
    stored = meta.get("run_arms")
    if isinstance(stored, list) and stored:
        return [str(r.get("name")) for r in stored if isinstance(r, dict)]
    return [a["name"] for a in suite_dict.get("arms", [])]


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _of_arms(table: pd.DataFrame, arms: set[str]) -> pd.DataFrame:
    """The rows of the current suite's arms (a table without an ``arm`` column is returned as it is)."""
    if "arm" not in table.columns:
        return table
    return table[table["arm"].isin(arms)].reset_index(drop=True)


def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(the values as floats, where a value is neither a number nor NULL: text in a number column)``."""
    v = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
    return v, np.isnan(v) & column.notna().to_numpy()


def _shown(raw: Any, not_number: bool) -> str:
    return f"{raw!r} (not a number)" if not_number else f"{float(raw):.10g}"


def _where(row: pd.Series) -> str:
    """``run <id>`` (and its external set, for an external table's row)."""
    on = f" on external set {row['dataset']}" if "dataset" in row.index else ""
    return f"run {row['run_id']}{on}"


def _more(n_bad: int) -> str:
    return f" ({n_bad - 1} more stored value(s) are out of range too)" if n_bad > 1 else ""


def check_metric_values(metrics: pd.DataFrame, store_path: Path | str) -> None:
    """Refuse a stored metric value outside its range (:data:`harness.metrics.METRIC_RANGES`; NaN is an
    undefined value, accepted), naming the run, the metric, its level / aggregation, the value and the range.

    Raises :class:`StoredValueError` for the first such row (and counts the others)."""
    if not len(metrics):
        return
    values, not_number = _numbers(metrics["value"])
    names = metrics["metric"].astype(str).to_numpy()
    bad = not_number.copy()
    for metric in np.unique(names):
        mask = names == metric
        bad[mask] |= ~in_range(metric, values[mask])
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    row = metrics.iloc[i]
    raise StoredValueError(
        f"{store_path}: {_where(row)} stores {row['metric']} = {_shown(row['value'], bool(not_number[i]))} at level "
        f"{row['level']}/{row['aggregation']}; accepted: {range_text(str(row['metric']))}, or NaN where undefined"
        f"{_more(int(bad.sum()))}")


def check_prediction_values(predictions: pd.DataFrame, store_path: Path | str,
                            columns: tuple[str, ...] = ("prob", "label")) -> None:
    """Refuse a stored prediction whose probability is not in [0, 1] or whose label is not 0 or 1 (the
    samples table's labels too: a frame without ``run_id``), naming the run, the sample and the value."""
    if not len(predictions):
        return
    for column, accepted in (("prob", "a probability in [0, 1]"), ("label", "0 or 1")):
        if column not in columns or column not in predictions.columns:
            continue
        values, not_number = _numbers(predictions[column])
        with np.errstate(invalid="ignore"):
            ok = (values >= 0) & (values <= 1) if column == "prob" else np.isin(values, (0.0, 1.0))
        bad = ~ok | not_number
        if not bad.any():
            continue
        i = int(np.flatnonzero(bad)[0])
        row = predictions.iloc[i]
        raw = row[column]
        shown = "NULL" if raw is None else _shown(raw, bool(not_number[i]))
        who = f"{_where(row)} stores" if "run_id" in row.index else "the samples table stores"
        raise StoredValueError(
            f"{store_path}: {who} {column} = {shown} for sample {row['sample_id']}; accepted: {accepted}"
            f"{_more(int(bad.sum()))}")


def read_store(out_dir: Path) -> Inputs:
    """Read the results store of ``out_dir`` (or a path to the ``.sqlite`` file itself)."""
    from harness.store import ResultsStore

    store = ResultsStore(out_dir, readonly=True)
    try:
        suite_dict = store.suite_config()
        meta = store.meta()
        arms = set(run_arm_names(meta, suite_dict))
        inputs = Inputs(
            out_dir=store.path.parent,
            store_path=store.path,
            meta=meta,
            suite_dict=suite_dict,
            runs=_of_arms(store.runs(), arms),
            metrics=_of_arms(store.metrics(), arms),
            predictions=_of_arms(store.predictions(), arms),
            epochs=_of_arms(store.epochs(), arms),
            splits=store.splits(),
            preprocessing=_of_arms(store.preprocessing(), arms),
            skipped=store.skipped(),
            samples=store.samples(),
        )
    finally:
        store.close()
    # Before anything is computed or written: a value the store cannot hold (an edited file, a bug in
    # the code that wrote it) is refused, never reported as it is.
    check_metric_values(inputs.metrics, inputs.store_path)
    check_prediction_values(inputs.predictions, inputs.store_path)
    check_prediction_values(inputs.samples, inputs.store_path, columns=("label",))  # its metadata is free-form
    if "strata" not in inputs.meta and not (suite_dict.get("report") or {}).get("strata"):
        inputs.notes.append("This store was written before the strata were stored with it: no per-stratum "
                            "analysis (set report.strata in the suite, or run it again into this directory).")
    return inputs
