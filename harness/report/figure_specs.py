"""Which figures the report shows, as a list of small specs; the drawing is in :mod:`harness.report.figures`.

Each :class:`FigureSpec` names a figure and a plain function ``make(data) -> (data: URI or None,
note or None)``. A figure that cannot be drawn gets a note instead, and one broken figure never
takes the report down.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from harness.report import figures, samples, tuning
from harness.report.analysis import Analysis
from harness.report.curves import RunCurve, run_curves, tail_spread
from harness.report.inputs import first_line
from harness.report.intervals import UNBOUNDED_METRICS
from harness.report.learned import LearnedParameters, learned_parameters, param_kind
from harness.report.strata import StrataTable
from harness.report.timing import TIMING_COLUMNS

FigureResult = tuple[str | None, str | None]  # (data: URI, note)


def always(data: FigureData) -> bool:
    return True


@dataclass
class FigureData:
    """What the figure functions read: the analysis, the arm colours, and the sample frames
    (loaded at most once, and only when a figure needs them)."""

    analysis: Analysis
    colors: dict[str, str]

    @classmethod
    def of(cls, analysis: Analysis) -> FigureData:
        return cls(analysis, figures.arm_colors(analysis.arms))

    @cached_property
    def frames(self) -> samples.SampleFrames:
        return samples.SampleFrames.prepare(self.analysis.inputs, self.analysis.ran)

    @cached_property
    def curves(self) -> dict[str, list[RunCurve]]:
        inputs = self.analysis.inputs
        curves = run_curves(inputs.done, inputs.epochs)
        return {arm: curves[arm] for arm in self.analysis.ran if arm in curves}  # suite order

    @cached_property
    def learned(self) -> LearnedParameters:
        inputs = self.analysis.inputs
        return learned_parameters(inputs.done, inputs.epochs)


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report. ``title`` and ``caption`` may name ``{primary}`` and ``{baseline}``."""

    id: str
    title: str
    caption: str
    make: Callable[[FigureData], FigureResult]
    shown: Callable[[FigureData], bool] = always


# --------------------------------------------------------------------------- the figure functions


def forest_figure(data: FigureData) -> FigureResult:
    """The primary metric's difference from the baseline at the frame and video levels, sorted by effect."""
    a = data.analysis
    st = a.settings
    levels = [lv for lv in st.headline_levels if lv in a.inputs.levels]
    comps = [c for c in [*a.comparisons, *a.other_levels] if c.metric == st.primary]
    by = {(c.arm, c.level): c for c in comps if (c.level, c.aggregation) in levels}
    arms = sorted({c.arm for c in by.values()}, key=lambda arm: a.arms.index(arm) if arm in a.arms else 0)
    if not arms:
        notes = [f"{lv}: {c.reason}" for lv, c in a.levels.items() if not c.estimable]
        return None, "No arm could be compared with the baseline" + (f" ({'; '.join(notes)})." if notes else ".")
    head = levels[0][0]
    rows = []
    for arm in arms:
        row: dict[str, Any] = {"arm": arm}
        for level, _ in levels:
            c = by.get((arm, level))
            row[level] = (c.mean_difference, c.ci95[0], c.ci95[1]) if c is not None and c.ci95 else None
        rows.append(row)
    rows.sort(key=lambda r: -(r[head][0] if r[head] is not None else float("-inf")))
    band = {}
    if a.noise_floor:
        for level, _ in levels:
            c = by.get((a.noise_floor, level))
            if c is not None and c.ci95:
                band[level] = tuple(c.ci95)
    uri = figures.forest_plot(rows, [lv for lv, _ in levels], st.primary, st.rope, data.colors, band, a.noise_floor)
    return uri, None


def frames_figure(data: FigureData) -> FigureResult:
    frames = data.frames
    return (figures.sample_frames(frames.processed, frames.titles) if frames.ok else None), frames.note


def roc_figure(data: FigureData) -> FigureResult:
    pred = data.analysis.inputs.predictions
    folds = {}
    for arm in data.analysis.ran:
        p = pred[pred["arm"] == arm]
        if len(p):
            folds[arm] = [(g["label"].to_numpy(), g["prob"].to_numpy()) for _, g in p.groupby("run_id", sort=True)]
    return (figures.roc_curves(folds, data.colors), None) if folds else (None, "No stored predictions.")


def paired_figure(data: FigureData) -> FigureResult:
    a = data.analysis
    baseline, primary = a.settings.baseline, a.settings.primary
    scores = {arm: a.inputs.scores.get(arm, "frame", "none", primary) for arm in a.ran}
    scores = {arm: v for arm, v in scores.items() if v}
    if baseline not in scores or len(scores) < 2:
        return None, "Needs the baseline and another arm with scores."
    return figures.paired_scores(scores, baseline, primary, data.colors), None


def cd_figure(data: FigureData) -> FigureResult:
    ranking, st = data.analysis.ranking, data.analysis.settings
    if not ranking.available:
        return None, ranking.reason
    title = f"{st.primary}: mean ranks, Nemenyi critical difference at α = {st.alpha:g}"
    return figures.critical_difference(ranking.mean_ranks, float(ranking.cd), title), None


def timing_figure(data: FigureData) -> FigureResult:
    cost = data.analysis.cost
    labels = {k: label for k, label, _ in TIMING_COLUMNS if k != "peak_rss_mb"}
    bars = figures.timing_bars({k: dict(cost[k]) for k in labels}, data.analysis.settings.baseline, data.colors, labels)
    return bars, None


def learned_figure(data: FigureData) -> FigureResult:
    learned = data.learned
    changes = data.analysis.changes
    initial: dict[str, dict[str, list[float]]] = {}
    for arm, params in changes.initial.items():
        for name, values in params.items():
            initial.setdefault(arm, {}).setdefault(param_kind(name), []).extend(values.tolist())
    means = {arm: {k: float(np.mean(v)) for k, v in d.items()} for arm, d in initial.items()}
    return figures.learned_parameters(learned.final, learned.trajectory, data.colors, means), None


def has_learned(data: FigureData) -> bool:
    return not data.learned.empty


def curves_figure(data: FigureData) -> FigureResult:
    curves = data.curves
    if not curves:
        return None, "No per-epoch history is stored."
    spreads = {arm: tail_spread(c) for arm, c in curves.items()}
    text = "; ".join(f"{arm} {s:.3f}" for arm, s in spreads.items() if s is not None)
    note = f"Median range of the validation ROC-AUC over each run's last 3 epochs: {text}." if text else None
    return figures.training_curves(curves, data.colors), note


def has_curves(data: FigureData) -> bool:
    return bool(data.curves)


def drift_figure(data: FigureData) -> FigureResult:
    changes = data.analysis.changes
    if not changes.final:
        return None, "The initial values of the diffusion parameters were not recorded (an older store)."
    return figures.parameter_drift(changes.drift(), changes.initial), None


def gradcam_figure(data: FigureData) -> FigureResult:
    frames = data.frames
    if not frames.ok:
        return None, frames.note
    result = samples.gradcams(data.analysis.inputs, frames)
    return (figures.gradcam_grid(frames.raw, result.cams, frames.titles) if result.cams else None), result.note


def gradcam_wanted(data: FigureData) -> bool:
    return bool((data.analysis.inputs.suite_dict.get("report") or {}).get("gradcam", True))


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "forest",
        "Every arm against {baseline}: difference in {primary}",
        "Mean paired difference (arm − baseline) over runs with its 95 % interval corrected for overlapping "
        "folds (Nadeau & Bengio), at the frame and video levels, sorted by effect on the primary level. Green "
        "band: the region of practical equivalence; hatched band and grey diamond: the noise-floor arm (the "
        "baseline again with another seed), the difference seeds alone make. The tables below give every number.",
        forest_figure,
    ),
    FigureSpec(
        "frames",
        "The same frames after each arm's preprocessing",
        "Rows: arms; columns: frames of each class from the test fold of the saved models, each shown with its "
        "own contrast. Arms that diffuse inside the network show their raw input here.",
        frames_figure,
    ),
    FigureSpec(
        "roc",
        "ROC curves per arm",
        "Thin lines: the test fold of each run; thick: their vertical average "
        "(band: ± 1 s.d.). Curves are never pooled across folds.",
        roc_figure,
    ),
    FigureSpec(
        "paired",
        "Per-run {primary}, paired with {baseline}",
        "Each line joins the baseline and the arm on the same (repeat, fold); coloured when the arm scored higher. "
        "Black: means.",
        paired_figure,
    ),
    FigureSpec(
        "cd",
        "Critical-difference diagram",
        "Mean rank of each arm over runs (1 = best). Arms joined by a thick "
        "bar are not significantly different (Nemenyi); the bar at the top is the critical difference.",
        cd_figure,
    ),
    FigureSpec("timing", "Timing cost", "Mean over runs; labels give the ratio to {baseline}.", timing_figure),
    FigureSpec(
        "learned",
        "Learned diffusion parameters",
        "Left: the values each learnable arm ended with, pooled over its layers and runs. Right: their mean per "
        "epoch (thin: each run; dashed: the initial value). summary.json lists every layer's parameters, and "
        "every run's 1 × 1 mixing weights of a diffusion stem (the 'mix' row).",
        learned_figure,
        shown=has_learned,
    ),
    FigureSpec(
        "gradcam",
        "Grad-CAM: where each arm's network looks",
        "Grad-CAM (Selvaraju et al. 2017) of the B-lines class on the same frames, recomputed from each arm's "
        "saved model (one fold), over the arm's input frame; it explains the deepest feature map of at least "
        "7 × 7 pixels (EfficientNet's conv_head at 224 px, an earlier stage for small frames). Red: regions that "
        "raise the B-line score most; each map is scaled to its own maximum. \"No positive evidence\": every "
        "gradient-weighted activation of that layer is ≤ 0 on this frame (Grad-CAM keeps only the positive part), "
        "so the map is empty — a property of that network on that frame, not a failure.",
        gradcam_figure,
        shown=gradcam_wanted,
    ),
    FigureSpec(
        "curves",
        "Did every run train? Training curves",
        "Per arm: training loss, validation loss (log scale) and validation ROC-AUC per epoch, one line per run; "
        "dotted: the loss of the best constant prediction (chance) and ROC-AUC 0.5; black dots: the selected "
        "epoch; red dashed: runs diagnosed as not fitting their training frames or with a diverged validation loss.",
        curves_figure,
        shown=has_curves,
    ),
    FigureSpec(
        "drift",
        "How far the diffusion parameters moved from their initial values",
        "Per learnable arm and parameter: final (selected-epoch) value minus initial value, per channel (columns) "
        "and run (rows); the title gives the mean relative change. A parameter that stays white did not learn.",
        drift_figure,
        shown=has_learned,
    ),
    # Tuning (harness.report.tuning): only for suites with a search section.
    FigureSpec(
        "tuning-chosen",
        "Tuning: the configuration each outer run chose",
        "Each point is the value the nested search chose in one outer run (jittered sideways); the black bar is "
        "the suite's own value (trial 0). Points spread widely: the inner folds could not tell the values apart.",
        tuning.chosen_figure,
        shown=tuning.has_tuning,
    ),
    FigureSpec(
        "tuning-optimism",
        "Tuning: best inner score against the outer test score",
        "One point per outer run. Points below the diagonal: the best inner score, a maximum over noisy "
        "estimates, overstated what the chosen configuration scored on the unseen test fold (Varma & Simon "
        "2006; Cawley & Talbot 2010).",
        tuning.optimism_figure,
        shown=tuning.has_tuning,
    ),
    FigureSpec(
        "tuning-curve",
        "Tuning curve",
        "Best inner score so far against trial number (thin: each outer run; thick: their mean). A curve still "
        "rising at the last trial: the budget was too small for this arm.",
        tuning.curve_figure,
        shown=tuning.has_tuning,
    ),
)


def draw(spec: FigureSpec, data: FigureData) -> dict[str, Any]:
    """``{id, title, caption, uri, note}`` of one figure."""
    try:
        uri, note = spec.make(data)
    except Exception as exc:  # one broken figure must not take the report down
        uri, note = None, f"Figure not drawn: {type(exc).__name__}: {first_line(exc)}"
    names = {"primary": data.analysis.settings.primary, "baseline": data.analysis.settings.baseline}
    return {
        "id": spec.id,
        "title": spec.title.format(**names),
        "caption": spec.caption.format(**names),
        "uri": uri,
        "note": note,
    }


def draw_all(data: FigureData, specs: tuple[FigureSpec, ...] = SPECS) -> list[dict[str, Any]]:
    """Every figure that applies to these results, in the page's order."""
    return [draw(spec, data) for spec in specs if spec.shown(data)]


def strata_figure(table: StrataTable, colors: dict[str, str]) -> str | None:
    """The stratum table's metric per stratum and arm, with CIs; None when nothing is defined."""
    points = table.figure_table()
    if not points:
        return None
    bounded = table.metric not in UNBOUNDED_METRICS
    return figures.strata_lines(points, table.strata, table.column, table.metric, colors, bounded=bounded)
