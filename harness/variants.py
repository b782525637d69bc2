"""Stored names of a suite's sets of runs: an arm's own runs under its name, a variant as
``<arm>~tuned`` or ``<arm>~untuned``.

A leaf module (it imports nothing of the harness): the suite names its sets of runs with it
(:mod:`harness.suite.search`) and the report, which never imports the suite, reads them back.
"""

from __future__ import annotations

#: Joins an arm's name and its variant in a stored arm name ('perona-malik~tuned'); arm names
#: cannot hold it (harness.suite.NAME_PATTERN), so a variant never collides with an arm.
VARIANT_SEPARATOR = "~"
TUNED, UNTUNED = "tuned", "untuned"


def split_variant(name: str) -> tuple[str, str]:
    """``('perona-malik', 'tuned')`` of ``'perona-malik~tuned'``; ``(name, '')`` of a plain arm name."""
    arm, _, variant = name.partition(VARIANT_SEPARATOR)
    return arm, variant


__all__ = ["TUNED", "UNTUNED", "VARIANT_SEPARATOR", "split_variant"]
