"""Optional ``torch.compile`` fast path for explicit diffusion schemes (inference only).

Why: an explicit diffusion iteration is a handful of element-wise passes over the image. In eager
PyTorch each pass is a separate sweep through memory, so a 32x256x256 batch runs at roughly the
speed of a numpy loop. Compiling K unrolled iterations with inductor fuses each iteration into
two loops (one flux per edge, then the update). The callers run it on cache-sized chunks of
planes, one single-threaded worker per core (:mod:`diffusion_filters._planewise`), so the working
set stays in the L2 cache and no OpenMP barrier is needed.

Control with the environment variable ``DIFFUSION_FILTERS_COMPILE`` or :func:`set_compile`:

* ``"auto"`` (default): compile on CPU when a call is large (at least ``AUTO_MIN_WORK``
  pixel-iterations) and no gradient is needed. The first such call per shape pays the compile
  time (seconds; inductor caches it on disk for later processes).
* ``"1"`` / ``"on"``: compile every gradient-free call, on any device.
* ``"0"`` / ``"off"``: never compile.

If compilation fails (no C++ compiler, unsupported platform) a warning is issued once and the
eager scheme is used from then on; results are the same either way (to float rounding).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

__all__ = ["AUTO_MIN_WORK", "compile_mode", "run_compiled", "set_compile", "use_compiled"]

AUTO_MIN_WORK = 2**25
"""Pixel-iterations (B*C*H*W*iterations) from which ``"auto"`` compiles (~25 images 256² x 20 it.)."""

_MODES = {"auto": "auto", "1": "on", "on": "on", "true": "on", "0": "off", "off": "off", "false": "off"}
_mode = _MODES.get(os.environ.get("DIFFUSION_FILTERS_COMPILE", "auto").strip().lower(), "auto")
_broken = False
_compiled: dict[Callable, Callable] = {}


def set_compile(mode: str) -> None:
    """Set the fast-path mode: ``"auto"``, ``"on"`` or ``"off"`` (see module docstring)."""
    global _mode
    key = str(mode).strip().lower()
    if key not in _MODES:
        raise ValueError(f"set_compile: mode={mode!r} is invalid; accepted: auto, on, off")
    _mode = _MODES[key]


def compile_mode() -> str:
    """Current fast-path mode (``"auto"``, ``"on"`` or ``"off"``)."""
    return _mode


def use_compiled(x: torch.Tensor, iterations: int, needs_grad: bool) -> bool:
    """Whether a call on ``x`` with ``iterations`` should take the compiled path."""
    if needs_grad or _broken or _mode == "off" or iterations == 0:
        return False
    if _mode == "on":
        return True
    return x.device.type == "cpu" and x.numel() * iterations >= AUTO_MIN_WORK


def run_compiled(fn: Callable[..., torch.Tensor], *args: object) -> torch.Tensor | None:
    """Run ``torch.compile(fn)(*args)``; ``None`` (and a one-time warning) if compiling fails.

    Dimension 0 of every tensor argument with 2 or more dimensions (the planes of a chunk and
    their per-plane parameters) is marked dynamic so chunks of different sizes share one graph.
    """
    global _broken
    if _broken:
        return None
    compiled = _compiled.get(fn)
    if compiled is None:
        compiled = _compiled[fn] = torch.compile(fn, fullgraph=True)
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() >= 2 and a.shape[0] > 1:
            torch._dynamo.maybe_mark_dynamic(a, 0)
    try:
        return compiled(*args)
    except Exception as err:  # noqa: BLE001 - any backend failure means: use eager from now on
        _broken = True
        warnings.warn(
            f"diffusion_filters: torch.compile fast path disabled ({type(err).__name__}: {err}); "
            "using the eager scheme",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def run_chunked(
    t: torch.Tensor,
    tensors: dict[str, torch.Tensor],
    run: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
    chunk_elements: int = 1 << 17,
) -> torch.Tensor:
    """Gradient-free ``run(planes, params)`` over cache-sized chunks of the planes of ``t`` (B, C, H, W).

    Like :func:`diffusion_filters._planewise.run_planewise`, but every worker (one per intra-op
    thread, each limited to one thread) also writes its result into a preallocated output, so no
    multi-threaded ``torch.cat`` (slow on a shared CPU) is needed. ``tensors`` of shape
    ``(1|B, 1|C, 1, 1)`` are expanded per plane and sliced with the chunk. Runs under
    ``torch.no_grad``; the result does not depend on the number of workers.
    """
    from concurrent.futures import ThreadPoolExecutor

    b, c, h, w = t.shape
    total = b * c
    planes = t.reshape(total, 1, h, w)
    flat = {k: v.expand(b, c, 1, 1).reshape(total, 1, 1, 1) for k, v in tensors.items()}
    out = torch.empty_like(planes)
    n = total if t.device.type != "cpu" else max(1, chunk_elements // (h * w))
    starts = list(range(0, total, n))

    # Grad and inference mode are thread-local: carry the caller's into the workers, or writing
    # into ``out`` (an inference tensor when the caller is in inference mode) fails there.
    inference = torch.is_inference_mode_enabled()

    def task(i: int, single_thread: bool) -> None:
        if single_thread:
            torch.set_num_threads(1)  # per-thread setting: the caller's thread is unaffected
        with torch.inference_mode(inference), torch.no_grad():
            out[i : i + n].copy_(run(planes[i : i + n], {k: v[i : i + n] for k, v in flat.items()}))

    workers = min(torch.get_num_threads(), len(starts))
    if workers <= 1:
        for i in starts:
            task(i, False)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda i: task(i, True), starts))
    return out.reshape(b, c, h, w)
