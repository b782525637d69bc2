"""Rendering of the report's context into one self-contained HTML page (jinja2, autoescaped).

Every user-provided string (suite name and description, arm names, metadata values, error
messages) goes through jinja2's autoescaping; the only markup not escaped is the CSS file of
this package and the ``data:`` URIs of the figures, which this package produced itself.  A
Content-Security-Policy meta tag forbids every network fetch and every script, so the page
works offline and a string that escaped escaping still could not run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).with_name("templates")
# Nothing is loaded from anywhere but the page itself; scripts are not needed at all.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: ``digits`` decimals, an en dash for missing/NaN."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}"


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, ``<0.001`` below that, an en dash when missing."""
    if value is None:
        return "–"
    x = float(value)
    if not math.isfinite(x):
        return "–"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def fmt_p_text(value: Any) -> str:
    """A p-value inside a sentence: ``p = 0.042`` or ``p < 0.001``."""
    text = fmt_p(value)
    return "p " + ("< 0.001" if text == "<0.001" else "not computable" if text == "–" else f"= {text}")


def fmt_ci(ci: Any, digits: int = 3) -> str:
    """A confidence interval ``[lo, hi]``; an en dash when missing."""
    if not ci or any(v is None or not math.isfinite(float(v)) for v in ci):
        return "–"
    return f"[{float(ci[0]):.{digits}f}, {float(ci[1]):.{digits}f}]"


def environment() -> jinja2.Environment:
    """The jinja2 environment of the report: autoescaping on, undefined variables are errors."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["p"] = fmt_p
    env.filters["p_text"] = fmt_p_text
    env.filters["ci"] = fmt_ci
    return env


def render(context: dict[str, Any]) -> str:
    """The report page for ``context`` (from :func:`harness.report.context.template_context`)."""
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    # The stylesheet is this package's own file, so it is marked safe (CSS must not be escaped).
    return environment().get_template("report.html").render(csp=CSP, css=Markup(css), **context)
