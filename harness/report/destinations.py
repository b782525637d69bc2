"""Where a report's files go, decided and checked before the analysis runs (:mod:`harness.safe_write`).

A report writes three files that belong together: the page (``-o``, default ``STORE/report.html``),
``summary.json`` and ``metrics.csv`` (beside the page unless named); on request also a Markdown page's
generated block and its figures. Each existing file is replaced only when it is one of ours *of the same
suite*: the page by its ``<meta name="generator">`` (and its ``harness-suite`` line, where it has one),
``summary.json`` by its format and suite name, ``metrics.csv`` by its header. A folder that holds another
results store (of any suite: its summary would then describe other runs) or another suite's
``summary.json`` takes none of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from harness.report.markdown import figure_outputs
from harness.safe_write import Output, OutputError, Recognise, check_outputs, csv_header, html_generator, unwritable
from harness.store import STORE_FILENAME, ResultsStore, StoreError

#: The report template's ``<meta name="generator">`` (``templates/report.html``).
GENERATOR = "harness.report"
#: ``summary.json``'s ``format`` (a published format: docs/usage.md).
SUMMARY_FORMAT = "lus-harness summary 1"
METRICS_CSV_COLUMNS = ["run_id", "arm", "repeat", "fold", "level", "aggregation", "metric", "value"]
_SUITE_META = re.compile(rb'<meta name="harness-suite" content="([^"]*)">')


@dataclass(frozen=True)
class ReportFiles:
    """The destinations of one report, checked: every path may be written."""

    html: Path
    summary: Path
    metrics: Path
    markdown: Path | None = None


def report_files(store_dir: Path, suite: str, output: Path | None = None, summary: Path | None = None,
                 metrics: Path | None = None, markdown: Path | None = None) -> ReportFiles:
    """The report's destinations for ``suite``'s store in ``store_dir``; :class:`OutputError` (one line, nothing
    written) for any that cannot take its file. ``summary``/``metrics`` default to beside the page."""
    html = Path(output) if output is not None else Path(store_dir) / "report.html"
    files = ReportFiles(html, Path(summary) if summary is not None else html.parent / "summary.json",
                        Path(metrics) if metrics is not None else html.parent / "metrics.csv",
                        Path(markdown) if markdown is not None else None)
    beside = "beside -o" if output is not None else "beside the report"
    named = [
        (files.html, "-o", (".html", ".htm"), f"report page of suite {suite!r}", _page_of(suite)),
        (files.summary, "--summary" if summary is not None else beside, (".json",), f"summary.json of suite {suite!r}",
         _summary_of(suite)),
        (files.metrics, "--metrics" if metrics is not None else beside, (".csv",), "metrics.csv",
         csv_header(METRICS_CSV_COLUMNS)),
    ]
    outputs = []
    for path, flag, suffixes, kind, ours in named:
        if path.suffix.lower() not in suffixes:
            raise OutputError(f"{flag} {path}: not a {' or '.join(suffixes)} file; nothing was written; accepted: a "
                              f"path ending in {' or '.join(suffixes)} for the {kind}")
        _check_folder(path, flag, Path(store_dir), suite)
        outputs.append(Output(path, kind, ours, flag))
    check_outputs(outputs)
    if files.markdown is not None:
        check_outputs(figure_outputs(files.markdown, suite))  # the page itself and its figures beside it
    return files


def _check_folder(path: Path, flag: str, store_dir: Path, suite: str) -> None:
    """A folder holding another results store, or another suite's ``summary.json``, takes no report file."""
    folder = path.parent
    problem = unwritable(folder)
    if problem is not None:
        raise OutputError(f"{flag} {path}: {problem}; nothing was written; accepted: a folder this user can write to")
    if not folder.is_dir():
        return
    db = folder / STORE_FILENAME
    if db.exists() and folder.resolve() != store_dir.resolve():
        raise OutputError(f"{flag} {path}: {folder} holds another results store ({_store_suite(db)}); nothing was "
                          f"written (its summary.json and metrics.csv would describe other runs); accepted: the "
                          f"store's own folder ({store_dir}) or a folder without a results store")
    other = _summary_suite(folder / "summary.json")
    if other is not None and other != suite:
        raise OutputError(f"{flag} {path}: {folder} holds the report files of suite {other!r}, not {suite!r}; nothing "
                          "was written; accepted: a folder of this suite's report, or a new one")


def _page_of(suite: str) -> Recognise:
    """A page of this tool's report template; of this suite where the page names its suite."""
    generated = html_generator(GENERATOR)

    def ours(path: Path) -> bool:
        if not generated(path):
            return False
        with open(path, "rb") as handle:
            m = _SUITE_META.search(handle.read(8192))
        return m is None or m.group(1).decode("utf-8", "replace") == suite

    return ours


def _summary_of(suite: str) -> Recognise:
    return lambda path: _summary_suite(path) == suite


def _summary_suite(path: Path) -> str | None:
    """The suite a ``summary.json`` of ours describes (also one written before it had a ``format``); else None."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("suite"), dict):
        return None
    if obj.get("format") != SUMMARY_FORMAT and not {"arms", "comparisons", "primary_metric"} <= obj.keys():
        return None
    name = obj["suite"].get("name")
    return name if isinstance(name, str) else None


def _store_suite(db: Path) -> str:
    """'suite NAME' of a results store, read-only; 'a database of unknown suite' when it cannot be read."""
    try:
        with ResultsStore(db, readonly=True) as store:
            name = store.meta().get("suite_name")
    except (StoreError, OSError, ValueError):
        return "a database of unknown suite"
    return f"suite {name!r}" if name else "no suite recorded"


__all__ = ["GENERATOR", "METRICS_CSV_COLUMNS", "SUMMARY_FORMAT", "ReportFiles", "report_files", "OutputError"]
