"""The compile policy: when a diffusion scheme runs through ``torch.compile``, in one place.

Why: an explicit diffusion iteration is a handful of element-wise passes over the image. In eager
PyTorch each pass is a separate sweep through memory. Compiling the iterations with inductor
fuses each into a few vectorised loops. Two callers use it:

* gradient-free Perona–Malik calls (:mod:`diffusion_filters.perona_malik`): K unrolled
  iterations per compiled call, on cache-sized chunks of planes, one single-threaded worker per
  core (:func:`diffusion_filters._scheduler.run_planes`); compiled from :data:`AUTO_MIN_WORK`
  pixel-iterations on;
* training calls of the learnable Perona–Malik layers (:mod:`diffusion_filters.layers`): each
  iteration, forward and backward, compiled on CPU from :data:`GRAD_MIN_WORK` pixel-iterations on.

Control with the environment variable ``DIFFUSION_FILTERS_COMPILE`` or :func:`set_compile`:

* ``"auto"`` (default): compile on CPU when a call is large enough (the thresholds above). The
  first such call per shape pays the compile time (seconds; inductor caches it on disk for
  later processes);
* ``"1"`` / ``"on"``: compile every gradient-free call on any device, and every training call
  on CPU;
* ``"0"`` / ``"off"``: never compile, and no C kernel either: the eager torch scheme everywhere
  (the reference the fast paths are tested against).

Gradient-free float32 CPU calls of Perona–Malik, SRAD, non-local means, CED and EED run C kernels instead,
where they can be built (:func:`use_native`, :mod:`diffusion_filters._native`).

If compilation fails (no C++ compiler, unsupported platform) a warning is issued once and the
eager scheme is used from then on; results are the same either way (to float rounding).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from . import _inductor_fast_exp

__all__ = ["AUTO_MIN_WORK", "GRAD_MIN_WORK", "compile_mode", "run_compiled", "run_compiled_iterations",
           "set_compile", "use_compiled", "use_native"]

AUTO_MIN_WORK = 2**25
"""Pixel-iterations (B*C*H*W*iterations) from which a gradient-free call compiles in ``"auto"``
(~25 images 256² x 20 iterations)."""

GRAD_MIN_WORK = 2**24
"""Pixel-iterations from which a training (gradient) call compiles on CPU in ``"auto"`` (the
stem at 128 px with batch 32 and 4 iterations); smaller calls do not repay the compile time."""

_MODES = {"auto": "auto", "1": "on", "on": "on", "true": "on", "0": "off", "off": "off", "false": "off"}
_mode = _MODES.get(os.environ.get("DIFFUSION_FILTERS_COMPILE", "auto").strip().lower(), "auto")
_broken = False
_no_cpp_wrapper = False  # set when inductor's C++ wrapper fails to build (see run_compiled)
_compiled: dict[tuple[Callable, bool, bool], Callable] = {}


def set_compile(mode: str) -> None:
    """Set the compile mode: ``"auto"``, ``"on"`` or ``"off"`` (see the module docstring)."""
    global _mode
    key = str(mode).strip().lower()
    if key not in _MODES:
        raise ValueError(f"set_compile: mode={mode!r} is invalid; accepted: auto, on, off")
    _mode = _MODES[key]


def compile_mode() -> str:
    """Current compile mode (``"auto"``, ``"on"`` or ``"off"``)."""
    return _mode


def use_compiled(x: torch.Tensor, iterations: int, *, needs_grad: bool = False) -> bool:
    """Whether a call on ``x`` with ``iterations`` should take a compiled path.

    Gradient-free calls: any device in ``"on"``, CPU from :data:`AUTO_MIN_WORK` in ``"auto"``.
    Training calls: CPU only (on a GPU the eager kernels are not memory-bound in the same way),
    from :data:`GRAD_MIN_WORK` in ``"auto"``.
    """
    if _broken or _mode == "off" or iterations == 0:
        return False
    work = x.numel() * iterations
    if needs_grad:
        return x.device.type == "cpu" and (_mode == "on" or work >= GRAD_MIN_WORK)
    if _mode == "on":
        return True
    return x.device.type == "cpu" and work >= AUTO_MIN_WORK


def use_native(x: torch.Tensor, iterations: int = 1) -> bool:
    """Whether a gradient-free call on ``x`` may take a C kernel (:mod:`diffusion_filters._native`):
    float32 on a CPU, unless the compile mode is ``"off"`` (the eager torch reference everywhere)."""
    return _mode != "off" and iterations > 0 and x.device.type == "cpu" and x.dtype == torch.float32 \
        and min(x.shape[-2], x.shape[-1]) >= 2


def run_compiled(
    fn: Callable[..., torch.Tensor], *args: object, release_gil: bool = False, fast_exp: bool = False
) -> torch.Tensor | None:
    """Run ``torch.compile(fn)(*args)``; ``None`` (and a one-time warning) if compiling fails.

    Dimension 0 of every tensor argument with 2 or more dimensions (the planes of a chunk and
    their per-plane parameters) is marked dynamic so chunks of different sizes share one graph.

    ``release_gil=True`` compiles with inductor's C++ wrapper, whose entry point releases the
    GIL while the kernels run. Why: inductor's default Python wrapper calls each C++ kernel with
    the GIL held, so the single-threaded workers of the scheduler would run one at a time. The
    C++ wrapper lengthens the first compilation (later processes hit inductor's on-disk cache).
    If it fails to build, the default wrapper is used from then on (a warning says so), and if
    that fails too, the caller's eager scheme.

    ``fast_exp=True``: the vectorised kernels use ``exp_u20`` (see
    :mod:`diffusion_filters._inductor_fast_exp`).
    """
    global _broken, _no_cpp_wrapper
    if _broken:
        return None
    mark_dynamic = [a for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2 and a.shape[0] > 1]
    if release_gil and not _no_cpp_wrapper:
        for a in mark_dynamic:
            torch._dynamo.maybe_mark_dynamic(a, 0)
        try:
            with _inductor_fast_exp.fast_exp_scope(fast_exp) as fast:
                return _compiled_fn(fn, True, fast)(*args)
        except Exception as err:  # noqa: BLE001 - a C++-wrapper build failure: use the default wrapper
            _no_cpp_wrapper = True
            warnings.warn(
                f"diffusion_filters: torch.compile C++ wrapper unavailable ({type(err).__name__}: {err}); "
                "compiled kernels will hold the GIL (slower with several threads)",
                RuntimeWarning,
                stacklevel=3,
            )
    for a in mark_dynamic:
        torch._dynamo.maybe_mark_dynamic(a, 0)
    try:
        with _inductor_fast_exp.fast_exp_scope(fast_exp) as fast:
            return _compiled_fn(fn, False, fast)(*args)
    except Exception as err:  # noqa: BLE001 - any backend failure means: use eager from now on
        _broken = True
        warnings.warn(
            f"diffusion_filters: torch.compile fast path disabled ({type(err).__name__}: {err}); "
            "using the eager scheme",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def run_compiled_iterations(step_fn: Callable[..., torch.Tensor], u: torch.Tensor, iterations: int,
                            *params: object) -> torch.Tensor | None:
    """``iterations`` calls ``u = torch.compile(step_fn)(u, *params)`` (:func:`run_compiled`); None
    if compiling fails (the caller then runs its eager scheme)."""
    v: torch.Tensor | None = u
    for _ in range(iterations):
        v = run_compiled(step_fn, v, *params)
        if v is None:
            return None
    return v


def _compiled_fn(fn: Callable[..., torch.Tensor], cpp_wrapper: bool, fast_exp: bool = False) -> Callable[..., torch.Tensor]:
    """The (cached) ``torch.compile`` wrapper of ``fn``; one per wrapper kind and exp flavour."""
    key = (fn, cpp_wrapper, fast_exp)
    compiled = _compiled.get(key)
    if compiled is None:
        options: dict[str, object] = {"cpp_wrapper": True} if cpp_wrapper else {}
        if fast_exp:
            options["post_grad_custom_post_pass"] = _inductor_fast_exp.cache_key_pass()
        compiled = _compiled[key] = torch.compile(fn, fullgraph=True, options=options or None)
    return compiled
