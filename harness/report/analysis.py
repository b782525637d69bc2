"""Every number of the report, computed once from the store's inputs into one typed result.

``analyse(inputs)`` returns an :class:`Analysis`; ``summary.json`` (:mod:`harness.report.outputs`)
and the HTML page (:mod:`harness.report.context`) are both written from it, so the two never
disagree. The statistics themselves are :mod:`harness.stats`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness import stats
from harness.report.checks import (
    MIN_PER_CLASS,
    ChanceCheck,
    LevelCheck,
    RunCounts,
    check_chance,
    check_levels,
    fit_problems,
    noise_floor_arm,
    run_counts,
)
from harness.report.comparisons import (
    Comparison,
    PairingLog,
    PredictionTest,
    Ranking,
    compare_arms,
    prediction_tests,
    rank_arms,
)
from harness.report.equivalence import Contrast, add_equivalence, contrasts, decision_text
from harness.report.inputs import Inputs
from harness.report.intervals import mean_interval, mean_method
from harness.report.learned import ParameterChanges, learned_summary, parameter_changes
from harness.report.manipulation import Manipulation, add_caveats, manipulation
from harness.report.methods import CodeProvenance, code_provenance, failed_runs, leakage
from harness.report.sensitivity import Sensitivity, check_columns, rules_of, sensitivities
from harness.report.strata import StrataTable, stratify
from harness.report.timing import Cost, timing


@dataclass(frozen=True)
class Settings:
    """The report section of the stored suite, with its defaults."""

    baseline: str
    primary: str
    alpha: float
    rope: float
    strata_columns: list[str]
    primary_level: str = "frame"  # evaluation.primary_level: frame | video; the other one is co-primary
    min_per_class: int = MIN_PER_CLASS
    margin: float | None = None  # report.equivalence_margin: the four-way verdicts (harness.report.equivalence)
    contrasts: tuple[tuple[str, str], ...] = ()  # report.contrasts, as stored names of this family

    @property
    def headline_levels(self) -> list[tuple[str, str]]:
        """(level, aggregation) of the primary level, then the co-primary one."""
        pair = [("frame", "none"), ("video", "mean")]
        return pair if self.primary_level == "frame" else pair[::-1]

    @classmethod
    def from_inputs(cls, inputs: Inputs) -> Settings:
        s = inputs.suite_dict
        rep = s.get("report", {}) or {}
        arms = inputs.arms
        # The driver stores the strata (report.strata, else the data's own); a store written
        # before it did knows only report.strata (the data's defaults live in the schema, which
        # the report does not import).
        strata = list(inputs.meta.get("strata") or rep.get("strata") or [])
        base = rep.get("baseline") or (s.get("arms") or [{}])[0].get("name", "")
        return cls(
            baseline=inputs.own_name(base) if base else (arms[0] if arms else ""),
            primary=(s.get("evaluation", {}) or {}).get("primary_metric", "roc_auc"),
            alpha=float(rep.get("alpha", 0.05)),
            rope=float(rep.get("rope", 0.01)),
            strata_columns=strata,
            primary_level="video" if (s.get("evaluation", {}) or {}).get("primary_level") == "video" else "frame",
            min_per_class=int(rep.get("min_per_class", MIN_PER_CLASS)),
            margin=None if rep.get("equivalence_margin") is None else float(rep["equivalence_margin"]),
            contrasts=tuple((inputs.own_name(a), inputs.own_name(b)) for a, b in rep.get("contrasts") or []),
        )


@dataclass
class MetricSummary:
    """One arm's metric at one level over its runs."""

    mean: float
    std: float
    ci95: list[float]  # plain t interval, runs as independent (may leave [0, 1]; kept for summary.json)
    ci95_bootstrap: list[float]  # percentile bootstrap, runs as independent (kept for summary.json)
    n: int
    per_run: list[dict[str, Any]]  # {"repeat", "fold", "value"}
    # What the page and the chance check show: the corrected interval of the mean, inside the metric's
    # range (harness.report.intervals.mean_interval); ci95_clipped: the range cut it.
    ci95_bounded: list[float] = field(default_factory=list)
    ci95_bounded_method: str = ""
    ci95_clipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArmSummary:
    """``levels["frame/none"][metric]``: the arm's summaries by level and metric; its verdict."""

    levels: dict[str, dict[str, MetricSummary]]
    verdict: str | None = None

    @property
    def metrics(self) -> dict[str, MetricSummary]:
        """The frame-level summaries (the headline level)."""
        return self.levels.get("frame/none", {})


@dataclass
class Verdict:
    """The plain-language answer for one arm on the primary metric, with the numbers behind it.

    ``comparison`` is None when the arm could not be compared (it or the baseline has no completed
    run, or the primary level is not estimable); ``text`` then says why. ``co_primary`` is the answer
    at the other headline level (video when the frame is primary, and the reverse); ``caveats`` are
    the sentences that qualify it: failed runs and the sensitivity line, runs that did not fit,
    the seed-noise floor, an arm at chance.
    """

    arm: str
    text: str
    headline: str
    detail: str
    kind: str  # better | worse | equivalent | undecided | no-difference | not-compared (a CSS class too)
    comparison: Comparison | None
    level: str = "frame"
    co_primary: dict[str, Any] = field(default_factory=dict)  # {level, text, headline, kind}
    caveats: list[str] = field(default_factory=list)
    noise_floor: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_comparison(cls, c: Comparison, alpha: float, versus: str | None = None) -> Verdict:
        """The verdict of a comparison: the four-way decision where it carries an equivalence test
        (``report.equivalence_margin``), else the Bayesian sentence of :func:`harness.stats.verdict`;
        ``versus`` names the other arm of a contrast."""
        if c.equivalence:
            text, kind = decision_text(c, alpha, versus or "the baseline"), str(c.equivalence["decision"])
        else:
            text = stats.verdict(c.as_mapping(), alpha=alpha)
            if versus:
                text = text.replace(" than the baseline", f" than {versus}")
            kind = _verdict_kind(text)
        head, _, detail = text.partition(" (")
        return cls(c.arm, text, head, ("(" + detail) if detail else "", kind, c, level=c.level)

    @classmethod
    def not_compared(cls, arm: str, text: str, level: str) -> Verdict:
        return cls(arm, text, text, "", "not-compared", None, level=level)


def _verdict_kind(text: str) -> str:
    for start, kind in (
        ("better", "better"),
        ("worse", "worse"),
        ("practically", "equivalent"),
        ("detectably", "undecided"),
    ):
        if text.startswith(start):
            return kind
    return "no-difference"


@dataclass
class Analysis:
    """Everything the report says, computed from :class:`~harness.report.inputs.Inputs`."""

    inputs: Inputs
    settings: Settings
    arms: list[str]  # suite order, then arms only the store knows
    ran: list[str]  # arms with at least one done run
    arm_summaries: dict[str, ArmSummary]
    comparisons: list[Comparison]  # frame level
    other_levels: list[Comparison]  # video / patient levels
    prediction_tests: list[PredictionTest]
    ranking: Ranking
    verdicts: list[Verdict]
    cost: Cost
    strata: list[StrataTable]
    learned: dict[str, dict[str, dict[str, Any]]]  # arm -> parameter -> mean, std, min, max, n
    changes: ParameterChanges  # diffusion parameters before and after training, per run
    leakage: dict[str, Any]
    failed_runs: list[dict[str, Any]]
    code: CodeProvenance  # which code computed the runs, against this checkout's
    notes: list[str] = field(default_factory=list)
    levels: dict[str, LevelCheck] = field(default_factory=dict)
    chance: ChanceCheck | None = None
    run_counts: dict[str, RunCounts] = field(default_factory=dict)
    fit_problems: list[dict[str, Any]] = field(default_factory=list)
    noise_floor: str | None = None  # the arm that is the baseline with another seed offset
    tuning_effect: list[TuningEffect] = field(default_factory=list)  # tuned vs untuned verdicts, per arm
    variant: Analysis | None = None  # the variant family (<arm>~tuned or ~untuned), compared within itself
    contrasts: list[Contrast] = field(default_factory=list)  # report.contrasts, each pair at each headline level
    sensitivity: list[Sensitivity] = field(default_factory=list)  # report.sensitivity: the verdicts without rows
    manipulation: Manipulation = field(default_factory=Manipulation)  # issue 26 §1: did each arm's diffusion act?

    @property
    def test_train_ratio(self) -> float:
        return self.inputs.split_sizes.ratio


@dataclass
class TuningEffect:
    """Does tuning change the verdict? One arm's verdict untuned (against the untuned baseline) and tuned
    (against the tuned baseline), on the same splits and seeds (``search.arms`` / ``search.also_untuned``)."""

    arm: str
    untuned: Verdict
    tuned: Verdict

    @property
    def changed(self) -> bool:
        """Whether the two verdicts differ in kind (better / worse / equivalent / no difference ...)."""
        return self.untuned.kind != self.tuned.kind

    def as_dict(self) -> dict[str, Any]:
        def side(v: Verdict) -> dict[str, Any]:
            c = v.comparison
            return {"arm": v.arm, "kind": v.kind, "headline": v.headline, "text": v.text,
                    "mean_difference": c.mean_difference if c is not None else None,
                    "ci95": list(c.ci95) if c is not None and c.ci95 else None,
                    "p_holm": c.tests.get("corrected_t", {}).get("p_holm") if c is not None else None,
                    "mde": c.mde.get("value") if c is not None else None}

        return {"arm": self.arm, "changed": self.changed, "untuned": side(self.untuned), "tuned": side(self.tuned)}


def tuning_effects(main: Analysis, variant: Analysis) -> list[TuningEffect]:
    """Pair each arm's verdict in the two families (the family the search tuned is read from the inputs)."""
    from harness.variants import split_variant

    own = {v.arm: v for v in main.verdicts}
    other = {split_variant(v.arm)[0]: v for v in variant.verdicts}
    tuned_is_variant = main.inputs.tuned_family == "tuned"
    out = []
    for arm in own:
        if arm in other:
            untuned, tuned = (own[arm], other[arm]) if tuned_is_variant else (other[arm], own[arm])
            out.append(TuningEffect(arm, untuned, tuned))
    return out


def summarise_arms(inputs: Inputs) -> dict[str, ArmSummary]:
    """Per arm, level and metric: mean, std, the corrected interval of the mean (inside the metric's range),
    the plain t and bootstrap CIs and the per-run values."""
    ratio = inputs.split_sizes.ratio
    out: dict[str, ArmSummary] = {}
    for arm in inputs.arms:
        levels: dict[str, dict[str, MetricSummary]] = {}
        for level, agg in inputs.levels:
            block = {}
            for metric in inputs.metric_names:
                values = inputs.scores.get(arm, level, agg, metric)
                if values:
                    block[metric] = _metric_summary(values, metric, ratio)
            if block:
                levels[f"{level}/{agg}"] = block
        out[arm] = ArmSummary(levels)
    return out


def _metric_summary(values: dict[tuple[int, int], float], metric: str, ratio: float) -> MetricSummary:
    keys = sorted(values)
    s = stats.summarize([values[k] for k in keys])
    per_run = [{"repeat": r, "fold": f, "value": values[(r, f)]} for r, f in keys]
    # The one interval of an arm's mean (the chance check reads the same one): corrected, inside the range.
    ci, clipped = mean_interval([values[k] for k in keys], metric, ratio)
    return MetricSummary(
        s["mean"],
        s["std"],
        s["ci95_t"],
        s["ci95_bootstrap"],
        s["n"],
        per_run,
        ci95_bounded=ci,
        ci95_bounded_method=mean_method(metric),
        ci95_clipped=clipped,
    )


def _unpaired_notes(unpaired: dict[str, int], baseline: str) -> list[str]:
    return [
        f"{arm}: up to {n} run(s) had no finite score in this arm or in {baseline} (a failed run, or a metric "
        "undefined on a fold); its comparisons use the runs both arms have."
        for arm, n in unpaired.items()
    ]


def analyse(inputs: Inputs) -> Analysis:
    """Compute every number of the report (no figures: they are drawn from the result)."""
    settings = Settings.from_inputs(inputs)
    baseline, primary = settings.baseline, settings.primary
    rules = rules_of(inputs)
    check_columns(inputs, rules)  # a rule on a column the store's samples lack: refused in one line, nothing written
    log = PairingLog()
    arm_summaries = summarise_arms(inputs)
    levels = check_levels(inputs, primary, settings.min_per_class)
    estimable = [lv for lv in inputs.levels if levels.get(lv[0]) is None or levels[lv[0]].estimable]
    comparisons = (
        compare_arms(inputs, baseline, settings.rope, log, alpha=settings.alpha) if ("frame", "none") in estimable else []
    )
    other_levels = [
        c for level in estimable if level != ("frame", "none")
        for c in compare_arms(inputs, baseline, settings.rope, log, level, alpha=settings.alpha)
    ]
    if settings.margin is not None:  # the TOST of the primary metric, Holm across the arms of each level
        for level in {(c.level, c.aggregation) for c in [*comparisons, *other_levels]}:
            add_equivalence([c for c in [*comparisons, *other_levels]
                             if (c.level, c.aggregation) == level and c.metric == primary], settings.margin,
                            settings.alpha)
    counts = run_counts(inputs)
    nf = noise_floor_arm(inputs.suite_dict, baseline)
    chance = check_chance(inputs, baseline, primary, [lv for lv in settings.headline_levels if lv in inputs.levels], levels)
    verdicts = make_verdicts(inputs, settings, [*comparisons, *other_levels], levels, counts, chance, nf)
    changes = parameter_changes(inputs.done)
    checked = manipulation(inputs.meta, inputs.arms, changes)  # a flagged arm's verdict says it is no test
    add_caveats(verdicts, checked)
    for v in verdicts:
        arm_summaries[v.arm].verdict = v.text
    ran = [a for a in inputs.arms if a in set(inputs.done["arm"])]
    predicted = set(inputs.predictions.get("arm", []))
    has_strata = len(inputs.predictions) and settings.strata_columns
    level_notes = [f"{lv.capitalize()} level: {c.reason}." for lv, c in levels.items() if not c.estimable]
    result = Analysis(
        inputs=inputs,
        settings=settings,
        arms=inputs.arms,
        ran=ran,
        arm_summaries=arm_summaries,
        comparisons=comparisons,
        other_levels=other_levels,
        prediction_tests=prediction_tests(inputs, baseline),
        ranking=rank_arms(inputs, baseline, primary, settings.alpha),
        verdicts=verdicts,
        cost=timing(inputs, ran),
        strata=stratify(
            inputs.predictions, settings.strata_columns, [a for a in inputs.arms if a in predicted], primary
        )
        if has_strata
        else [],
        learned=learned_summary(inputs.done, inputs.epochs),
        changes=changes,
        leakage=leakage(inputs),
        failed_runs=failed_runs(inputs),
        notes=[*inputs.notes, *level_notes, *log.notes, *_unpaired_notes(log.unpaired, baseline)],
        levels=levels,
        chance=chance,
        run_counts=counts,
        fit_problems=fit_problems(inputs),
        noise_floor=nf,
        code=code_provenance(inputs.done),
        manipulation=checked,
    )
    if settings.contrasts:
        shown = [lv for lv in settings.headline_levels if lv in estimable]
        result.contrasts = contrasts(inputs, settings.contrasts, shown, primary, settings.rope, settings.alpha,
                                     settings.margin, log)
        result.notes += [n for n in log.notes if n not in result.notes]
    result.sensitivity = sensitivities(inputs, settings, rules, verdicts)
    if not inputs.family and inputs.variants:  # the other family, analysed alone, then paired arm by arm
        result.variant = analyse(inputs.variant(inputs.variants[0]))
        result.tuning_effect = tuning_effects(result, result.variant)
    return result


# --------------------------------------------------------------------------- verdicts


def find_comparison(comparisons: list[Comparison], arm: str, level: tuple[str, str], metric: str) -> Comparison | None:
    return next(
        (c for c in comparisons if c.arm == arm and (c.level, c.aggregation) == level and c.metric == metric), None
    )


def _why_not_compared(arm: str, baseline: str, counts: dict[str, RunCounts], level: str,
                      levels: dict[str, LevelCheck], present: bool) -> str:
    """The sentence that replaces a verdict when there is no comparison."""
    base, mine = counts.get(baseline), counts.get(arm)
    if base is not None and base.done == 0:
        err = f"; first error: {base.first_error}" if base.first_error else ""
        return (f"not compared: the baseline {baseline} has no completed run ({base.failed} of {base.planned} "
                f"failed{err})")
    if mine is not None and mine.done == 0:
        err = f"; first error: {mine.first_error}" if mine.first_error else ""
        return f"not compared: this arm has no completed run ({mine.failed} of {mine.planned} failed{err})"
    check = levels.get(level)
    if check is not None and not check.estimable:
        return f"not answered at the {level} level: {check.reason}"
    if not present:
        return f"not compared: the store holds no {level}-level scores"
    return "not compared: fewer than 2 runs have a score in both this arm and the baseline (see the notes)"


def make_verdicts(
    inputs: Inputs,
    settings: Settings,
    comparisons: list[Comparison],
    levels: dict[str, LevelCheck],
    counts: dict[str, RunCounts],
    chance: ChanceCheck,
    noise_floor: str | None,
) -> list[Verdict]:
    """One verdict per arm besides the baseline, in suite order, whatever happened to its runs."""
    baseline, primary, alpha = settings.baseline, settings.primary, settings.alpha
    head, *co = settings.headline_levels
    out = []
    for arm in inputs.arms:
        if arm == baseline:
            continue
        per_level: dict[str, Verdict] = {}
        for level in (head, *co):
            c = find_comparison(comparisons, arm, level, primary)
            if c is not None:
                per_level[level[0]] = Verdict.from_comparison(c, alpha)
            else:
                why = _why_not_compared(arm, baseline, counts, level[0], levels, level in inputs.levels)
                per_level[level[0]] = Verdict.not_compared(arm, why, level[0])
        v = per_level[head[0]]
        for level in co:
            o = per_level[level[0]]
            v.co_primary = {"level": level[0], "text": o.text, "headline": o.headline, "kind": o.kind}
        v.caveats = _caveats(arm, settings, counts, chance, comparisons, noise_floor, v)
        out.append(v)
    return out


def _fmt_ci(ci: Any) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "[–]"


def _caveats(
    arm: str,
    settings: Settings,
    counts: dict[str, RunCounts],
    chance: ChanceCheck,
    comparisons: list[Comparison],
    noise_floor: str | None,
    v: Verdict,
) -> list[str]:
    out: list[str] = []
    baseline, primary = settings.baseline, settings.primary
    c = v.comparison
    # An arm at chance: its own score is no evidence of learning.
    for level, block in chance.arms.items():
        info = block.get(arm)
        if info and info.get("above_chance") is False:
            out.append(
                f"{arm} is not above chance at the {level} level ({primary} {info['mean']:.3f}, "
                f"{chance.interval_text(info)} includes {chance.chance:g})."
            )
    # Failed runs, counted, with the sensitivity line.
    mine, base = counts.get(arm), counts.get(baseline)
    if mine is not None and mine.done and (mine.not_done or (base is not None and base.not_done)):
        parts = [f"{mine.not_done} of {mine.planned} planned runs of {arm} did not complete"]
        if base is not None and base.not_done:
            parts.append(f"{base.not_done} of {base.planned} of {baseline}")
        text = "; ".join(parts) + " (the comparison uses the runs both completed)"
        sens = (c.failed_runs.get("sensitivity") if c is not None else None) or {}
        lines = []
        for how, label in (("chance", "as chance"), ("worst", "as that arm's worst run")):
            if how in sens:
                x = sens[how]
                lines.append(f"{label}: difference {x['mean_difference']:+.3f} {_fmt_ci(x['ci95'])}")
        if lines:
            text += ". Sensitivity, every missing run scored " + "; ".join(lines)
        out.append(text + ".")
    # Runs that did not fit.
    if mine is not None and (mine.fit["did_not_fit"] or mine.fit["diverged"]):
        out.append(
            f"{mine.fit['did_not_fit']} run(s) of {arm} did not fit and {mine.fit['diverged']} diverged "
            f"(of {mine.done} completed; reasons in the table of section 9); their scores are counted as they are."
        )
    # The seed-noise floor, as a defined test where a margin is stated (issue 26): the corrected TOST of the
    # noise-floor arm against the baseline at ±margin, Holm with the other arms. "The seeds alone move the score
    # by less than the margin" then has an error rate (alpha); setting one arm's mean difference against the
    # noise arm's interval (below, and without a margin) has none, so it stays descriptive.
    if noise_floor and c is not None and c.equivalence:
        out.append(_noise_floor_test(arm, noise_floor, comparisons, c, v))
    elif noise_floor and c is not None:
        nf = find_comparison(comparisons, noise_floor, (c.level, c.aggregation), c.metric)
        if arm == noise_floor:
            out.append(
                f"{arm} is the baseline trained again with another seed offset: its difference "
                f"{c.mean_difference:+.3f} {_fmt_ci(c.ci95)} is the seed-noise floor every other arm is read against."
            )
        elif nf is not None:
            lo, hi = nf.ci95
            exceeds = not (lo <= c.mean_difference <= hi) and abs(c.mean_difference) > abs(nf.mean_difference)
            v.noise_floor = {
                "arm": noise_floor,
                "exceeds": exceeds,
                "mean_difference": c.mean_difference,
                "noise_mean_difference": nf.mean_difference,
                "noise_ci95": nf.ci95,
            }
            out.append(
                f"{'Exceeds' if exceeds else 'Within'} the seed-noise floor: |difference| {abs(c.mean_difference):.3f} "
                f"vs {abs(nf.mean_difference):.3f} for {noise_floor} (the baseline with another seed), whose 95 % "
                f"interval is {_fmt_ci(nf.ci95)}; an arm exceeds it when its mean difference lies outside that "
                "interval and is larger in size."
            )
        else:
            out.append(f"The seed-noise floor ({noise_floor}) could not be compared at this level.")
    return out


def _noise_floor_test(arm: str, noise_floor: str, comparisons: list[Comparison], c: Comparison, v: Verdict) -> str:
    """The caveat of the seed-noise floor tested against the margin (and ``v.noise_floor``, for summary.json)."""
    nf = find_comparison(comparisons, noise_floor, (c.level, c.aggregation), c.metric)
    if nf is None or not nf.equivalence or nf.equivalence.get("p_tost_holm") is None:
        return f"The seed-noise floor ({noise_floor}) could not be tested at this level."
    eq = nf.equivalence
    m = float(eq["margin"])
    within = eq["decision"] == "equivalent"
    numbers = (f"{noise_floor} − baseline {nf.mean_difference:+.3f}, 90 % corrected interval {_fmt_ci(eq['ci90'])}, "
               f"Holm-adjusted TOST p = {float(eq['p_tost_holm']):.3g}")
    said = (f"the seeds alone move {c.metric} by less than ±{m:g}" if within else
            f"the seeds alone are not shown to move {c.metric} by less than ±{m:g}: these runs do not resolve "
            f"differences of ±{m:g}, so 'undecided' is the expected verdict of an arm as close to the baseline as a "
            "second seed")
    if arm == noise_floor:
        return (f"{arm} is the baseline trained again with another seed offset; the seed-noise floor, tested against "
                f"the margin (corrected TOST): {said} ({numbers}).")
    lo, hi = nf.ci95
    v.noise_floor = {
        "arm": noise_floor,
        "test": "corrected TOST of the noise-floor arm against the baseline at ±margin, Holm across arms",
        "margin": m,
        "within_margin": within,
        "p_tost_holm": eq["p_tost_holm"],
        "ci90": eq["ci90"],
        # descriptive, as without a margin (no error rate): the arm's mean difference against the noise interval
        "exceeds": not (lo <= c.mean_difference <= hi) and abs(c.mean_difference) > abs(nf.mean_difference),
        "mean_difference": c.mean_difference,
        "noise_mean_difference": nf.mean_difference,
        "noise_ci95": nf.ci95,
    }
    return f"Seed-noise floor, tested against the margin (corrected TOST of {noise_floor}): {said} ({numbers})."
