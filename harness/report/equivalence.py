"""Verdicts that decide: the equivalence margin, the four-way decision and the contrasts between arms.

With ``report.equivalence_margin`` (stated in the suite before the run, in the primary metric's units)
every comparison of the primary metric gets the corrected TOST (:func:`harness.stats.corrected_tost`),
Holm-adjusted across the arms compared at that level, and one of four answers
(:func:`harness.stats.decide`): better, worse, equivalent within ±margin, or undecided. Without a
margin nothing here runs and the verdicts are today's (the Bayesian sentence of
:func:`harness.stats.verdict`).

``report.contrasts`` names pairs of arms the reading relies on (e.g. learnable-stem vs
conv-stem-reinit): each pair is compared with the same per-run paired tests, paired by (repeat, fold),
with Holm within the contrasts of one level, and with the TOST where a margin is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness import stats
from harness.metrics import LOWER_IS_BETTER
from harness.report.comparisons import Comparison, PairingLog, add_mde, compare_one, p_or_nan
from harness.report.inputs import Inputs

CONFIDENCE_NOTE = "90 % corrected interval (1 − 2α: the interval that matches the TOST at α)"


def add_equivalence(family: Sequence[Comparison], margin: float, alpha: float) -> None:
    """The corrected TOST of each comparison of one (level, metric) family against ``±margin``, Holm across
    the family, and each comparison's decision (``c.equivalence``, ``c.decision``)."""
    results = []
    for c in family:
        try:
            results.append(stats.corrected_tost(c.differences, c.ratio, margin, alpha))
        except ValueError:
            results.append(None)
    adjusted = stats.holm([math.nan if r is None else r.p for r in results])
    for c, r, p_holm in zip(family, results, adjusted):
        higher = c.metric not in LOWER_IS_BETTER
        decision = stats.decide(c.tests["corrected_t"].get("p_holm"), p_holm, c.mean_difference, alpha, higher)
        c.decision = decision
        c.equivalence = {
            "margin": float(margin),
            "p_tost": r.p if r is not None else None,
            "p_tost_holm": p_holm if r is not None else None,
            "ci90": r.ci90 if r is not None else None,
            "decision": decision,
            "p_lower": r.p_lower if r is not None else None,
            "p_upper": r.p_upper if r is not None else None,
            "t_lower": r.t_lower if r is not None else None,
            "t_upper": r.t_upper if r is not None else None,
            "se": r.se if r is not None else None,
            "df": r.df if r is not None else None,
            "confidence": r.confidence if r is not None else None,
            "n_hypotheses": int(sum(x is not None for x in results)),
            "method": "two one-sided corrected t-tests (Schuirmann 1987; Nadeau-Bengio variance), Holm across the "
            "comparisons of this level",
        }


def _fmt_p(p: Any) -> str:
    if p is None or not math.isfinite(float(p)):
        return "p not computable"
    p = float(p)
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"  # three decimals: a decision at 0.048 must not read 0.05


def _ci(ci: Any, digits: int = 3) -> str:
    if not ci or any(not math.isfinite(float(x)) for x in ci):
        return "[–]"
    return f"[{float(ci[0]):+.{digits}f}, {float(ci[1]):+.{digits}f}]"


def decision_text(c: Comparison, alpha: float, versus: str = "the baseline") -> str:
    """The verdict sentence of a comparison that carries an equivalence test; the headline is the text before
    its first " (" (:class:`harness.report.analysis.Verdict`)."""
    eq = c.equivalence
    m = float(eq["margin"])
    p_t = _fmt_p(c.tests["corrected_t"].get("p_holm"))
    p_e = _fmt_p(eq.get("p_tost_holm"))
    diff = (f"mean difference {c.mean_difference:+.3g}, 95 % corrected interval {_ci(c.ci95)}, "
            f"Holm-adjusted corrected t {p_t}")
    equiv = f"90 % corrected interval {_ci(eq.get('ci90'))} against ±{m:g}, Holm-adjusted TOST {p_e}"
    decision = eq["decision"]
    if decision == "equivalent":
        also = "; a difference is detected, smaller than the margin" if _rejects(c.tests["corrected_t"].get("p_holm"), alpha) \
            else ""
        return f"equivalent to {versus} within ±{m:g} ({equiv}; {diff}{also})"
    if decision in ("better", "worse"):
        return f"{decision} than {versus} ({diff}; equivalence within ±{m:g} not shown: {equiv})"
    return (f"undecided: neither a difference from {versus} nor equivalence within ±{m:g} is shown ({diff}; {equiv})")


def _rejects(p: Any, alpha: float) -> bool:
    return p is not None and math.isfinite(float(p)) and float(p) < alpha


# --------------------------------------------------------------------------- contrasts


@dataclass
class Contrast:
    """``first`` against ``second`` at one level on the primary metric (difference first − second)."""

    first: str
    second: str
    level: str
    aggregation: str
    metric: str
    comparison: Comparison | None
    text: str
    kind: str  # better | worse | equivalent | undecided | no-difference | not-compared (as a verdict's)

    @property
    def headline(self) -> str:
        return self.text.partition(" (")[0]


def contrasts(
    inputs: Inputs,
    pairs: Sequence[tuple[str, str]],
    levels: Sequence[tuple[str, str]],
    metric: str,
    rope: float,
    alpha: float,
    margin: float | None,
    log: PairingLog,
) -> list[Contrast]:
    """Each named pair at each level, the same tests as an arm against the baseline, Holm within the contrasts
    of one level (and the TOST, when ``margin`` is set)."""
    from harness.report.analysis import Verdict  # the verdict sentence and its kind, as for every arm

    out: list[Contrast] = []
    for level in levels:
        found = {(a, b): compare_one(inputs, a, b, level, metric, rope, log) for a, b in pairs}
        family = [c for c in found.values() if c is not None]
        for test in ("corrected_t", "wilcoxon"):
            adjusted = stats.holm([p_or_nan(c.tests[test].get("p")) for c in family])
            for c, p in zip(family, adjusted):
                c.tests[test]["p_holm"] = p
        add_mde(family, alpha)
        if margin is not None:
            add_equivalence(family, margin, alpha)
        for (a, b), c in found.items():
            if c is None:
                out.append(Contrast(a, b, level[0], level[1], metric, None,
                                    f"not compared: fewer than 2 runs have a {level[0]}-level {metric} score in both "
                                    f"{a} and {b}", "not-compared"))
                continue
            v = Verdict.from_comparison(c, alpha, versus=b)
            out.append(Contrast(a, b, level[0], level[1], metric, c, v.text, v.kind))
    return out
