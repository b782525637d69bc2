"""The report: paired statistics, figures and a self-contained HTML page from a results store.

``build_report(out_dir, output=None)`` reads ``out_dir/results.sqlite`` and writes
``report.html``, ``summary.json`` and ``metrics.csv`` (and, with ``markdown=PAGE``, the generated
block of a Markdown page: :mod:`harness.report.markdown`); it never trains.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["build_report"]


def build_report(out_dir: Path | str, output: Path | str | None = None, markdown: Path | str | None = None,
                 markdown_command: str = "", summary: Path | str | None = None,
                 metrics: Path | str | None = None) -> Path:
    """Write the report of the results in ``out_dir`` (see :func:`harness.report.build.build_report`)."""
    from harness.report.build import build_report as _build

    return _build(out_dir, output, markdown=markdown, markdown_command=markdown_command, summary=summary,
                  metrics=metrics)
