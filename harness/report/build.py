"""Build the report of a results store: read it, analyse it, write the outputs.

``build_report(out_dir)`` reads ``out_dir/results.sqlite`` (:mod:`harness.report.inputs`),
computes every number once (:mod:`harness.report.analysis`, with :mod:`harness.stats`) and writes
three files side by side from that one result: ``report.html`` (self-contained;
:mod:`harness.report.context`, :mod:`harness.report.figure_specs`, :mod:`harness.report.html`),
``summary.json`` (the numbers, NaN -> null) and ``metrics.csv`` (every per-run metric, long
format; both :mod:`harness.report.outputs`); on request also the generated block of a Markdown
page and its forest plot (:mod:`harness.report.markdown`).
"""

from __future__ import annotations

import gc
from pathlib import Path

from harness.report import html
from harness.report.analysis import analyse
from harness.report.context import template_context
from harness.report.inputs import read_store
from harness.report.markdown import check_page, write_markdown
from harness.report.outputs import write_metrics_csv, write_summary


def build_report(out_dir: Path | str, output: Path | str | None = None, markdown: Path | str | None = None,
                 markdown_command: str = "") -> Path:
    """Write ``report.html``, ``summary.json`` and ``metrics.csv`` for the results in ``out_dir``.

    ``output`` is the HTML path (default ``out_dir/report.html``); the JSON and CSV go beside it.
    ``markdown``: a Markdown page whose generated block (and ``<stem>-forest.png`` beside it) is
    rewritten from the same analysis; ``markdown_command`` is the command printed in that block.
    Returns the HTML path.  Raises :class:`harness.store.StoreError` if there is no store,
    :class:`harness.report.markdown.MarkdownPageError` (before anything is written) if the page
    cannot take the block.
    """
    inputs = read_store(Path(out_dir))
    if markdown is not None:
        check_page(Path(markdown), str(inputs.suite_dict.get("name", "")))
    html_path = Path(output) if output is not None else inputs.out_dir / "report.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    # statsmodels' Holm calls gc.collect() on every use (~90 calls per report, ~0.4 s each with
    # torch loaded); freezing the long-lived objects makes each collection cheap.
    gc.freeze()
    try:
        analysis = analyse(inputs)
        context = template_context(analysis)
    finally:
        gc.unfreeze()
    write_summary(analysis, html_path.parent / "summary.json")
    write_metrics_csv(inputs.metrics, html_path.parent / "metrics.csv")
    html_path.write_text(html.render(context), encoding="utf-8")
    if markdown is not None:
        write_markdown(analysis, Path(markdown), markdown_command)
    return html_path
