"""A study's outcome as a block of Markdown inside a hand-written page (e.g. ``docs/results.md``).

``write_markdown(analysis, page, command)`` writes, between two marker lines of ``page``, what the
store says: the question, the data, the command, the wall time, the forest plot (a PNG beside the
page), one row per arm with its frame- and video-level primary score and the difference from the
baseline with corrected intervals, the verdicts with their caveats, and each arm's training cost.
Everything outside the markers is the author's (the reading of the numbers, the limits) and is
kept as it is, so ``python -m harness report DIR --markdown PAGE`` regenerates the numbers of a page
without touching its prose; nothing in the block is ever typed by hand.

One page can hold the blocks of several studies, each between its own named markers
(``<!-- harness report: begin SUITE ...-->`` and ``<!-- harness report: end SUITE -->``, SUITE the
suite's name); a page with a single unnamed pair (the older form) takes any study's block. Beside
the page go the block's figures, named after the page and the suite: the forest plot
(``<stem>-<suite>-forest.png``) and the Grad-CAM maps of the baseline and of the best and the worst
arm (``<stem>-<suite>-gradcam.png``). The block also has one table per stratum column (severity,
BLUE point, ...) and, for a suite that tunes some arms, the tuned verdicts beside the untuned ones.

A page that exists without the markers for the study is refused (its text would otherwise be lost
or mixed up with generated text); a new page is created with the block alone.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.report import figures, manipulation, samples, tuning
from harness.report.analysis import Analysis, MetricSummary, Verdict
from harness.report.comparisons import Comparison
from harness.report.figure_specs import FigureData, forest_figure
from harness.report.inputs import Inputs
from harness.report.methods import backbones, reproduce_command
from harness.report.sensitivity import Sensitivity
from harness.report.strata import StrataTable
from harness.safe_write import Output, Recognise, check_outputs, either, png_software, write_all

BEGIN = "<!-- harness report: begin"
END = "<!-- harness report: end"
_MARKER = re.compile(r"<!-- harness report: (?P<kind>begin|end)(?: (?P<name>[A-Za-z0-9._-]+))?(?=[: ])[^\n]*?-->")


PAGE_SUFFIXES = (".md", ".markdown")


class MarkdownPageError(ValueError):
    """The page cannot take a generated block (one line: the file and what is accepted)."""


@dataclass(frozen=True)
class _Block:
    name: str | None  # the suite named in the markers; None for the older unnamed pair
    start: int
    stop: int


def write_markdown(analysis: Analysis, page: Path | str, command: str) -> tuple[Path, Path | None]:
    """Write the study's block into ``page`` and its figures beside it, all or none; (page, forest PNG or None).

    ``command`` is the command that regenerates the block (printed in its first line).
    Raises :class:`MarkdownPageError` when ``page`` cannot take the block, and
    :class:`harness.safe_write.OutputError` when a figure's file beside it is not one of ours.
    """
    page = Path(page)
    suite = _suite(analysis)
    check_outputs(figure_outputs(page, suite))
    files = markdown_files(analysis, page, command)
    write_all(files)
    forest = _figure_path(page, suite, "forest")
    return page, forest if forest in files else None


def markdown_files(analysis: Analysis, page: Path | str, command: str) -> dict[Path, str | bytes]:
    """The page with the study's block and the block's figures, ``{path: content}``, not yet written."""
    page = Path(page)
    suite = _suite(analysis)
    head, tail = _split(page, _read(page), suite)
    data = FigureData.of(analysis)
    files: dict[Path, str | bytes] = {}
    png = _figure_path(page, suite, "forest")
    uri, note = forest_figure(data)
    if uri is not None:
        files[png] = base64.b64decode(uri.partition(",")[2])
    cams = _figure_path(page, suite, "gradcam")
    cam_uri, cam_arms, cam_note = gradcam_extremes(analysis, data)
    if cam_uri is not None:
        files[cams] = base64.b64decode(cam_uri.partition(",")[2])
    block = render_block(analysis, command, png.name if uri is not None else None, note,
                         (cams.name, cam_arms) if cam_uri is not None else None, cam_note)
    files[page] = head + block + tail
    return files


def check_page(page: Path, suite: str) -> None:
    """Raise :class:`MarkdownPageError` now if ``page`` cannot take ``suite``'s block (before any work)."""
    if page.suffix.lower() not in PAGE_SUFFIXES:
        raise MarkdownPageError(f"--markdown {page}: not a {' or '.join(PAGE_SUFFIXES)} file; nothing was written; "
                                f"accepted: a Markdown page path ending in {' or '.join(PAGE_SUFFIXES)}")
    if page.is_dir():
        raise MarkdownPageError(f"--markdown {page}: a folder; accepted: a Markdown file path")
    _split(page, _read(page), suite)


def figure_outputs(page: Path, suite: str) -> list[Output]:
    """The page and its figures as destinations (:mod:`harness.safe_write`), the page checked first.

    A figure file beside the page is ours when it carries the report's PNG marker, or when the page's
    block of this suite shows it by name (figures written before the marker existed).
    """
    check_page(page, suite)
    text = _read(page)
    head, tail = _split(page, text, suite)
    block = text[len(head):len(text) - len(tail)] if text is not None else ""
    shown: Recognise = lambda path: f"({path.name})" in block  # noqa: E731 (a one-line test)
    ours = either(png_software(figures.FIGURE_SOFTWARE), shown)
    return [Output(page, "Markdown page", lambda path: True, "--markdown"),  # check_page has read it
            *(Output(_figure_path(page, suite, kind), f"{kind} figure of a Markdown page", ours, "beside --markdown")
              for kind in ("forest", "gradcam"))]


def _suite(analysis: Analysis) -> str:
    return str(analysis.inputs.suite_dict.get("name", ""))


def _figure_path(page: Path, suite: str, kind: str) -> Path:
    return page.with_name(f"{page.stem}-{suite}-{kind}.png")


def _read(page: Path) -> str | None:
    """The page's text, None for a new page; a page that is not UTF-8 text is refused in one line."""
    if not page.exists():
        return None
    try:
        return page.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise MarkdownPageError(f"--markdown {page}: not UTF-8 text (byte {err.start}); nothing was written; "
                                "accepted: a Markdown page (UTF-8), or a new file") from None
    except OSError as err:
        raise MarkdownPageError(f"--markdown {page}: cannot be read ({err.strerror or err}); accepted: a readable "
                                "Markdown page, or a new file") from None


def _blocks(page: Path, text: str) -> list[_Block]:
    """The marker pairs of a page, in order; a begin without its end (or the reverse) is refused."""
    out, open_at = [], None
    for m in _MARKER.finditer(text):
        if m.group("kind") == "begin":
            if open_at is not None:
                raise MarkdownPageError(f"{page}: a '{BEGIN}' line follows another without its '{END}' line; "
                                        "accepted: begin/end pairs, one per study")
            open_at = m
        else:
            if open_at is None or open_at.group("name") != m.group("name"):
                raise MarkdownPageError(f"{page}: an '{END}{' ' + m.group('name') if m.group('name') else ''} -->' "
                                        "line without its begin line; accepted: begin/end pairs of the same name")
            out.append(_Block(m.group("name"), open_at.start(), m.end()))
            open_at = None
    if open_at is not None:
        raise MarkdownPageError(f"{page}: a '{BEGIN}' line without its '{END}' line; accepted: begin/end pairs")
    return out


def _split(page: Path, text: str | None, suite: str) -> tuple[str, str]:
    """(text before the study's block, text after it) of an existing page; ("", "") for a new one."""
    if text is None:
        return "", ""
    blocks = _blocks(page, text)
    mine = [b for b in blocks if b.name == suite]
    if len(mine) > 1:
        raise MarkdownPageError(f"{page}: {len(mine)} blocks of suite {suite}; accepted: one per study")
    if not mine and len(blocks) == 1 and blocks[0].name is None:
        mine = blocks  # the older form: one unnamed pair takes the page's one study
    if not mine:
        raise MarkdownPageError(
            f"{page}: no block for suite {suite} (found {len(blocks)} marker pair(s)); accepted: a new file, or a "
            f"page with the lines '{BEGIN} {suite} -->' and '{END} {suite} -->' where the block goes")
    return text[:mine[0].start], text[mine[0].stop:]


def render_block(analysis: Analysis, command: str, forest_png: str | None, forest_note: str | None,
                 gradcam: tuple[str, list[str]] | None = None, gradcam_note: str | None = None) -> str:
    """The generated block, markers included."""
    inputs, st = analysis.inputs, analysis.settings
    suite = inputs.suite_dict
    name = suite.get("name", "")
    lines = [
        f"{BEGIN} {name}: generated by `{command}` from {inputs.store_path.name}; edits inside are overwritten -->",
        "",
        f"**Study** `{suite.get('name', '')}`: {' '.join(str(suite.get('description', '')).split())}",
        "",
        f"- **Data**: {inputs.meta.get('data_description', 'not recorded')}",
        *(f"- **Network**: {b.get('summary') or b['title']} Starting weights: {b['weights']}"
          for b in backbones(inputs.meta, suite)),
        f"- **Command**: `{reproduce_command(inputs)}`",
        f"- **Runs**: {_runs(analysis)}",
        f"- **Wall time**: {_wall_time(inputs)}",
        f"- **Code version** {analysis.code.describe(checkout=False)}; {_machine(inputs.meta)}",
        f"- **Primary metric** {st.primary} at the {st.primary_level} level (the other level is co-primary); "
        f"α = {st.alpha:g} with Holm's correction over arms; ROPE ±{st.rope:g}"
        + (f"; equivalence margin ±{st.margin:g} (stated before the run): each verdict is better, worse, equivalent "
           "within the margin (two one-sided corrected t-tests, Holm) or undecided" if st.margin is not None else ""),
    ]
    if analysis.chance is not None and analysis.chance.message:
        lines += ["", f"> **{analysis.chance.message}**"]
    lines += ["", "#### Difference from the baseline", ""]
    if forest_png:
        lines += [
            f"![Forest plot: each arm's {st.primary} minus the baseline's, mean and corrected 95 % interval, "
            f"frame and video level]({forest_png})",
            "",
            "Each arm's mean difference from the baseline over the paired runs with its 95 % interval (corrected "
            "resampled t, Nadeau & Bengio 2003); shaded: the ROPE; hatched: the noise-floor arm's interval.",
        ]
    else:
        lines.append(f"No forest plot: {forest_note or 'nothing to draw'}")
    lines += ["", *score_table(analysis), "", "#### Verdicts", "", *verdict_lines(analysis.verdicts)]
    if analysis.manipulation.rows:  # issue 26 §1: did each arm's diffusion act?
        lines += ["", "#### Manipulation check", "", *manipulation.markdown_table(analysis.manipulation)]
    if analysis.contrasts:
        lines += ["", "#### Contrasts between arms", "", *contrast_table(analysis)]
    for s in analysis.sensitivity:
        lines += ["", f"#### Verdicts without {s.rule.name}", "", *sensitivity_table(analysis, s)]
    searched = tuning.context(analysis)
    if searched:
        lines += ["", "#### Tuning: nested hyper-parameter search", "", *search_tables(searched)]
    if analysis.tuning_effect:
        lines += ["", "#### Does tuning change the verdict?", "", *tuning_table(analysis)]
    for table in analysis.strata:
        lines += ["", f"#### Per stratum: {table.column}", "", *strata_table(table)]
    lines += ["", "#### Grad-CAM", ""]
    if gradcam is not None:
        png, arms = gradcam
        lines += [f"![Grad-CAM maps of {', '.join(arms)} on the same test frames]({png})", "",
                  f"Rows: {', '.join(arms)} (the baseline, then the arms with the highest and the lowest mean "
                  f"{st.primary_level}-level difference); the regions whose activations raised the B-line score of "
                  "each arm's saved model (repeat 0, fold 0) on the same frames of its test fold."]
    else:
        lines.append(f"No Grad-CAM figure: {gradcam_note or 'no maps stored'}")
    lines += ["", "#### Cost", "", *cost_table(analysis), "", f"{END} {name} -->"]
    return "\n".join(lines)


def extremes(analysis: Analysis) -> list[str]:
    """The baseline, then the arms with the highest and the lowest mean difference at the primary level."""
    st = analysis.settings
    level = st.headline_levels[0]
    diffs = {c.arm: c.mean_difference for c in [*analysis.comparisons, *analysis.other_levels]
             if c.metric == st.primary and (c.level, c.aggregation) == level and _finite(c.mean_difference)}
    if not diffs:
        return [st.baseline]
    best, worst = max(diffs, key=diffs.get), min(diffs, key=diffs.get)
    return list(dict.fromkeys([st.baseline, best, worst]))


def gradcam_extremes(analysis: Analysis, data: FigureData) -> tuple[str | None, list[str], str | None]:
    """The Grad-CAM grid of :func:`extremes` (data URI or None, its arms, a note)."""
    frames = data.frames
    if not frames.ok:
        return None, [], frames.note
    result = samples.gradcams(analysis.inputs, frames)
    arms = [a for a in extremes(analysis) if a in result.cams and any(m is not None for m in result.cams[a])]
    if not arms:
        return None, [], result.note or "no Grad-CAM maps stored"
    return figures.gradcam_grid(frames.raw, {a: result.cams[a] for a in arms}, frames.titles), arms, result.note


def strata_table(table: StrataTable) -> list[str]:
    """One row per stratum: its size and B-line rate, and each arm's score with its bounded 95 % interval."""
    if table.note:
        return [f"Not stratified: {table.note}"]
    head = ["stratum", "test frames per fold", "B-line rate", *[f"`{a}`" for a in table.arms]]
    rows = [f"{table.metric} per stratum (mean over runs [bounded 95 % interval]); frame level.", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in table.pivot:
        cells = [str(p["stratum"]), f"{p['n']:.0f}" if _finite(p["n"]) else "–",
                 f"{p['positive_rate']:.2f}" if _finite(p["positive_rate"]) else "–"]
        for c in p["cells"]:
            mean, ci = c.get("mean"), c.get("ci95")
            if mean is None or not _finite(mean):
                cells.append("–")
            elif ci and all(_finite(x) for x in ci):
                cells.append(f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
            else:
                cells.append(f"{mean:.3f}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def score_table(analysis: Analysis) -> list[str]:
    """One row per arm: runs, the primary metric at both headline levels, and the difference from the baseline."""
    st = analysis.settings
    levels = [lv for lv in st.headline_levels if lv in analysis.inputs.levels]
    comps = {(c.arm, c.level): c for c in [*analysis.comparisons, *analysis.other_levels]
             if c.metric == st.primary and (c.level, c.aggregation) in levels}
    head = ["arm", "runs (done / planned)"]
    for level, _ in levels:
        head += [f"{level} {st.primary} (95 % CI)", f"{level} Δ vs {st.baseline} (95 % CI), p Holm"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in analysis.arms:
        counts = analysis.run_counts.get(arm)
        cells = [f"`{arm}`", f"{counts.done} / {counts.planned}" if counts else "0 / ?"]
        for level, agg in levels:
            summary = analysis.arm_summaries.get(arm)
            metric = summary.levels.get(f"{level}/{agg}", {}).get(st.primary) if summary else None
            cells += [_score(metric), "baseline" if arm == st.baseline else _difference(comps.get((arm, level)))]
        rows.append("| " + " | ".join(cells) + " |")
    rows += ["", "Scores: mean over the runs with the interval the report shows (95 % corrected t interval of the "
             "mean, Nadeau-Bengio variance, cut to the metric's range; * where the cut applied)."]
    return rows


def verdict_lines(verdicts: Sequence[Verdict]) -> list[str]:
    out = []
    for v in verdicts:
        line = f"- **{v.arm}** ({v.level} level): {v.text}"
        if v.co_primary:
            line += f" — at the {v.co_primary.get('level')} level: {v.co_primary.get('text')}"
        out.append(line)
        out += [f"  - {c}" for c in v.caveats]
    return out or ["- no arm besides the baseline"]


def contrast_table(analysis: Analysis) -> list[str]:
    """One row per named pair and level: the difference first − second and its verdict (report.contrasts)."""
    st = analysis.settings
    rows = [f"The first arm minus the second on {st.primary}, paired by (repeat, fold), the same tests as against the "
            "baseline; Holm within the contrasts of one level.", "",
            "| first | second | level | Δ (95 % CI), p Holm | verdict |", "|---|---|---|---|---|"]
    for x in analysis.contrasts:
        rows.append(f"| `{x.first}` | `{x.second}` | {x.level} | {_difference(x.comparison)} | {x.text} |")
    return rows


def sensitivity_table(analysis: Analysis, s: Sensitivity) -> list[str]:
    """Each arm's verdict with all the test samples and without the rule's (report.sensitivity)."""
    st = analysis.settings
    rows = [f"Left out: the {s.n_excluded} of {s.n_samples} test samples with {s.rule.describe()}"
            f"{' (' + s.rule.description + ')' if s.rule.description else ''}; every run's {s.level}-level {s.metric} "
            "recomputed from the stored predictions on the samples kept (nothing retrained), each arm compared with "
            f"`{st.baseline}` again.", "",
            f"| arm | all samples: Δ vs {st.baseline} | verdict | without {s.rule.name}: Δ | verdict | changed |",
            "|---|---|---|---|---|---|"]
    for r in s.rows:
        rows.append(f"| `{r.arm}` | {_difference(r.full.comparison)} | {r.full.headline} | "
                    f"{_difference(r.without.comparison)} | {r.without.headline} | {'yes' if r.changed else 'no'} |")
    rows += [f"- {n}" for n in s.notes]
    return rows


def cost_table(analysis: Analysis) -> list[str]:
    """Training seconds per run and inference milliseconds per image, mean over runs, ratio to the baseline."""
    cost, base = analysis.cost, analysis.settings.baseline
    rows = ["| arm | preprocessing (s) | training (s / run) | inference (ms / image) |", "|---|---|---|---|"]
    for arm in analysis.ran:
        cells = [f"`{arm}`"]
        for key, digits in (("preprocessing_seconds", 1), ("train_seconds", 0), ("inference_ms_per_image", 2)):
            v, b = cost.get(key, {}).get(arm, math.nan), cost.get(key, {}).get(base, math.nan)
            ratio = f" (×{v / b:.2f})" if arm != base and _finite(v) and _finite(b) and b > 0 else ""
            cells.append(f"{v:.{digits}f}{ratio}" if _finite(v) else "–")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def search_tables(blocks: list[dict]) -> list[str]:
    """Per tuned arm (:func:`harness.report.tuning.context`): the budget and its time, then the
    configuration each outer run chose, its best inner score and its outer test score."""
    rows = ["In each outer run an Optuna study searched on inner, patient-grouped folds of that run's training "
            "part only (trial 0: the suite's own configuration); the chosen configuration was trained on the whole "
            "training part and scored once on the outer test fold. Optimism: best inner minus outer score."]
    for t in blocks:
        leak = f"**{t['leak']}**" if t["leak"] else "none (checked in every trial)"
        minutes = float(t["seconds"]) / 60.0
        rows += ["", f"`{t['arm']}`: {t['budget']}; tuning time {minutes:.0f} min in all; the suite's own "
                     f"configuration kept in {t['kept_own']} of {t['n_runs']} runs; mean optimism {t['optimism']}; "
                     f"test-fold patients or frames that reached a trial: {leak}.", ""]
        head = ["run", *[f"`{k}`" for k in t["names"]], f"best inner {t['metric']}", f"outer test {t['metric']}",
                "optimism", "trials (pruned)", "seconds"]
        rows += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                 "| *suite's own* | " + " | ".join(f"*{v}*" for v in t["own"]) + " |" + " |" * (len(head) - 1 - len(t["own"]))]
        for r in t["rows"]:
            rows.append(f"| {r['run']}{' (own)' if r['own'] else ''} | " + " | ".join(r["values"])
                        + f" | {r['inner']} | {r['outer']} | {r['optimism']} | {r['trials']} | {r['seconds']} |")
    return rows


def tuning_table(analysis: Analysis) -> list[str]:
    """Each tuned arm's verdict untuned and tuned, each against the baseline of its own family."""
    st = analysis.settings
    rows = [f"Each arm against the baseline trained the same way: untuned against the untuned baseline, tuned "
            f"(nested search on inner folds of each training part) against the tuned baseline; {st.primary} at the "
            f"{st.primary_level} level, mean difference [corrected 95 % interval], Holm p.", "",
            "| arm | untuned: Δ vs baseline | untuned verdict | tuned: Δ vs tuned baseline | tuned verdict | "
            "verdict changed |", "|---|---|---|---|---|---|"]
    for e in analysis.tuning_effect:
        rows.append(f"| `{e.arm}` | {_difference(e.untuned.comparison)} | {e.untuned.headline} | "
                    f"{_difference(e.tuned.comparison)} | {e.tuned.headline} | {'yes' if e.changed else 'no'} |")
    return rows


def _score(m: MetricSummary | None) -> str:
    if m is None or not _finite(m.mean):
        return "–"
    ci = m.ci95_bounded or m.ci95
    mark = "*" if m.ci95_clipped else ""
    return f"{m.mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]{mark}" if ci and all(_finite(x) for x in ci) else f"{m.mean:.3f}"


def _difference(c: Comparison | None) -> str:
    if c is None or not _finite(c.mean_difference):
        return "not compared"
    p = c.tests.get("corrected_t", {}).get("p_holm")
    ci = c.ci95 or [math.nan, math.nan]
    ptxt = f", p = {p:.3f}" if p is not None and _finite(p) else ""
    return f"{c.mean_difference:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]{ptxt}"


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _runs(analysis: Analysis) -> str:
    """Every run of the suite: the arms' own and, where the suite has one, the other variant family's
    (``<arm>~untuned`` / ``<arm>~tuned``), which the tables below show apart."""
    counts = [*analysis.run_counts.values(), *(analysis.variant.run_counts.values() if analysis.variant else [])]
    done, planned = sum(c.done for c in counts), sum(c.planned for c in counts)
    failed = sum(c.failed for c in counts)
    ev = analysis.inputs.suite_dict.get("evaluation", {}) or {}
    shape = f"{len(analysis.arms)} arms × {ev.get('folds', '?')} patient-grouped folds × {ev.get('repeats', 1)} repeat(s)"
    if analysis.variant is not None:
        family = analysis.variant.inputs.family
        shape += f", each arm also run as `<arm>~{family}`: {len(analysis.arms) + len(analysis.variant.arms)} arms"
    return f"{done} of {planned} done, {failed} failed ({shape})"


def _wall_time(inputs: Inputs) -> str:
    """From the first run's start to the last run's end (an interrupted and resumed study includes the gap)."""
    runs = inputs.done
    if not len(runs) or runs["started_at"].isna().all() or runs["finished_at"].isna().all():
        return "not recorded"
    start, end = float(runs["started_at"].min()), float(runs["finished_at"].max())
    minutes = (end - start) / 60.0
    when = _dt.datetime.fromtimestamp(start, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{int(minutes // 60)} h {minutes % 60:02.0f} min (first run started {when} → last run finished)"


def _machine(meta: dict[str, object]) -> str:
    env = meta.get("environment") or {}
    if not isinstance(env, dict):
        return "machine not recorded"
    parts = [str(env.get("cpu", "?")), f"{env.get('cpu_count', '?')} cores"]
    parts.append("CUDA" if env.get("cuda") else "no GPU")
    packages = env.get("packages") or {}
    if "torch" in packages:
        parts.append(f"torch {packages['torch']}")
    return "machine: " + ", ".join(parts)


