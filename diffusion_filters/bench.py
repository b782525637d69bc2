"""Throughput benchmark of every registered filter against reference implementations.

    python -m diffusion_filters.bench [--quick] [--json PATH] [--batch 32] [--size 256] [--device cpu|cuda]

For one batch of ``--batch`` single-channel ``--size`` x ``--size`` float32 images (a synthetic
ultrasound-like phantom: smooth tissue regions and bright lines under multiplicative Rayleigh
speckle, in [0, 1]) it measures images/second of each registered filter (created with
:func:`diffusion_filters.create` and typical parameters) and of the installed anchors, all in the
same run:

* MedPy ``anisotropic_diffusion`` (Perona-Malik, 20 iterations, float32, one image per call);
* OpenCV ``cv2.ximgproc.anisotropicDiffusion`` (Perona-Malik, 20 iterations). It only accepts
  8-bit 3-channel images, so each image is converted to ``uint8`` and replicated to 3 channels
  *before* timing: the figure is what a user of OpenCV gets, but OpenCV then processes three
  (identical) channels in 8-bit;
* scikit-image ``denoise_nl_means(fast_mode=True, patch_size=7, patch_distance=5)``.

Timing: every filter runs once untimed (warm-up; its time, which includes any ``torch.compile``
compilation, is reported as ``first call``), then ``repeats`` rounds time every filter once in
turn; the best round is kept. Interleaving the rounds and keeping the best makes the ratios
robust to other processes sharing the CPU; the load average is printed because a 2-thread
filter loses more than a single-threaded anchor when another process occupies a core. Anchors missing from the environment are skipped with
a line saying so; so are filters that are not registered.

It also reports the cost of one coherence-/edge-enhancing iteration relative to one Perona-Malik
iteration (each filter run with ``iterations=1`` on the same batch, best of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

__all__ = ["FILTER_PARAMS", "BenchResult", "main", "make_batch", "run_bench"]

FILTER_PARAMS: dict[str, dict[str, Any]] = {
    "perona_malik": {"iterations": 20, "kappa": 0.1, "step": 0.2},
    "srad": {"iterations": 20, "step": 0.2},
    "coherence_enhancing": {"iterations": 20, "step": 0.5, "sigma": 1.0, "rho": 4.0, "C": 1e-6},
    "edge_enhancing": {"iterations": 20, "step": 0.5, "sigma": 1.0, "lam": 0.05},
    "nonlocal_means": {"patch_size": 7, "search_size": 11, "h": 0.1},
    "gaussian": {"sigma": 2.0},
    "median": {"size": 3},
}
"""Typical parameters per filter (images in [0, 1])."""

_ONE_ITERATION = ("perona_malik", "coherence_enhancing", "edge_enhancing")


@dataclass
class BenchResult:
    """One measured row."""

    name: str
    kind: str  # "filter" or "anchor"
    params: str
    images_per_s: float
    first_call_s: float
    note: str = ""
    ratios: dict[str, float] = field(default_factory=dict)


def make_batch(n: int = 32, size: int = 256, seed: int = 0) -> np.ndarray:
    """``(n, 1, size, size)`` float32 ultrasound-like phantoms in [0, 1] (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
        tissue = 0.35 + 0.25 * ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2)
        tissue += 0.3 * (np.abs(yy - rng.uniform(0.1, 0.3)) < 0.01)  # pleura-like bright line
        for _ in range(3):  # vertical B-line-like streaks
            tissue += 0.15 * np.exp(-(((xx - rng.uniform(0.1, 0.9)) / 0.01) ** 2)) * (yy > 0.3)
        speckle = rng.rayleigh(scale=np.sqrt(2 / np.pi), size=(size, size)).astype(np.float32)  # mean 1
        out[i, 0] = np.clip(tissue * speckle * 0.8, 0.0, 1.0)
    return out


def _timer(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # a CUDA call returns before its kernels finish
    return time.perf_counter() - t0


def _anchor_runs(batch: np.ndarray) -> dict[str, tuple[str, Callable[[], Any] | None, str]]:
    """name -> (params, callable or None, note)."""
    imgs = [batch[i, 0] for i in range(batch.shape[0])]
    runs: dict[str, tuple[str, Callable[[], Any] | None, str]] = {}
    try:
        from medpy.filter.smoothing import anisotropic_diffusion

        runs["medpy PM"] = (
            "niter=20, kappa=0.1, gamma=0.2, option=1",
            lambda: [anisotropic_diffusion(im, niter=20, kappa=0.1, gamma=0.2, option=1) for im in imgs],
            "float32, one image per call",
        )
    except ImportError:
        runs["medpy PM"] = ("", None, "medpy not installed: skipped")
    try:
        import cv2

        if not hasattr(cv2, "ximgproc"):
            raise ImportError
        rgb8 = [np.repeat((im * 255).round().astype(np.uint8)[:, :, None], 3, axis=2) for im in imgs]
        # OpenCV's K is in 8-bit grey levels: kappa=0.1 of [0, 1] is K=25.5.
        runs["OpenCV PM"] = (
            "niters=20, alpha=0.2, K=25.5",
            lambda: [cv2.ximgproc.anisotropicDiffusion(im, 0.2, 25.5, 20) for im in rgb8],
            "uint8, 3 channels (OpenCV's only input format)",
        )
    except ImportError:
        runs["OpenCV PM"] = ("", None, "opencv-contrib (cv2.ximgproc) not installed: skipped")
    try:
        from skimage.restoration import denoise_nl_means

        runs["skimage NLM"] = (
            "fast_mode=True, patch_size=7, patch_distance=5, h=0.1",
            lambda: [denoise_nl_means(im, patch_size=7, patch_distance=5, h=0.1, fast_mode=True) for im in imgs],
            "float32, one image per call",
        )
    except ImportError:
        runs["skimage NLM"] = ("", None, "scikit-image not installed: skipped")
    return runs


def run_bench(batch_size: int = 32, size: int = 256, repeats: int = 5, log: Callable[[str], None] = print,
              device: str = "cpu") -> dict[str, Any]:
    """Measure every filter (on ``device``) and anchor (CPU libraries); return a JSON-serialisable dict."""
    import diffusion_filters as df
    from diffusion_filters._native import native_status

    load_before = _loadavg()
    batch = make_batch(batch_size, size)
    x = torch.from_numpy(batch).to(device)
    names = df.available()

    timed: dict[str, tuple[str, str, Callable[[], Any], str]] = {}  # key -> (kind, params, fn, note)
    skipped: list[str] = []
    for name in FILTER_PARAMS:
        if name not in names:
            skipped.append(f"{name}: not registered, skipped")
            continue
        module = df.create(name, **FILTER_PARAMS[name])
        params = ", ".join(f"{k}={v}" for k, v in FILTER_PARAMS[name].items())
        timed[name] = ("filter", params, (lambda m=module: m(x)), "")
    for name in names:
        if name not in FILTER_PARAMS:
            skipped.append(f"{name}: registered but no typical parameters in bench.FILTER_PARAMS, skipped")
    for name, (params, fn, note) in _anchor_runs(batch).items():
        if fn is None:
            skipped.append(f"{name}: {note}")
        else:
            timed[name] = ("anchor", params, fn, note)
    one_it: dict[str, Callable[[], Any]] = {}
    for name in _ONE_ITERATION:
        if name in names:
            module = df.create(name, **{**FILTER_PARAMS[name], "iterations": 1})
            one_it[name] = lambda m=module: m(x)

    first: dict[str, float] = {}
    for key, (_, _, fn, _) in timed.items():
        first[key] = _timer(fn)
        log(f"  warm-up {key}: {first[key]:.2f} s")
    for fn in one_it.values():
        fn()
    best = {key: float("inf") for key in timed}
    best_one = {key: float("inf") for key in one_it}
    for r in range(repeats):
        for key, (_, _, fn, _) in timed.items():
            best[key] = min(best[key], _timer(fn))
        for key, fn in one_it.items():
            best_one[key] = min(best_one[key], _timer(fn))
        log(f"  round {r + 1}/{repeats} done")

    rows = [
        BenchResult(key, kind, params, batch_size / best[key], first[key], note)
        for key, (kind, params, _, note) in timed.items()
    ]
    anchors = {row.name: row.images_per_s for row in rows if row.kind == "anchor"}
    for row in rows:
        row.ratios = {a: row.images_per_s / v for a, v in anchors.items()}
    one_iteration = {
        f"{k} / perona_malik": best_one[k] / best_one["perona_malik"]
        for k in best_one
        if k != "perona_malik" and "perona_malik" in best_one
    }
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(x.device) if x.device.type == "cuda" else "cpu",
        "native_kernels": native_status() if x.device.type == "cpu" else {},
        "torch": torch.__version__,
        "batch": [batch_size, 1, size, size],
        "repeats": repeats,
        "results": [asdict(r) for r in rows],
        "one_iteration_cost_ratio": one_iteration,
        "one_iteration_seconds": best_one,
        "skipped": skipped,
        "load_average_1min": [load_before, _loadavg()],
    }


def _loadavg() -> float | None:
    """1-minute load average (other processes on a shared CPU skew the ratios: reported)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for benchmark tables."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(res: dict[str, Any]) -> str:
    """Markdown table of a :func:`run_bench` result."""
    anchors = [r["name"] for r in res["results"] if r["kind"] == "anchor"]
    head = "| filter | parameters | images/s | first call (s) | " + " | ".join(f"× {a}" for a in anchors) + " |"
    sep = "|" + "---|" * (4 + len(anchors))
    lines = [
        f"Batch {res['batch']} float32, {res['date']}, CPU: {res['cpu']} ({res['threads']} threads), "
        f"torch {res['torch']}, best of {res['repeats']} rounds, "
        f"1-min load average before/after: {res['load_average_1min'][0]}/{res['load_average_1min'][1]}",
        f"Filters on: {res.get('device', 'cpu')}; C kernels: "
        + (", ".join(f"{k} {v.split(':')[0]}" for k, v in res.get("native_kernels", {}).items()) or "not used"),
        "",
        head,
        sep,
    ]
    for r in res["results"]:
        ratios = " | ".join(f"{r['ratios'][a]:.2f}" for a in anchors)
        name = r["name"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {name} | {r['params']} | {r['images_per_s']:.1f} | {r['first_call_s']:.2f} | {ratios} |")
    if res["one_iteration_cost_ratio"]:
        lines.append("")
        lines.append("One iteration (iterations=1, same batch), cost relative to one Perona–Malik iteration:")
        for k, v in res["one_iteration_cost_ratio"].items():
            lines.append(f"- {k}: {v:.2f}x")
    for s in res["skipped"]:
        lines.append(f"- skipped: {s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffusion_filters.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 timed rounds instead of 5")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, --quick 2)")
    parser.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the filters run (the anchors are CPU libraries; default cpu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to torch here; accepted: cpu")
    if args.batch < 1 or args.size < 16:
        parser.error("--batch must be >= 1 and --size >= 16")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    res = run_bench(args.batch, args.size, repeats, device=args.device)
    print(format_table(res))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
