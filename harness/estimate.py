"""The dry-run cost estimate: per phase, measured on this machine, with the load it was measured under.

For every arm whose runs are not yet timed in the store, the estimate measures what one run will
do, in the same shapes as training:

- **preprocessing** (cached arms, once per pipeline and data set unless the cache holds it): the
  arm's pipeline on a few frames, after a warm-up, per frame x the number of frames. Filters with
  ``iterations`` above :data:`MAX_TIMED_ITERATIONS` are timed with that many and scaled linearly
  (explicit schemes cost the same per iteration), so a huge setting is priced, not run;
- **training**: forward + backward + optimiser step of the arm's network on one training batch
  (augmentation and an on-the-fly filter included), :data:`TIMED_STEPS` steps after
  :data:`WARMUP_STEPS` warm-up steps, the median x optimiser steps per epoch x epochs;
- **evaluation**: inference per image (median of a few batches) x (validation images x epochs +
  test images), plus BatchNorm recalibration when the recipe asks for it;
- **explain** (after the runs): sample frames through forward + backward once per arm (Grad-CAM);
- **tuning** (arms with a ``search:``): the final fit's training + evaluation x
  (``harness.search.nested.search_cost_factor`` - 1), i.e. ``trials x (inner_folds - 1)`` inner fits
  on about the same number of images, with no trial pruned (an upper bound).

Arms with finished runs in the store use their mean measured run time instead. The machine's
load average is read before measuring; when it is busy (load >= :data:`BUSY_LOAD_SHARE` x cores)
or the timed steps scatter widely, the estimate says so and also gives the figure from the fastest
steps (what a quiet machine would take) instead of extrapolating a wild number from one slow step.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WARMUP_STEPS = 2
TIMED_STEPS = 5
STEP_BUDGET_S = 20.0  # stop timing a network early when its steps are this slow in total
MAX_TIMED_ITERATIONS = 8
FILTER_FRAMES = 4
BUSY_LOAD_SHARE = 0.75
SCATTER = 0.5  # (p75 - p25) / median above this: the steps were disturbed
PHASES = ("preprocessing", "training", "evaluation", "tuning", "explain")


@dataclass
class Timing:
    """Median and fastest of several timed repetitions (seconds)."""

    median: float
    fastest: float
    scatter: float

    @classmethod
    def of(cls, times: Sequence[float]) -> Timing:
        t = np.asarray(times, dtype=float)
        med = float(np.median(t))
        q75, q25 = np.percentile(t, [75, 25])
        return cls(med, float(t.min()), float((q75 - q25) / med) if med > 0 else 0.0)


@dataclass
class Estimate:
    """Seconds per phase (at the current load and, from the fastest repetitions, on a quiet machine)."""

    phases: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    quiet: dict[str, float] = field(default_factory=lambda: {p: 0.0 for p in PHASES})
    from_store: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cores: int = 1
    scatter: float = 0.0
    basis: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.from_store + sum(self.phases.values())

    @property
    def quiet_total(self) -> float:
        return self.from_store + sum(self.quiet.values())

    @property
    def busy(self) -> bool:
        return self.load[0] >= BUSY_LOAD_SHARE * self.cores or self.scatter > SCATTER

    def add(self, phase: str, timing: Timing, count: float) -> None:
        self.phases[phase] += timing.median * count
        self.quiet[phase] += timing.fastest * count
        self.scatter = max(self.scatter, timing.scatter)

    def lines(self, fmt: Callable[[float], str]) -> list[str]:
        """What the dry run prints: total, per phase, the basis, the load, warnings."""
        out = []
        if self.busy:
            out.append(f"estimated time: {fmt(self.quiet_total)} on one worker on a quiet machine; "
                       f"{fmt(self.total)} if the current load persists")
        else:
            out.append(f"estimated time: {fmt(self.total)} on one worker")
        parts = [f"{p} {fmt(s)}" for p, s in self.phases.items() if s > 0]
        if self.from_store:
            parts.insert(0, f"runs timed in the store {fmt(self.from_store)}")
        out.append("  per phase: " + (", ".join(parts) or "nothing to do")
                   + ("" if self.phases["tuning"] else "; tuning: none configured"))
        out += [f"  basis: {b}" for b in self.basis]
        load = ", ".join(f"{x:.2f}" for x in self.load)
        out.append(f"  measured under load average {load} (1/5/15 min) on {self.cores} cores"
                   + (" — BUSY" if self.busy else ""))
        if self.busy:
            why = []
            if self.load[0] >= BUSY_LOAD_SHARE * self.cores:
                why.append(f"load {self.load[0]:.1f} >= {BUSY_LOAD_SHARE:g} x {self.cores} cores")
            if self.scatter > SCATTER:
                why.append(f"timed steps scattered by {self.scatter:.0%} of their median")
            out.append(f"  warning: the machine is busy ({'; '.join(why)}): the first figure is from the fastest "
                       "timed steps; rerun --dry-run on a quiet machine for a firmer estimate")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def _scaled_steps(steps: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """The pipeline with every ``iterations`` above the cap lowered to it, and the cost factor."""
    out, factor = [], 1.0
    for step in steps:
        if len(step) != 1:  # a callable: / module: step (diffusion_filters.external): timed as it is
            out.append(step)
            continue
        (name, params), = step.items()
        params = dict(params or {})
        it = params.get("iterations")
        if isinstance(it, int) and not isinstance(it, bool) and it > MAX_TIMED_ITERATIONS:
            # a pipeline's cost is dominated by its most expensive step: scale by the largest factor
            factor = max(factor, it / MAX_TIMED_ITERATIONS)
            params["iterations"] = MAX_TIMED_ITERATIONS
        out.append({name: params})
    return out, factor


def time_filter(steps: list[dict[str, Any]], images: np.ndarray,
                base_dir: Any = None) -> tuple[Timing, float]:
    """Seconds per frame of ``steps`` (after one warm-up) and the iteration scale factor applied
    (``base_dir``: the suite's folder, where a ``callable:`` / ``module:`` step's file may lie)."""
    import torch

    import diffusion_filters

    timed, factor = _scaled_steps(steps)
    pipe = diffusion_filters.Pipeline.from_config(timed, base_dir=base_dir).eval()
    x = torch.from_numpy(np.asarray(images[:FILTER_FRAMES], dtype=np.float32) / 255.0).unsqueeze(1)
    times = []
    with torch.no_grad():
        for i in range(4):
            t0 = time.perf_counter()
            pipe(x)
            if i:
                times.append((time.perf_counter() - t0) * factor / len(x))
    return Timing.of(times), factor


def time_network(model_cfg: Any, train_cfg: Any, size: int,
                 on_the_fly: Callable[[Any], Any] | None = None) -> dict[str, Timing]:
    """``step`` (one training batch: augment, filter, forward, backward, step), ``infer`` (per image),
    ``build`` (creating the network) on this machine with the run's device and precision."""
    import torch

    from harness.augment import augment_batch
    from harness.models import create_model
    from harness.training.device import Precision, resolve_device, run_settings

    device = resolve_device(train_cfg.device)
    with run_settings(train_cfg.num_threads, device, False):
        t0 = time.perf_counter()
        model = create_model(model_cfg.model_copy(update={"pretrained": "none"}), in_chans=1)
        build = time.perf_counter() - t0
        precision = Precision.for_run(device, train_cfg.channels_last, train_cfg.amp)
        model = model.to(device).to(memory_format=precision.memory_format)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        bs = train_cfg.batch_size
        x = torch.rand(bs, 1, size, size, generator=g)
        y = torch.randint(0, 2, (bs,), generator=g).to(device)

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        steps: list[float] = []
        spent = 0.0
        model.train()
        for i in range(WARMUP_STEPS + TIMED_STEPS):
            t0 = time.perf_counter()
            xb = augment_batch(x, g) if train_cfg.augment else x
            if on_the_fly is not None:
                xb = on_the_fly(xb)
            xb = xb.to(device).contiguous(memory_format=precision.memory_format)
            with precision.autocast():
                loss = torch.nn.functional.cross_entropy(model(xb).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            dt = time.perf_counter() - t0
            spent += dt
            if i >= WARMUP_STEPS:
                steps.append(dt)
                if spent > STEP_BUDGET_S and len(steps) >= 3:
                    break
        infer: list[float] = []
        model.eval()
        xe = x.to(device).contiguous(memory_format=precision.memory_format)
        with torch.no_grad():
            for i in range(4):
                t0 = time.perf_counter()
                with precision.autocast():
                    model(xe)
                sync()
                if i:
                    infer.append((time.perf_counter() - t0) / bs)
    return {"step": Timing.of(steps), "infer": Timing.of(infer), "build": Timing(build, build, 0.0)}


def steps_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)


def estimate(suite: Any, plan: Any, store: Any, frames: Any = None, cache_dir: Any = None) -> Estimate:
    """The estimate of ``plan.todo`` (see the module docstring)."""
    from harness.suite import canonical_json

    est = Estimate(load=os.getloadavg(), cores=cores())
    per_arm: dict[str, float] = {}
    if store is not None:
        done = store.runs(status="done")
        for arm, rows in done.groupby("arm"):
            secs = [t.get("run_seconds") for t in rows["timings"] if isinstance(t, dict) and t.get("run_seconds")]
            if secs:
                per_arm[str(arm)] = float(np.mean(secs))
    todo = plan.todo
    timed = {r.arm for r in todo if r.arm in per_arm}
    est.from_store = sum(per_arm[r.arm] for r in todo if r.arm in per_arm)
    if timed:
        est.basis.append(f"mean time of finished runs for {', '.join(sorted(timed))}")
    run_sets = [suite.run_arm(a) for a in dict.fromkeys(r.arm for r in todo if r.arm not in per_arm)]
    if not run_sets:
        return est
    images = plan.images.values()
    n_train = float(np.mean([v["n_train"] for v in images])) if images else 0.0
    n_val = float(np.mean([v["n_val"] for v in images])) if images else 0.0
    n_test = float(np.mean([v["n_test"] for v in images])) if images else 0.0
    size = int(frames.images.shape[1]) if frames is not None else int(getattr(suite.data, "image_size", 64))
    sample = frames.images if frames is not None else np.random.default_rng(0).integers(
        0, 256, (FILTER_FRAMES, size, size), dtype=np.uint8)
    n_frames = len(frames) if frames is not None else 0
    networks: dict[str, dict[str, Timing]] = {}
    filters: dict[str, Timing] = {}
    seen_pipelines: set[str] = set()
    tuned_fits = {"phases": 0.0, "quiet": 0.0}  # the final fits of tuned runs: what their search repeats
    for run_set in run_sets:
        arm = run_set.arm
        before = {k: getattr(est, k)["training"] + getattr(est, k)["evaluation"] for k in tuned_fits}
        runs = sum(1 for r in todo if r.arm == run_set.name)
        model, training = suite.arm_model(arm), suite.arm_training(arm)
        pipe_key = canonical_json(arm.preprocess)
        if arm.preprocess and pipe_key not in filters:
            filters[pipe_key], factor = time_filter(arm.preprocess, sample, suite.base_dir)
            if factor > 1:
                est.basis.append(f"{arm.name}: filter timed at {MAX_TIMED_ITERATIONS} iterations and scaled x{factor:g}")
        per_frame = filters.get(pipe_key)
        otf = None
        if arm.on_the_fly and arm.preprocess:
            from harness.preprocess import on_the_fly_filter

            otf = on_the_fly_filter(arm.preprocess, suite.base_dir)
        elif per_frame is not None and pipe_key not in seen_pipelines \
                and not _cached(frames, arm, cache_dir, suite.base_dir):
            seen_pipelines.add(pipe_key)
            est.add("preprocessing", per_frame, n_frames)
        net_key = canonical_json([model.model_dump(mode="json"), training.model_dump(mode="json"), size,
                                  arm.preprocess if otf else None])
        if net_key not in networks:
            networks[net_key] = time_network(model, training, size, otf)
        t = networks[net_key]
        _add_fits(est, t, training, runs * training.seeds, (n_train, n_val, n_test),
                  per_frame if otf is not None else None)
        if suite.report.gradcam:
            from harness.explain import PER_CLASS

            per_image = Timing(t["step"].median / training.batch_size, t["step"].fastest / training.batch_size, 0)
            est.add("explain", per_image, 3 * 2 * PER_CLASS)  # forward + backward per map, + processed frames
            est.add("explain", t["build"], 1)
        est.basis.append(f"{run_set.name}: {t['step'].median:.3f} s per training step (batch {training.batch_size}, "
                         f"median of {TIMED_STEPS} after {WARMUP_STEPS} warm-up), "
                         f"{1000 * t['infer'].median:.1f} ms per image in evaluation"
                         + (f", {1000 * per_frame.median:.1f} ms per frame of filtering" if per_frame else ""))
        if run_set.tuned:
            for k in tuned_fits:
                tuned_fits[k] += getattr(est, k)["training"] + getattr(est, k)["evaluation"] - before[k]
    _add_tuning(est, suite, tuned_fits)
    pre, train = est.phases["preprocessing"], est.phases["training"]
    if pre > max(600.0, train):
        est.warnings.append(f"preprocessing alone is estimated at {pre / 3600:.1f} h, more than the training; "
                            "check the filters' iterations and window sizes")
    return est


def _add_fits(est: Estimate, t: dict[str, Timing], training: Any, fits: int, sizes: tuple[float, float, float],
              filter_per_frame: Timing | None) -> None:
    """Training and evaluation of ``fits`` networks (runs x ``training.seeds``: a seed ensemble trains and
    evaluates each of its networks); ``filter_per_frame``: an on-the-fly filter's cost per image."""
    n_train, n_val, n_test = sizes
    est.add("training", t["step"], fits * steps_per_epoch(int(n_train), training.batch_size) * training.epochs)
    est.add("training", t["build"], fits)
    n_eval = n_val * training.epochs + n_test + 6
    if training.bn_recalibration:
        n_eval += min(training.bn_recalibration_images, n_train) * training.epochs
    est.add("evaluation", t["infer"], fits * n_eval)
    if filter_per_frame is not None:  # validation and test images filtered once per network
        est.add("evaluation", filter_per_frame, fits * (n_val + n_test))


def _add_tuning(est: Estimate, suite: Any, tuned_fits: dict[str, float]) -> None:
    """Tuning repeats each tuned run's fit on inner folds: price it from the tuned fits just estimated
    (untuned runs and variants cost nothing more)."""
    from harness.search.nested import search_cost_factor

    extra = search_cost_factor(suite) - 1.0
    if extra <= 0 or not any(tuned_fits.values()):
        return
    for key, totals in (("phases", est.phases), ("quiet", est.quiet)):
        totals["tuning"] = extra * tuned_fits[key]
    est.basis.append(f"tuning: x{extra:g} the final fits' training and evaluation (no trial pruned: an upper bound)")


def _cached(frames: Any, arm: Any, cache_dir: Any, base_dir: Any = None) -> bool:
    """Whether the preprocessing cache already holds this arm's frames."""
    if frames is None or cache_dir is None or not frames.content_hash:
        return False
    from pathlib import Path

    from harness.preprocess import CACHE_KIND, cache_key

    key = cache_key(frames.content_hash, arm.preprocess, base_dir)
    folder = Path(cache_dir) / CACHE_KIND / key[:2]
    return (folder / f"{key}.npy").exists() and (folder / f"{key}.json").exists()


def fmt_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


__all__ = ["Estimate", "Timing", "estimate", "fmt_seconds", "time_filter", "time_network"]
