"""Build the report of a results store: read it, analyse it, write the outputs.

``build_report(out_dir)`` reads ``out_dir/results.sqlite`` (:mod:`harness.report.inputs`),
computes every number once (:mod:`harness.report.analysis`, with :mod:`harness.stats`) and writes
three files side by side from that one result: ``report.html`` (self-contained;
:mod:`harness.report.context`, :mod:`harness.report.figure_specs`, :mod:`harness.report.html`),
``summary.json`` (the numbers, NaN -> null) and ``metrics.csv`` (every per-run metric, long
format; both :mod:`harness.report.outputs`); on request also the generated block of a Markdown
page and its forest plot (:mod:`harness.report.markdown`). Where they go is checked first
(:mod:`harness.report.destinations`) and they are written all or none.
"""

from __future__ import annotations

import gc
from pathlib import Path

from harness.report import html
from harness.report.analysis import analyse
from harness.report.context import template_context
from harness.report.destinations import report_files
from harness.report.inputs import read_store
from harness.report.markdown import markdown_files
from harness.report.outputs import metrics_csv, summary_json
from harness.safe_write import write_all


def build_report(out_dir: Path | str, output: Path | str | None = None, markdown: Path | str | None = None,
                 markdown_command: str = "", summary: Path | str | None = None,
                 metrics: Path | str | None = None) -> Path:
    """Write ``report.html``, ``summary.json`` and ``metrics.csv`` for the results in ``out_dir``.

    ``output`` is the HTML path (default ``out_dir/report.html``); the JSON and CSV go beside it unless
    ``summary`` / ``metrics`` name them. ``markdown``: a Markdown page whose generated block (and
    ``<stem>-<suite>-forest.png`` beside it) is rewritten from the same analysis; ``markdown_command``
    is the command printed in that block. Every destination is checked before the analysis
    (:mod:`harness.report.destinations`): an existing file that is not one of ours of this suite is
    never overwritten, and the files are written all or none (:func:`harness.safe_write.write_all`).
    Returns the HTML path.  Raises :class:`harness.store.StoreError` if there is no store,
    :class:`harness.safe_write.OutputError` or :class:`harness.report.markdown.MarkdownPageError`
    (before anything is written) for a destination that cannot take its file.
    """
    inputs = read_store(Path(out_dir))
    suite = str(inputs.suite_dict.get("name", ""))
    dest = report_files(inputs.out_dir, suite, _path(output), _path(summary), _path(metrics), _path(markdown))
    # statsmodels' Holm calls gc.collect() on every use (~90 calls per report, ~0.4 s each with
    # torch loaded); freezing the long-lived objects makes each collection cheap.
    gc.freeze()
    try:
        analysis = analyse(inputs)
        context = template_context(analysis)
    finally:
        gc.unfreeze()
    files: dict[Path, str | bytes] = {dest.summary: summary_json(analysis), dest.metrics: metrics_csv(inputs.metrics),
                                      dest.html: html.render(context)}
    if dest.markdown is not None:
        files.update(markdown_files(analysis, dest.markdown, markdown_command))
    write_all(files)
    return dest.html


def _path(value: Path | str | None) -> Path | None:
    return Path(value) if value is not None else None
