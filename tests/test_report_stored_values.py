"""The report refuses a store holding values it cannot hold (issue 29 item 1).

A metric outside its range (:data:`harness.metrics.METRIC_RANGES`), a probability outside [0, 1] or a
label other than 0 / 1 (an edited file, a bug in the code that wrote it) is refused in one line naming
the run, the key and the accepted values, with exit status 2, before any report file is written.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_verdicts import build  # the shared synthetic store (suite "verdicts")

from harness.cli import main
from harness.metrics import METRIC_NAMES, METRIC_RANGES, in_range, range_text
from harness.report.inputs import StoredValueError, check_metric_values, check_prediction_values
from harness.store import ResultsStore, StoreError

OUTPUTS = ("report.html", "summary.json", "metrics.csv")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid store (two arms, 2 x 3 runs), copied by each test before it edits it."""
    return build(tmp_path_factory.mktemp("valid") / "s", {"baseline": 1.5, "pm": 2.0}, patients=24,
                 negative_patients=12)


def _edited(store_dir: Path, tmp_path: Path, sql: str) -> tuple[Path, Path]:
    out = tmp_path / "edited"
    out.mkdir()
    src = sqlite3.connect(store_dir / "results.sqlite")
    dst = sqlite3.connect(out / "results.sqlite")
    src.backup(dst)  # a consistent copy (the store runs in WAL mode)
    src.close()
    dst.execute(sql)
    dst.commit()
    dst.close()
    path = ResultsStore(out, readonly=True).path
    return out, path


@pytest.mark.parametrize(("sql", "line"), [
    ("UPDATE metrics SET value = 5.0 WHERE run_id = 'baseline/r0/f1' AND level = 'frame' AND metric = 'roc_auc'",
     "run baseline/r0/f1 stores roc_auc = 5 at level frame/none; accepted: [0, 1], or NaN where undefined"),
    ("UPDATE metrics SET value = -0.25 WHERE run_id = 'pm/r1/f2' AND level = 'video' AND aggregation = 'max' "
     "AND metric = 'log_loss'",
     "run pm/r1/f2 stores log_loss = -0.25 at level video/max; accepted: >= 0 (finite), or NaN where undefined"),
    ("UPDATE metrics SET value = 'high' WHERE run_id = 'pm/r0/f0' AND level = 'frame' AND metric = 'brier'",
     "run pm/r0/f0 stores brier = 'high' (not a number) at level frame/none; accepted: [0, 1], or NaN where "
     "undefined"),
    ("UPDATE predictions SET prob = 1.7 WHERE run_id = 'pm/r0/f2' AND sample_id = "
     "(SELECT MIN(sample_id) FROM predictions WHERE run_id = 'pm/r0/f2')",
     "run pm/r0/f2 stores prob = 1.7 for sample {sample}; accepted: a probability in [0, 1]"),
    ("UPDATE predictions SET label = 2 WHERE run_id = 'baseline/r1/f0' AND sample_id = "
     "(SELECT MIN(sample_id) FROM predictions WHERE run_id = 'baseline/r1/f0')",
     "run baseline/r1/f0 stores label = 2 for sample {sample}; accepted: 0 or 1"),
], ids=["roc_auc-5", "log_loss-negative", "brier-text", "prob-1.7", "label-2"])
def test_report_refuses_an_out_of_range_value_in_one_line_before_writing(
        store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, line: str) -> None:
    out, path = _edited(store_dir, tmp_path, sql)
    run = line.split()[1]
    with sqlite3.connect(path) as conn:
        sample = conn.execute("SELECT MIN(sample_id) FROM predictions WHERE run_id = ?", (run,)).fetchone()[0]
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"{path}: {line.format(sample=sample)}\n"  # one line, the whole of stderr
    assert not [n for n in OUTPUTS if (out / n).exists()]


def test_a_sample_label_other_than_0_or_1_is_refused(store_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out, path = _edited(store_dir, tmp_path, "UPDATE samples SET label = 3 WHERE sample_id = 'p005_v1#2'")
    assert main(["report", str(out)]) == 2
    assert capsys.readouterr().err == (f"{path}: the samples table stores label = 3 for sample p005_v1#2; "
                                       "accepted: 0 or 1\n")
    assert not [n for n in OUTPUTS if (out / n).exists()]


def test_the_refusal_is_a_store_error_and_counts_the_other_bad_values(store_dir: Path, tmp_path: Path) -> None:
    from harness.report import build_report

    out, path = _edited(store_dir, tmp_path, "UPDATE metrics SET value = value + 2 WHERE metric = 'accuracy' "
                                             "AND level = 'frame' AND run_id LIKE 'pm/%'")
    with pytest.raises(StoreError) as info:  # the command line's bad-input class (exit 2)
        build_report(out)
    assert isinstance(info.value, StoredValueError)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: run pm/r0/f0 stores accuracy = ")
    assert message.endswith("at level frame/none; accepted: [0, 1], or NaN where undefined "
                            "(5 more stored value(s) are out of range too)")
    assert not [n for n in OUTPUTS if (out / n).exists()]


def test_nan_and_rounding_at_the_ends_are_accepted() -> None:
    frame = pd.DataFrame({"run_id": ["a/r0/f0"] * 4, "level": ["frame"] * 4, "aggregation": ["none"] * 4,
                          "metric": ["roc_auc", "pr_auc", "log_loss", "some_future_metric"],
                          "value": [math.nan, 1 + 2e-16, 12.5, -7.0]})
    check_metric_values(frame, "s.sqlite")  # NaN: undefined; 1 + 2e-16: rounding; unknown metric: not judged
    assert in_range("roc_auc", np.array([0.0, 1.0, 1.001, -0.001, math.inf])).tolist() == [True, True, False, False,
                                                                                            False]
    assert in_range("log_loss", np.array([0.0, 1e6, math.inf])).tolist() == [True, True, False]


def test_every_metric_has_its_range_in_one_place() -> None:
    assert tuple(METRIC_RANGES) == METRIC_NAMES
    assert {m: range_text(m) for m in ("roc_auc", "brier", "log_loss")} == {
        "roc_auc": "[0, 1]", "brier": "[0, 1]", "log_loss": ">= 0 (finite)"}


def test_external_rows_name_their_set() -> None:
    metrics = pd.DataFrame({"run_id": ["pm/r0/f0"], "dataset": ["site-b"], "level": ["video"],
                            "aggregation": ["mean"], "metric": ["specificity"], "value": [1.5]})
    with pytest.raises(StoredValueError, match=r"^s\.sqlite: run pm/r0/f0 on external set site-b stores specificity "
                       r"= 1\.5 at level video/mean; accepted: \[0, 1\], or NaN where undefined$"):
        check_metric_values(metrics, "s.sqlite")
    preds = pd.DataFrame({"run_id": ["pm/r0/f0"], "dataset": ["site-b"], "sample_id": ["x1"], "prob": [math.nan],
                          "label": [1]})
    with pytest.raises(StoredValueError, match=r"^s\.sqlite: run pm/r0/f0 on external set site-b stores prob = nan "
                       r"for sample x1; accepted: a probability in \[0, 1\]$"):
        check_prediction_values(preds, "s.sqlite")
