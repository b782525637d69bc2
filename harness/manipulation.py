"""The manipulation check (issue 26 §1): does each arm's preprocessing change the frames, and is the
change anisotropic diffusion rather than plain Gaussian smoothing?

A null verdict of an arm whose filter barely acts, or acts like the Gaussian control, says nothing
about anisotropic diffusion. Before any run trains, the driver (:func:`harness.runner.run_suite`)
filters a fixed sample of the study's own frames with every arm's preprocessing pipeline, exactly as
training will see them (:func:`harness.preprocess.apply_pipeline`: float32 in [0, 1], clipped), and
measures, per arm (``x`` a frame in [0, 1], ``f`` the arm's pipeline, ``g`` a Gaussian; norms are
Euclidean; each number is the mean over the sampled frames). The *fan* is the input's non-zero
pixels, closed by a 5 × 5 square (dark speckle inside the fan is not outside it); its *interior* is
the centres of the :data:`WINDOW` × :data:`WINDOW` windows that lie inside the frame and the fan.

1. **relative change** ``‖f(x) − x‖ / ‖x‖`` over the whole frame (what the network is given);
2. **anisotropy** ``‖f(x) − g(x)‖ / ‖f(x) − x‖`` over the fan's interior: the part of the change a
   Gaussian does not reproduce, against the suite's Gaussian control arm (an arm whose pipeline is
   one ``gaussian`` step) and against the Gaussian matched to ``f`` (the σ of :data:`SIGMA_GRID`,
   with the control's, minimising ``Σ‖f(x) − g_σ(x)‖²`` over the sample; reported with its σ). The
   interior, not the frame: the fan's border against the black is the frames' strongest edge, the
   same in every frame of a probe and without anatomy; an edge-keeping filter keeps it and a
   Gaussian blurs it, which alone would read as anisotropy (on the COVID-BLUES frames, Perona-Malik
   at κ 0.1 reads 0.34 inside, 0.55 over the whole frame);
3. **speckle reduction** ``mean CoV(f(x)) / mean CoV(x)`` over the homogeneous windows of the fan,
   ``CoV = s / m`` of a :data:`WINDOW` × :data:`WINDOW` window (mean ``m``, standard deviation
   ``s``). A window counts when its centre is in the fan's interior and its mean is at least
   :data:`DARK_FLOOR` (darker windows' CoV is 8-bit quantisation); the homogeneous ones
   are the :data:`HOMOGENEOUS_FRACTION` of them with the lowest relative gradient energy
   ``mean_window |∇(G_2 ∗ x)|² / m²`` (the input smoothed at σ = 2 px so that the speckle's own
   gradients do not decide; divided by ``m²`` so that brightness does not either). Below 1: speckle
   reduced;
4. **edge preservation** β (Sattar, Floreby, Salomonsson & Lövström 1997, "Image enhancement based on
   a nonlinear multiscale method", IEEE Trans. Image Process. 6(6):888–895):
   ``β = Σ(Δx − mean Δx)(Δf(x) − mean Δf(x)) / sqrt(Σ(Δx − mean Δx)² Σ(Δf(x) − mean Δf(x))²)``,
   ``Δ`` the 3 × 3 Laplacian, the sums over the strongest edges of the input: the
   :data:`EDGE_FRACTION` of the fan's interior pixels (windows as in 3) with the largest
   ``|∇(G_1 ∗ x)|``. 1: the edges' fine structure kept; near 0: smoothed away. β rewards doing
   nothing, so read it with 1 and 3.

Flags (the thresholds are named constants below, with their reasons): **≈ identity** when the
relative change is below :data:`IDENTITY_CHANGE`; else **≈ the Gaussian control** when the
anisotropy against the control is below :data:`GAUSSIAN_DISTANCE`, **≈ a Gaussian** when the
anisotropy against the matched Gaussian is. The control arm itself is only checked for ≈ identity.
A flagged arm's verdict says that it is not a test of diffusion (:mod:`harness.report.manipulation`).

The sample: up to :data:`MAX_FRAMES` frames, patient-stratified (the patients in a seeded random
order, then one random frame of each in turn, so that every patient counts alike up to
``MAX_FRAMES`` patients), seeded with ``(suite seed, SAMPLE_STREAM)``: the same frames every time
for the same data and seed. Learnable layers are read after training, from the stored initial and
final parameters (:mod:`harness.report.manipulation`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

#: Relative change below which an arm is "≈ identity". The frames are 8-bit (a grey level is 0.4 % of
#: the range) and training's own photometric jitter changes a frame by up to ±15 % (gain and contrast,
#: :mod:`harness.augment`): a pipeline that moves the frames by less than 1 % of their norm hands the
#: network the frames it would have seen anyway.
IDENTITY_CHANGE = 0.01

#: Anisotropy below which an arm is "≈ the Gaussian control" / "≈ a Gaussian": what a Gaussian leaves
#: of the change is under a quarter of it (in norm; the squared residual under 1/16 ≈ 6 % of the
#: change's energy), so the arm hands the network Gaussian-smoothed frames up to a small remainder.
#: Perona-Malik with a κ far above the frames' gradients (conductance ≈ 1: the heat equation) reads
#: below 0.01 against the Gaussian of σ = √(2t); a filter that keeps edges while it smooths speckle
#: leaves a remainder comparable to its change. On 64 COVID-BLUES frames at 96 px (the finetune
#: suite) against its control, Perona-Malik reads 0.34, non-local means 0.30, edge-enhancing 0.47,
#: SRAD 0.46 (but 0.21 against a Gaussian of σ 1.25: flagged), coherence-enhancing, which hardly
#: acts (a 1.5 % change), 28. The reviewer's figure of issue 26 for Perona-Malik at κ 0.1
#: (mean |PM − Gaussian| / mean |PM − input| ≈ 0.19) is a mean absolute difference, which the many
#: small changes of flat regions dominate; in norm, which weighs the edges where the two differ, it
#: reads 0.34 inside the fan: not flagged, and its β (0.48 against the Gaussian's 0.20) agrees that it
#: keeps some edges the Gaussian does not.
GAUSSIAN_DISTANCE = 0.25

MAX_FRAMES = 64  # frames sampled (the finetune suite's six pipelines at 96 px: 0.6 s on 2 cores)
SAMPLE_STREAM = 26  # the sample's seed is (suite seed, SAMPLE_STREAM): its own stream, apart from the splits'
WINDOW = 7  # side of the local-statistics windows (pixels)
DARK_FLOOR = 0.04  # windows of a lower mean (about 10 grey levels) are left out of the speckle measure
HOMOGENEOUS_FRACTION = 0.10  # the most homogeneous tenth of the fan's windows
EDGE_FRACTION = 0.10  # the strongest tenth of the fan's edges
#: Standard deviations (pixels) tried for the matched Gaussian (with the control's).
SIGMA_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


@dataclass(frozen=True)
class ManipulationCheck:
    """One arm's manipulation check; ``None`` where a number is not defined (no frame changed, no
    homogeneous window, no control)."""

    arm: str
    steps: tuple[str, ...]  # the pipeline's filter names, in order
    n_frames: int
    relative_change: float | None  # None: the pipeline failed (``error``)
    anisotropy: float | None  # against the Gaussian control (None: no control, this arm is it, or ≈ identity)
    matched_sigma: float | None  # σ of the Gaussian closest to the arm's output
    anisotropy_matched: float | None  # against that Gaussian
    speckle_cov_ratio: float | None
    edge_preservation: float | None  # Sattar's β
    control: str | None  # the Gaussian control arm it was compared with
    is_control: bool
    identity: bool
    gaussian_control: bool
    gaussian_like: bool
    reading: str
    error: str | None = None

    @property
    def flagged(self) -> bool:
        """Not a test of diffusion: ≈ identity, ≈ the Gaussian control or ≈ a Gaussian."""
        return self.identity or self.gaussian_control or self.gaussian_like

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        out["flagged"] = self.flagged
        return out


@dataclass(frozen=True)
class ManipulationResult:
    """Every checked arm, the sample they were checked on and what it cost."""

    checks: tuple[ManipulationCheck, ...]
    n_frames: int
    n_patients: int
    seed: int
    seconds: float
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def line(self) -> str:
        """One line for the console."""
        if not self.checks:
            return "manipulation check: no arm has a preprocessing pipeline"
        flagged = [f"{c.arm} {c.reading}" for c in self.checks if c.flagged or c.error]
        return (f"manipulation check: {len(self.checks)} arm(s) on {self.n_frames} frames of {self.n_patients} "
                f"patients in {self.seconds:.1f} s" + (f"; {'; '.join(flagged)}" if flagged else "; none flagged"))

    def meta(self) -> dict[str, Any]:
        """The store's meta keys: ``manipulation`` (one record per arm) and ``manipulation_sample``."""
        return {"manipulation": [c.as_dict() for c in self.checks],
                "manipulation_sample": {"n_frames": self.n_frames, "n_patients": self.n_patients, "seed": self.seed,
                                        "seconds": self.seconds, "thresholds": dict(self.thresholds)}}


def sample_frames(groups: Sequence[Any] | np.ndarray, seed: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Indices (sorted) of up to ``max_frames`` frames, patient-stratified and seeded (module docstring)."""
    groups = np.asarray(groups)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, SAMPLE_STREAM])
    patients = np.unique(groups)
    rng.shuffle(patients)
    queues = [list(rng.permutation(np.flatnonzero(groups == p))) for p in patients]
    chosen: list[int] = []
    while len(chosen) < max_frames and any(queues):
        for q in queues:
            if q and len(chosen) < max_frames:
                chosen.append(int(q.pop(0)))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def is_gaussian_step(steps: Sequence[Mapping[str, Any]]) -> bool:
    """A pipeline of exactly one ``gaussian`` step (a Gaussian control)."""
    return len(steps) == 1 and isinstance(steps[0], Mapping) and list(steps[0]) == ["gaussian"]


def _module(steps: list[dict[str, Any]], base_dir: Path | None):
    """The pipeline as training builds it (a ``callable:`` / ``module:`` step's file found in ``base_dir``)."""
    import diffusion_filters

    return diffusion_filters.Pipeline.from_config(steps, base_dir=base_dir).eval()


def _filtered(steps: list[dict[str, Any]], frames: np.ndarray, base_dir: Path | None) -> np.ndarray:
    from harness.preprocess import apply_pipeline

    out = np.empty(frames.shape, dtype=np.float32)
    apply_pipeline(_module(steps, base_dir), frames, out)
    return out.astype(np.float64)


def _gaussian(frames: np.ndarray, sigma: float) -> np.ndarray:
    return _filtered([{"gaussian": {"sigma": float(sigma)}}], frames, None)


def _norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(a.reshape(len(a), -1) ** 2, axis=1))


def _ratio(num: np.ndarray, den: np.ndarray) -> float | None:
    keep = den > 0
    return float(np.mean(num[keep] / den[keep])) if keep.any() else None


def relative_change(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over frames of ``‖y − x‖₂ / ‖x‖₂`` (frames with ``x = 0`` left out; (N, H, W) arrays)."""
    value = _ratio(_norms(y - x), _norms(x))
    return float("nan") if value is None else value


def anisotropy(x: np.ndarray, y: np.ndarray, g: np.ndarray, where: _Regions | None = None) -> float | None:
    """Mean over frames of ``‖y − g‖₂ / ‖y − x‖₂`` over each frame's fan interior (``where``; the whole
    frame when None), frames that ``y`` leaves unchanged there left out."""
    if where is None:
        return _ratio(_norms(y - g), _norms(y - x))
    num = np.array([np.linalg.norm((yi - gi)[m]) for yi, gi, m in zip(y, g, where.interior, strict=True)])
    den = np.array([np.linalg.norm((yi - xi)[m]) for yi, xi, m in zip(y, x, where.interior, strict=True)])
    return _ratio(num, den)


def _misfit(y: np.ndarray, g: np.ndarray, where: _Regions) -> float:
    """``Σ‖y − g‖²`` over the fan interiors (what the matched σ minimises)."""
    return float(sum(np.sum((yi - gi)[m] ** 2) for yi, gi, m in zip(y, g, where.interior, strict=True)))


@dataclass(frozen=True)
class _Regions:
    """Per frame (boolean (H, W) each): the fan's interior, its homogeneous windows' centres and its
    strongest-edge pixels."""

    interior: list[np.ndarray]
    homogeneous: list[np.ndarray]
    edges: list[np.ndarray]


def _local_stats(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = ndimage.uniform_filter(img, WINDOW, mode="reflect")
    sq = ndimage.uniform_filter(img * img, WINDOW, mode="reflect")
    return mean, np.sqrt(np.maximum(sq - mean * mean, 0.0))


def regions(x: np.ndarray) -> _Regions:
    """The homogeneous windows and strongest edges of each input frame (rules: the module docstring)."""
    r = WINDOW // 2
    interior, homogeneous, edges = [], [], []
    for img in x:
        fan = ndimage.minimum_filter(ndimage.maximum_filter(img > 0, 5, mode="nearest"), 5, mode="nearest")
        inside = ndimage.minimum_filter(fan, WINDOW, mode="constant", cval=False)
        inside[:r, :] = inside[-r:, :] = inside[:, :r] = inside[:, -r:] = False
        mean, _ = _local_stats(img)
        eligible = inside & (mean >= DARK_FLOOR)
        h = np.zeros_like(eligible)
        if eligible.any():
            grad2 = ndimage.gaussian_gradient_magnitude(img, 2.0, mode="reflect") ** 2
            energy = ndimage.uniform_filter(grad2, WINDOW, mode="reflect") / np.maximum(mean, 1e-12) ** 2
            cut = np.quantile(energy[eligible], HOMOGENEOUS_FRACTION)
            h = eligible & (energy <= cut)
        e = np.zeros_like(inside)
        if inside.any():
            grad = ndimage.gaussian_gradient_magnitude(img, 1.0, mode="reflect")
            cut = np.quantile(grad[inside], 1.0 - EDGE_FRACTION)
            e = inside & (grad >= cut) & (grad > 0)
        interior.append(inside)
        homogeneous.append(h)
        edges.append(e)
    return _Regions(interior, homogeneous, edges)


def speckle_cov_ratio(x: np.ndarray, y: np.ndarray, where: _Regions | None = None) -> float | None:
    """Mean over frames of (mean local CoV of ``y``) / (mean local CoV of ``x``) in ``x``'s homogeneous windows."""
    where = where or regions(x)
    ratios = []
    for xi, yi, h in zip(x, y, where.homogeneous, strict=True):
        if not h.any():
            continue
        mx, sx = _local_stats(xi)
        my, sy = _local_stats(yi)
        before = float(np.mean(sx[h] / mx[h]))
        after = float(np.mean(sy[h] / np.maximum(my[h], 1e-12)))
        if before > 0:
            ratios.append(after / before)
    return float(np.mean(ratios)) if ratios else None


def edge_preservation(x: np.ndarray, y: np.ndarray, where: _Regions | None = None) -> float | None:
    """Sattar et al.'s (1997) β at ``x``'s strongest edges, mean over frames (module docstring)."""
    where = where or regions(x)
    betas = []
    for xi, yi, e in zip(x, y, where.edges, strict=True):
        if e.sum() < 2:
            continue
        a = ndimage.laplace(xi, mode="reflect")[e]
        b = ndimage.laplace(yi, mode="reflect")[e]
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
        if den > 0:
            betas.append(float(np.sum(a * b)) / den)
    return float(np.mean(betas)) if betas else None


def _control(pipelines: Mapping[str, list[dict[str, Any]]], changes: Mapping[str, float]) -> str | None:
    """The suite's Gaussian control: the first arm whose pipeline is one ``gaussian`` step and that changes
    the frames (else the first such arm; None without one)."""
    candidates = [a for a, steps in pipelines.items() if steps and is_gaussian_step(steps)]
    acting = [a for a in candidates if changes.get(a, 0.0) >= IDENTITY_CHANGE]
    return (acting or candidates or [None])[0]


def _step_name(step: Any) -> str:
    """``perona_malik`` of ``{perona_malik: {...}}``; a ``callable:`` / ``module:`` step's import path."""
    if isinstance(step, Mapping):
        if len(step) == 1:
            return str(next(iter(step)))
        return str(step.get("callable") or step.get("module") or "step")
    return "step"


def _reading(c: dict[str, Any]) -> str:
    if c["identity"]:
        return f"≈ identity (relative change {c['relative_change']:.2%} < {IDENTITY_CHANGE:.0%})"
    if c["is_control"]:
        return "the Gaussian control"
    if c["gaussian_control"]:
        return (f"≈ the Gaussian control {c['control']} (anisotropy {c['anisotropy']:.2f} < {GAUSSIAN_DISTANCE:g})")
    if c["gaussian_like"]:
        return (f"≈ a Gaussian of σ {c['matched_sigma']:g} px (anisotropy {c['anisotropy_matched']:.2f} "
                f"< {GAUSSIAN_DISTANCE:g})")
    against = (c["anisotropy"], c["control"]) if c["anisotropy"] is not None else \
        (c["anisotropy_matched"], f"a Gaussian of σ {c['matched_sigma']:g} px")
    text = f"acts: relative change {c['relative_change']:.1%}"
    return text + (f", anisotropy {against[0]:.2f} against {against[1]}" if against[0] is not None else "")


def check_pipelines(images: np.ndarray, pipelines: Mapping[str, list[dict[str, Any]]], *,
                    groups: Sequence[Any] | np.ndarray | None = None, seed: int = 0, max_frames: int = MAX_FRAMES,
                    base_dir: Path | None = None) -> ManipulationResult:
    """The manipulation check of every arm with a preprocessing pipeline (``{arm: steps}``, suite order)
    on a sample of ``images`` ((N, H, W) uint8 frames; ``groups`` the patients, for the stratified sample).

    An arm whose pipeline raises gets a record with ``error`` and no numbers; the others are checked."""
    t0 = time.perf_counter()
    groups = np.asarray(groups) if groups is not None else np.arange(len(images))
    index = sample_frames(groups, seed, max_frames)
    frames = np.asarray(images[index])
    x = frames.astype(np.float64) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float64)
    arms = {a: list(s) for a, s in pipelines.items() if s}
    outputs: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    for arm, steps in arms.items():
        try:
            outputs[arm] = _filtered(steps, frames, base_dir)
        except Exception as err:  # one arm's failure is its record; training will say it again
            errors[arm] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    changes = {a: relative_change(x, y) for a, y in outputs.items()}
    control = _control({a: arms[a] for a in outputs}, changes)
    sigmas = sorted({*SIGMA_GRID, *([float(arms[control][0]["gaussian"]["sigma"])] if control else [])})
    blurred = {s: _gaussian(frames, s) for s in sigmas} if outputs else {}
    where = regions(x)
    checks = []
    for arm, steps in arms.items():
        names = tuple(_step_name(s) for s in steps)
        if arm in errors:
            checks.append(ManipulationCheck(arm, names, len(index), None, None, None, None, None, None,
                                            control, arm == control, False, False, False,
                                            f"not checked: {errors[arm]}", errors[arm]))
            continue
        y = outputs[arm]
        fits = {s: _misfit(y, g, where) for s, g in blurred.items()}
        sigma = min(fits, key=lambda s: (fits[s], s))
        c: dict[str, Any] = {
            "arm": arm, "steps": names, "n_frames": len(index), "relative_change": changes[arm],
            "anisotropy": anisotropy(x, y, outputs[control], where) if control and arm != control else None,
            "matched_sigma": sigma, "anisotropy_matched": anisotropy(x, y, blurred[sigma], where),
            "speckle_cov_ratio": speckle_cov_ratio(x, y, where), "edge_preservation": edge_preservation(x, y, where),
            "control": control, "is_control": arm == control,
        }
        c["identity"] = bool(c["relative_change"] < IDENTITY_CHANGE)
        if c["identity"]:  # a ratio of rounding errors: not defined for an arm that does not act
            c.update(anisotropy=None, matched_sigma=None, anisotropy_matched=None)
        others = not c["identity"] and not c["is_control"]
        c["gaussian_control"] = bool(others and c["anisotropy"] is not None and c["anisotropy"] < GAUSSIAN_DISTANCE)
        c["gaussian_like"] = bool(others and not c["gaussian_control"] and c["anisotropy_matched"] is not None
                                  and c["anisotropy_matched"] < GAUSSIAN_DISTANCE)
        c["reading"] = _reading(c)
        checks.append(ManipulationCheck(**c))
    thresholds = {"identity_change": IDENTITY_CHANGE, "gaussian_distance": GAUSSIAN_DISTANCE, "window": WINDOW,
                  "dark_floor": DARK_FLOOR, "homogeneous_fraction": HOMOGENEOUS_FRACTION,
                  "edge_fraction": EDGE_FRACTION}
    return ManipulationResult(tuple(checks), len(index), int(len(np.unique(groups[index]))) if len(index) else 0,
                              int(seed), time.perf_counter() - t0, thresholds)


def check_suite(suite: Any, frames: Any, max_frames: int = MAX_FRAMES) -> ManipulationResult:
    """:func:`check_pipelines` of a suite's arms on its frames (a :class:`~harness.data.frameset.FrameSet`),
    seeded by the suite's seed (what the driver stores before training)."""
    return check_pipelines(frames.images, {a.name: a.preprocess for a in suite.arms}, groups=frames.groups,
                           seed=suite.seed, max_frames=max_frames, base_dir=suite.base_dir)
