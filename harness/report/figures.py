"""Figures of the report, drawn with matplotlib (Agg) and returned as ``data:`` URIs.

Every function takes plain arrays / mappings (never the store), draws one figure and returns
``"data:image/png;base64,..."`` so the HTML stays self-contained.  Arms are always drawn in
the order given, with one colour per arm shared by all figures (``arm_colors``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

DPI = 110
FIGURE_SOFTWARE = "harness.report"
# Read-only: every figure draws with the same style.
_STYLE = MappingProxyType(
    {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
    }
)


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """One colour per arm, stable for a given arm order (tab10, then tab20)."""
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("tab20").colors)
    return {arm: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, arm in enumerate(arms)}


def to_data_uri(fig: Figure) -> str:
    """Render a figure to a base64 PNG ``data:`` URI and close it."""
    buf = io.BytesIO()
    # The Software chunk names this package (not matplotlib's version, so the bytes stay the same across
    # versions) and is how a figure file of ours is recognised before it is replaced (harness.safe_write).
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": FIGURE_SOFTWARE})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw):
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
    return fig, axes


def _image_grid(
    arms: Sequence[str],
    ncols: int,
    column_titles: Sequence[str],
    draw_cell: Callable[[Any, str, int], None],
) -> str:
    """Grid of frames without axes: one row per arm (labelled on the left), ``ncols`` columns
    (titled on top); ``draw_cell(ax, arm, j)`` draws the content of row ``arm``, column ``j``."""
    fig, axes = _figure(1.55 * ncols + 1.2, 1.55 * len(arms) + 0.3, len(arms), ncols)
    for i, arm in enumerate(arms):
        for j in range(ncols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            draw_cell(ax, arm, j)
            if i == 0:
                ax.set_title(column_titles[j], fontsize=8)
            if j == 0:
                ax.set_ylabel(arm, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.04, hspace=0.08)
    return to_data_uri(fig)


def sample_frames(
    frames: Mapping[str, Sequence[np.ndarray]],
    column_titles: Sequence[str],
) -> str:
    """Grid of the same frames (columns) after each arm's preprocessing (rows).

    ``frames[arm][j]`` is the j-th frame (H, W), any float or integer range; every image is
    shown with its own min-max contrast so that smoothing, not brightness, is what differs.
    """

    def cell(ax: Any, arm: str, j: int) -> None:
        if j < len(frames[arm]):
            ax.imshow(np.asarray(frames[arm][j], dtype=np.float32), cmap="gray", interpolation="nearest")

    return _image_grid(list(frames), max(len(column_titles), 1), column_titles, cell)


def mean_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertical average of ROC curves: mean and s.d. of TPR at each FPR of ``grid``.

    ``curves`` holds ``(fpr, tpr)`` pairs as returned by ``sklearn.metrics.roc_curve``
    (fpr non-decreasing).  Folds are averaged, never pooled: their scores come from
    different models and are not on one scale.
    """
    tprs = []
    for fpr, tpr in curves:
        interp = np.interp(grid, fpr, tpr)
        interp[0] = 0.0
        tprs.append(interp)
    stack = np.vstack(tprs)
    mean = stack.mean(axis=0)
    mean[-1] = 1.0
    return mean, stack.std(axis=0)


def roc_curves(
    folds: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    colors: Mapping[str, str],
) -> str:
    """One panel per arm: each test fold's ROC curve (thin) and their vertical average (thick).

    ``folds[arm]`` is a list of ``(labels, probabilities)`` pairs, one per run; folds with a
    single class have no ROC curve and are left out.
    """
    arms = list(folds)
    ncols = min(len(arms), 4)
    nrows = int(np.ceil(len(arms) / ncols))
    fig, axes = _figure(2.7 * ncols, 2.7 * nrows, nrows, ncols, sharex=True, sharey=True)
    grid = np.linspace(0.0, 1.0, 201)
    for k, arm in enumerate(arms):
        ax = axes[k // ncols][k % ncols]
        curves = []
        for y, p in folds[arm]:
            y = np.asarray(y)
            if len(np.unique(y)) < 2:
                continue
            fpr, tpr, _ = roc_curve(y, np.asarray(p, dtype=np.float64))
            curves.append((fpr, tpr))
            ax.plot(fpr, tpr, color=colors[arm], alpha=0.25, lw=0.8)
        if curves:
            mean, sd = mean_roc(curves, grid)
            ax.fill_between(
                grid, np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1), color=colors[arm], alpha=0.15, lw=0
            )
            ax.plot(grid, mean, color=colors[arm], lw=2.0, label=f"mean of {len(curves)} folds")
            ax.legend(loc="lower right", fontsize=7, frameon=False)
        ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=0.8)
        ax.set_title(arm)
        ax.set_aspect("equal")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if k % ncols == 0:
            ax.set_ylabel("true positive rate")
        if k // ncols == nrows - 1:
            ax.set_xlabel("false positive rate")
    for k in range(len(arms), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.tight_layout()
    return to_data_uri(fig)


def paired_scores(
    scores: Mapping[str, Mapping[tuple[int, int], float]],
    baseline: str,
    metric: str,
    colors: Mapping[str, str],
) -> str:
    """Per-run scores of each arm next to the baseline, one line per (repeat, fold) pair.

    ``scores[arm][(repeat, fold)] = value``.  A line going up means the arm beat the baseline
    on that very split; only pairs present in both arms are drawn.
    """
    others = [a for a in scores if a != baseline]
    ncols = min(max(len(others), 1), 5)
    nrows = int(np.ceil(max(len(others), 1) / ncols))
    fig, axes = _figure(1.9 * ncols + 0.6, 3.0 * nrows, nrows, ncols, sharey=True)
    base = scores.get(baseline, {})
    for k, arm in enumerate(others):
        ax = axes[k // ncols][k % ncols]
        keys = sorted(set(base) & set(scores[arm]))
        ups = 0
        for key in keys:
            b, a = base[key], scores[arm][key]
            ups += a > b
            ax.plot([0, 1], [b, a], color=colors[arm] if a > b else "0.55", alpha=0.8, lw=1.0, marker="o", ms=3)
        if keys:
            means = [np.mean([base[k2] for k2 in keys]), np.mean([scores[arm][k2] for k2 in keys])]
            ax.plot([0, 1], means, color="black", lw=2.2, marker="D", ms=5, label="mean")
        ax.set_xticks([0, 1], [baseline, arm], rotation=20, ha="right")
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"{arm}\n{ups}/{len(keys)} runs higher", fontsize=9)
        if k % ncols == 0:
            ax.set_ylabel(metric)
    for k in range(len(others), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.tight_layout()
    return to_data_uri(fig)


def cd_cliques(ranks: Mapping[str, float], cd: float) -> list[list[str]]:
    """Maximal groups of arms whose mean ranks differ by less than ``cd`` (Demšar 2006).

    Arms are sorted by rank; a clique is a run of consecutive arms whose rank span is below
    the critical difference, and cliques contained in another one are dropped.
    """
    order = sorted(ranks, key=lambda a: ranks[a])
    spans = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and ranks[order[j + 1]] - ranks[order[i]] < cd:
            j += 1
        if j > i:
            spans.append((i, j))
    maximal = [s for s in spans if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans)]
    return [order[i : j + 1] for i, j in maximal]


def critical_difference(ranks: Mapping[str, float], cd: float, title: str = "") -> str:
    """Critical-difference diagram: mean ranks on an axis, the CD bar, and cliques as thick bars.

    Rank 1 is the best arm (drawn on the left).  Arms joined by a bar are not significantly
    different by the Nemenyi post-hoc test at the report's alpha.
    """
    k = len(ranks)
    order = sorted(ranks, key=lambda a: ranks[a])
    half = int(np.ceil(k / 2))
    cliques = cd_cliques(ranks, cd) if np.isfinite(cd) else []
    height = 1.3 + 0.28 * max(half, 1) + 0.18 * len(cliques)
    fig, axes = _figure(7.0, height)
    ax = axes[0][0]
    ax.set_axis_off()
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 0.9, hi + 0.9)
    ax.set_ylim(-(half + 1) * 0.28 - 0.2 - 0.18 * len(cliques), 0.9)
    ax.hlines(0, lo, hi, color="black", lw=1.0)
    for r in range(lo, hi + 1):
        ax.vlines(r, 0, 0.08, color="black", lw=1.0)
        ax.text(r, 0.13, str(r), ha="center", va="bottom", fontsize=8)
    if np.isfinite(cd) and cd > 0:
        end = min(lo + cd, hi + 0.8)
        ax.hlines(0.55, lo, end, color="black", lw=2.0)
        ax.vlines([lo, end], 0.5, 0.6, color="black", lw=1.0)
        ax.text((lo + end) / 2, 0.62, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    cy = -0.12
    for clique in cliques:
        ax.hlines(cy, ranks[clique[0]] - 0.03, ranks[clique[-1]] + 0.03, color="black", lw=3.0)
        cy -= 0.18
    top = cy
    for i, arm in enumerate(order):
        r = ranks[arm]
        left = i < half
        row = i if left else k - 1 - i
        y = top - 0.1 - 0.28 * row
        ax.vlines(r, y, 0, color="0.3", lw=0.8)
        x_text = lo - 0.15 if left else hi + 0.15
        ax.hlines(y, min(r, x_text), max(r, x_text), color="0.3", lw=0.8)
        ax.text(
            x_text - 0.05 if left else x_text + 0.05,
            y,
            f"{arm} ({r:.2f})",
            ha="right" if left else "left",
            va="center",
            fontsize=8.5,
        )
    if title:
        ax.set_title(title, fontsize=9)
    return to_data_uri(fig)


def timing_bars(
    timing: Mapping[str, Mapping[str, float]],
    baseline: str,
    colors: Mapping[str, str],
    labels: Mapping[str, str],
) -> str:
    """One panel per cost (e.g. preprocessing s, training s, inference ms/image), bars per arm.

    ``timing[quantity][arm] = value`` (NaN or missing = not recorded); each bar is annotated
    with its ratio to the baseline's value for that quantity.
    """
    quantities = list(timing)
    fig, axes = _figure(3.0 * max(len(quantities), 1), 2.8, 1, max(len(quantities), 1))
    for q, quantity in enumerate(quantities):
        ax = axes[0][q]
        arms = list(timing[quantity])
        values = np.array([timing[quantity][a] for a in arms], dtype=np.float64)
        ys = np.arange(len(arms))[::-1]
        ax.barh(ys, np.nan_to_num(values), color=[colors.get(a, "0.5") for a in arms])
        ax.set_yticks(ys, arms if q == 0 else [""] * len(arms))
        base = timing[quantity].get(baseline, np.nan)
        vmax = np.nanmax(values) if np.isfinite(values).any() else 1.0
        for y, v in zip(ys, values):
            if not np.isfinite(v):
                ax.text(0, y, " not recorded", va="center", fontsize=7, color="0.4")
                continue
            ratio = f"  ×{v / base:.2f}" if np.isfinite(base) and base > 0 else ""
            ax.text(v, y, f" {v:.3g}{ratio}", va="center", fontsize=7)
        ax.set_xlim(0, vmax * 1.55 if vmax > 0 else 1)
        ax.set_title(labels.get(quantity, quantity))
    fig.tight_layout()
    return to_data_uri(fig)


def _plain_axis(ax: Any) -> None:
    """No "1e-5 + 0.1" offset labels: parameters are read as plain numbers."""
    for axis in (ax.xaxis, ax.yaxis):
        fmt = axis.get_major_formatter()
        if isinstance(fmt, matplotlib.ticker.ScalarFormatter):
            fmt.set_useOffset(False)


def learned_parameters(
    final: Mapping[str, Mapping[str, np.ndarray]],
    trajectories: Mapping[str, Mapping[str, np.ndarray]],
    colors: Mapping[str, str],
    initial: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """What the learnable arms learned: distribution at the end and trajectory per epoch.

    ``final[arm][param]`` is the flat array of that parameter's values at the end of training,
    pooled over runs (e.g. the 32 kappas of the stem x runs); ``trajectories[arm][param]`` is an
    (epochs, runs) array of the parameter's mean per epoch; ``initial[arm][param]`` the mean
    initial value, drawn as a dashed reference line.  One row per parameter name; the
    trajectory column is left out when no run has more than one epoch.
    """
    names = sorted({p for arm in final for p in final[arm]} | {p for arm in trajectories for p in trajectories[arm]})
    with_traj = any(np.shape(t)[0] > 1 for arm in trajectories for t in trajectories[arm].values())
    ncols = 2 if with_traj else 1
    fig, axes = _figure(4.0 * ncols, 2.3 * max(len(names), 1), max(len(names), 1), ncols)
    for i, name in enumerate(names):
        _final_values(axes[i][0], final, name, colors)
        if with_traj:
            _trajectory(axes[i][1], trajectories, name, colors, initial or {})
    fig.tight_layout()
    return to_data_uri(fig)


def _final_values(ax: Any, final: Mapping[str, Mapping[str, np.ndarray]], name: str, colors: Mapping[str, str]) -> None:
    """Histogram per arm of one parameter's values at the end of training."""
    for arm in final:
        vals = np.asarray(final[arm].get(name, []), dtype=np.float64).ravel()
        vals = vals[np.isfinite(vals)]
        if not vals.size:
            continue
        lo, hi = float(vals.min()), float(vals.max())
        # A parameter that did not move would get a zero-width histogram: widen its range a little.
        pad = max(0.05 * abs(lo + hi) / 2, 1e-6) if hi - lo < 1e-3 * max(abs(lo), abs(hi), 1e-9) else 0.0
        bins = min(30, max(5, vals.size // 3))
        ax.hist(
            vals, bins=bins, range=(lo - pad, hi + pad), alpha=0.55, color=colors.get(arm, "0.5"),
            label=f"{arm} (n={vals.size})",
        )
    ax.set_title(f"{name}: values at the end of training")
    ax.set_ylabel("count")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    _plain_axis(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)


def _trajectory(
    ax: Any, trajectories: Mapping[str, Mapping[str, np.ndarray]], name: str, colors: Mapping[str, str],
    initial: Mapping[str, Mapping[str, float]],
) -> None:
    """One parameter's mean per epoch: thin lines per run, a thick one for their mean, dashed: initial."""
    for arm in trajectories:
        start = initial.get(arm, {}).get(name)
        if start is not None and np.isfinite(start):
            ax.axhline(start, color=colors.get(arm, "0.5"), ls="--", lw=0.9, alpha=0.8)
        traj = trajectories[arm].get(name)
        if traj is None or np.size(traj) == 0:
            continue
        traj = np.asarray(traj, dtype=np.float64).reshape(len(traj), -1)
        epochs = np.arange(1, traj.shape[0] + 1)
        for col in traj.T:
            ax.plot(epochs, col, color=colors.get(arm, "0.5"), alpha=0.35, lw=0.8)
        ax.plot(epochs, np.nanmean(traj, axis=1), color=colors.get(arm, "0.5"), lw=2.0, label=arm)
    ax.set_title(f"{name}: mean per epoch")
    ax.set_xlabel("epoch")
    _plain_axis(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, frameon=False)
        return
    ax.text(
        0.5, 0.5, "not recorded per epoch", transform=ax.transAxes, ha="center", va="center", color="0.4", fontsize=8
    )
    ax.set_xticks([])
    ax.set_yticks([])


def gradcam_grid(
    images: Sequence[np.ndarray],
    cams: Mapping[str, Sequence[np.ndarray | None]],
    column_titles: Sequence[str],
) -> str:
    """Grad-CAM heat maps (jet, 45 % opacity) over the arm's input frames; rows = arms.

    ``images`` are the raw frames; ``cams[arm][j]`` is the (H, W) map in [0, 1] of frame j
    (None where it could not be computed: the cell says so).
    """

    def cell(ax: Any, arm: str, j: int) -> None:
        ax.imshow(np.asarray(images[j], dtype=np.float32), cmap="gray", interpolation="nearest")
        cam = cams[arm][j] if j < len(cams[arm]) else None
        if cam is None:
            ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center", color="white")
        elif not np.any(np.asarray(cam) > 0):
            # Grad-CAM keeps the positive part of the gradient-weighted activations: an all-zero
            # map means no region of the explained layer raises the B-line score, a property of
            # the network on this frame (not a drawing failure).
            ax.text(0.5, 0.5, "no positive\nevidence", transform=ax.transAxes, ha="center", va="center",
                    color="yellow", fontsize=7)
        else:
            ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")

    return _image_grid(list(cams), max(len(images), 1), column_titles, cell)


def strata_lines(
    table: Mapping[str, Mapping[str, tuple[float, float, float]]],
    strata: Sequence[str],
    column: str,
    metric: str,
    colors: Mapping[str, str],
    bounded: bool = True,
) -> str:
    """Metric per stratum of one metadata column: mean over runs and 95 % CI, one series per arm.

    ``table[arm][stratum] = (mean, ci_low, ci_high)``; NaN where the stratum had no computable
    score (e.g. one class only for ROC-AUC).  ``bounded`` metrics (scores in [0, 1]) have their
    interval drawn clipped to that range (a t-interval over few runs can leave it).
    """
    arms = list(table)
    ncols = min(len(arms), 5)
    width = min(11.0, max(1.3 * ncols + 1.0, (0.3 + 0.12 * len(arms)) * len(strata) + 1.5))
    fig, axes = _figure(width, 3.0 + 0.18 * ((len(arms) - 1) // ncols))
    ax = axes[0][0]
    width = 0.8 / max(len(arms), 1)
    x = np.arange(len(strata))
    for k, arm in enumerate(arms):
        vals = np.array([table[arm].get(s, (np.nan,) * 3) for s in strata], dtype=np.float64).reshape(len(strata), 3)
        if bounded:
            vals[:, 1:] = np.clip(vals[:, 1:], 0.0, 1.0)
        pos = x - 0.4 + width * (k + 0.5)
        yerr = np.vstack([vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]])
        yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
        ax.errorbar(pos, vals[:, 0], yerr=yerr, fmt="o", color=colors.get(arm, "0.5"), ms=4, capsize=2, lw=1, label=arm)
    ax.set_xticks(x, [str(s) for s in strata], rotation=20 if len(strata) > 4 else 0)
    ax.set_xlabel(column)
    ax.set_ylabel(metric)
    if bounded:
        ax.set_ylim(-0.02, 1.02)
    # Legend above the axes so it never hides a point.
    ax.legend(fontsize=7, frameon=False, ncols=ncols, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return to_data_uri(fig)


def training_curves(curves: Mapping[str, Sequence[Any]], colors: Mapping[str, str]) -> str:
    """Did each run train? Per arm (rows): training loss, validation loss and validation ROC-AUC
    per epoch (columns), one thin line per run. The dashed line is the loss of the best constant
    prediction (chance); runs diagnosed "did not fit" or "diverged" are drawn in red, dashed;
    a dot marks each run's selected epoch.

    ``curves[arm]`` holds ``harness.report.curves.RunCurve`` objects.
    """
    arms = [a for a in curves if curves[a]]
    fig, axes = _figure(10.5, 1.9 * max(len(arms), 1) + 0.4, max(len(arms), 1), 3, sharex=False)
    titles = ("training loss", "validation loss", "validation ROC-AUC")
    for i, arm in enumerate(arms):
        for j, field_name in enumerate(("train_loss", "val_loss", "val_auc")):
            ax = axes[i][j]
            for c in curves[arm]:
                bad = c.status in ("did_not_fit", "diverged")
                y = getattr(c, field_name)
                ax.plot(c.epochs, y, color="#d62728" if bad else colors.get(arm, "0.4"),
                        ls="--" if bad else "-", lw=0.9, alpha=0.8)
                if c.best_epoch is not None and 0 < c.best_epoch <= len(y):
                    ax.plot([c.best_epoch], [y[c.best_epoch - 1]], "o", ms=2.5, color="k")
            chances = [c.chance_loss for c in curves[arm] if c.chance_loss is not None]
            if field_name == "train_loss" and chances:
                ax.axhline(float(np.median(chances)), color="0.3", ls=":", lw=1.0)
            if field_name == "val_loss":
                ax.set_yscale("log")  # diverging runs reach hundreds
            if field_name == "val_auc":
                ax.axhline(0.5, color="0.3", ls=":", lw=1.0)
                ax.set_ylim(0, 1)
            if i == 0:
                ax.set_title(titles[j])
            if j == 0:
                ax.set_ylabel(arm, rotation=0, ha="right", va="center")
            if i == len(arms) - 1:
                ax.set_xlabel("epoch")
    fig.tight_layout()
    return to_data_uri(fig)


def parameter_drift(
    drift: Mapping[str, Mapping[str, np.ndarray]],
    initial: Mapping[str, Mapping[str, np.ndarray]],
) -> str:
    """How far each learnable arm's diffusion parameters moved from their initial values.

    ``drift[arm][param]``: (runs, channels) array of final minus initial value;
    ``initial[arm][param]``: (channels,) initial values. One row per (arm, parameter): a heat map
    of the change per channel and run, in units of the parameter, with the mean relative change
    in the title.
    """
    rows = [(arm, name) for arm in drift for name in drift[arm]]
    fig, axes = _figure(8.0, 1.25 * max(len(rows), 1) + 0.5, max(len(rows), 1), 1)
    for i, (arm, name) in enumerate(rows):
        ax = axes[i][0]
        d = np.atleast_2d(np.asarray(drift[arm][name], dtype=np.float64))
        lim = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
        im = ax.imshow(d, aspect="auto", cmap="coolwarm", vmin=-lim or -1, vmax=lim or 1, interpolation="nearest")
        init = np.asarray(initial.get(arm, {}).get(name, []), dtype=np.float64)
        rel = (float(np.nanmean(np.abs(d) / np.maximum(np.abs(init), 1e-12))) if init.size == d.shape[1]
               else float("nan"))
        ax.set_title(f"{arm} · {name}: final − initial (mean |relative change| {rel:.1%})", fontsize=8)
        ax.set_ylabel("run")
        ax.set_yticks(range(d.shape[0]))
        fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    axes[-1][0].set_xlabel("channel")
    fig.tight_layout()
    return to_data_uri(fig)


def forest_plot(
    rows: Sequence[Mapping[str, Any]],
    panels: Sequence[str],
    metric: str,
    rope: float,
    colors: Mapping[str, str],
    noise_floor: Mapping[str, Sequence[float]] | None = None,
    noise_arm: str | None = None,
) -> str:
    """Every arm's mean difference from the baseline with its corrected 95 % interval, one panel per level.

    ``rows``: ``{"arm", <panel>: (mean, lo, hi) or None}`` in the order to draw (top first);
    ``panels``: level names (e.g. ``["frame", "video"]``); a shaded band is the ROPE ``±rope``, a
    hatched band the noise-floor arm's interval (``noise_floor[panel] = (lo, hi)``), the dashed line 0.
    """
    n = max(len(rows), 1)
    fig, axes = _figure(3.4 * len(panels) + 1.4, 0.42 * n + 1.1, 1, len(panels), sharey=True)
    ys = np.arange(n)[::-1]
    for ax, panel in zip(axes[0], panels):
        ax.axvspan(-rope, rope, color="#cfe3cf", alpha=0.7, lw=0, label=f"ROPE ±{rope:g}")
        band = (noise_floor or {}).get(panel)
        if band is not None and all(np.isfinite(band)):
            ax.axvspan(band[0], band[1], facecolor="none", edgecolor="#777777", hatch="///", lw=0,
                       label=f"noise floor ({noise_arm})")
        ax.axvline(0.0, color="black", lw=0.8, ls="--")
        for y, row in zip(ys, rows):
            value = row.get(panel)
            if value is None or not np.isfinite(value[0]):
                ax.text(0.0, y, "not estimable", ha="center", va="center", fontsize=7, color="#777777")
                continue
            mean, lo, hi = value
            color = "#555555" if row["arm"] == noise_arm else colors.get(row["arm"], "C0")
            ax.plot([lo, hi], [y, y], color=color, lw=2)
            ax.plot([mean], [y], "o" if row["arm"] != noise_arm else "D", color=color, ms=5)
        ax.set_title(f"{panel} level")
        ax.set_xlabel(f"{metric}: arm − baseline")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, fontsize=7, frameon=False)
    axes[0][0].set_yticks(ys)
    axes[0][0].set_yticklabels([r["arm"] for r in rows] or [""])
    return to_data_uri(fig)


# --------------------------------------------------------------------------- tuning (harness.report.tuning)


def tuning_strip(values: Mapping[str, Mapping[str, Sequence[Any]]], own: Mapping[str, Mapping[str, Any]],
                 colors: Mapping[str, str]) -> str:
    """One panel per tuned parameter: the value each outer run chose, per arm (jittered points), and
    the suite's own value (black bar): how stable the choice is across runs."""
    keys = list(values)
    fig, axes = _figure(min(3.2 * len(keys), 12.8), 2.8, 1, len(keys))
    rng = np.random.default_rng(0)
    for ax, key in zip(axes[0], keys, strict=True):
        arms = list(values[key])
        categorical = any(isinstance(v, (str, bool)) for a in arms for v in values[key][a])
        cats = sorted({str(v) for a in arms for v in values[key][a]}) if categorical else []
        for i, arm in enumerate(arms):
            ys = [cats.index(str(v)) if categorical else float(v) for v in values[key][arm]]
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(ys)), ys, s=22, color=colors.get(arm), alpha=0.8, zorder=3)
            mine = own.get(key, {}).get(arm)
            if mine is not None:
                y = cats.index(str(mine)) if categorical and str(mine) in cats else (None if categorical else mine)
                if y is not None:
                    ax.plot([i - 0.3, i + 0.3], [y, y], color="black", lw=1.5, zorder=2)
        positive = not categorical and all(float(v) > 0 for a in arms for v in values[key][a])
        spread = [float(v) for a in arms for v in values[key][a]] if not categorical else []
        if positive and spread and max(spread) / min(spread) > 20:
            ax.set_yscale("log")
        if categorical:
            ax.set_yticks(range(len(cats)), cats)
        ax.set_xticks(range(len(arms)), arms, rotation=30, ha="right")
        ax.set_title(key, fontsize=8)
    fig.tight_layout()
    return to_data_uri(fig)


def inner_vs_outer(points: Mapping[str, Sequence[tuple[float, float]]], metric: str,
                   colors: Mapping[str, str]) -> str:
    """Best inner (tuning) score against the outer test score of the same run; below the diagonal:
    the tuning was optimistic."""
    fig, axes = _figure(4.2, 3.8)
    ax = axes[0][0]
    allv = [v for p in points.values() for xy in p for v in xy]
    lo, hi = min(allv), max(allv)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, ls="--", zorder=1)
    for arm, p in points.items():
        arr = np.asarray(p, dtype=float)
        ax.scatter(arr[:, 0], arr[:, 1], s=26, color=colors.get(arm), label=arm, zorder=3)
    ax.set_xlabel(f"best inner score ({metric}, mean over inner folds)")
    ax.set_ylabel(f"outer test score ({metric})")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)


def tuning_curves(curves: Mapping[str, Sequence[Sequence[float | None]]], metric: str,
                  colors: Mapping[str, str]) -> str:
    """Best-so-far inner score against trial number: thin lines per outer run, thick the mean per arm."""
    fig, axes = _figure(5.2, 3.4)
    ax = axes[0][0]
    for arm, runs in curves.items():
        n = max((len(c) for c in runs), default=0)
        grid = np.full((len(runs), n), np.nan)
        for i, c in enumerate(runs):
            vals = np.array([np.nan if v is None else float(v) for v in c])
            grid[i, :len(vals)] = vals
            ax.plot(np.arange(len(vals)), vals, color=colors.get(arm), lw=0.7, alpha=0.35)
        with np.errstate(all="ignore"):
            mean = np.array([np.nanmean(col) if np.any(np.isfinite(col)) else np.nan for col in grid.T])
        ax.plot(np.arange(n), mean, color=colors.get(arm), lw=2, label=arm)
    ax.set_xlabel("trial (0 = the suite's own configuration)")
    ax.set_ylabel(f"best inner {metric} so far")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return to_data_uri(fig)
