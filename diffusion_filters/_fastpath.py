"""Optional ``torch.compile`` fast path for explicit diffusion schemes (inference only).

Why: an explicit diffusion iteration is a handful of element-wise passes over the image. In eager
PyTorch each pass is a separate sweep through memory, so a 32x256x256 batch runs at roughly the
speed of a numpy loop. Compiling K unrolled iterations with inductor fuses each iteration into
three vectorised loops (the vertical and horizontal edge fluxes, each computed once, then the
update). The callers run it on cache-sized chunks of planes, one single-threaded worker per core
(:func:`run_chunked`), so no OpenMP barrier is needed; the kernels are built with inductor's C++
wrapper, which releases the GIL, so the workers really run in parallel (see :func:`run_compiled`).

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
import threading
import warnings
from collections.abc import Callable

import torch

__all__ = ["AUTO_MIN_WORK", "compile_mode", "run_compiled", "set_compile", "use_compiled"]

AUTO_MIN_WORK = 2**25
"""Pixel-iterations (B*C*H*W*iterations) from which ``"auto"`` compiles (~25 images 256² x 20 it.)."""

_MODES = {"auto": "auto", "1": "on", "on": "on", "true": "on", "0": "off", "off": "off", "false": "off"}
_mode = _MODES.get(os.environ.get("DIFFUSION_FILTERS_COMPILE", "auto").strip().lower(), "auto")
_broken = False
_no_cpp_wrapper = False  # set when inductor's C++ wrapper fails to build (see run_compiled)
_compiled: dict[tuple[Callable, bool, bool], Callable] = {}
_fast_exp = threading.local()  # .on: this thread is compiling a fast-exp graph (see _install_fast_exp)


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


def run_compiled(
    fn: Callable[..., torch.Tensor], *args: object, release_gil: bool = False, fast_exp: bool = False
) -> torch.Tensor | None:
    """Run ``torch.compile(fn)(*args)``; ``None`` (and a one-time warning) if compiling fails.

    Dimension 0 of every tensor argument with 2 or more dimensions (the planes of a chunk and
    their per-plane parameters) is marked dynamic so chunks of different sizes share one graph.

    ``release_gil=True`` compiles with inductor's C++ wrapper, whose entry point releases the
    GIL while the kernels run. Why: inductor's default Python wrapper calls each C++ kernel with
    the GIL held, so the single-threaded workers of :func:`run_chunked` would run one at a time
    (measured: two workers as slow as one). The C++ wrapper lengthens the first compilation
    (PM benchmark batch, empty cache: ~13 s; later processes hit inductor's on-disk cache). If it fails to build, the default wrapper is used from then on
    (a warning says so), and if that fails too, the caller's eager scheme.

    ``fast_exp=True`` makes the vectorised C++ kernels compiled for this call use ATen's
    ``Vectorized::exp_u20`` (max. error 20 ulp, ~1.2e-6 relative) instead of ``exp`` (SLEEF, 1 ulp):
    in the Perona-Malik iteration the two exponentials per pixel are ~75% of the time and the
    faster one saves ~20% of it (measured), far below the 1e-5 agreement with MedPy.
    """
    global _broken, _no_cpp_wrapper
    if _broken:
        return None
    mark_dynamic = [a for a in args if isinstance(a, torch.Tensor) and a.dim() >= 2 and a.shape[0] > 1]
    if release_gil and not _no_cpp_wrapper:
        for a in mark_dynamic:
            torch._dynamo.maybe_mark_dynamic(a, 0)
        try:
            with _fast_exp_scope(fast_exp) as fast:
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
        with _fast_exp_scope(fast_exp) as fast:
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


class _fast_exp_scope:
    """Within the scope, inductor code generated *by this thread* uses ``exp_u20`` for vector exp.

    Inductor has no option for it, so ``CppVecOverrides.exp`` is wrapped once (if this torch has
    it; otherwise nothing changes) by a function that consults a thread-local flag: compilations
    by other threads or outside the scope are unaffected. Code generation runs in the thread that
    calls the compiled function, so the flag is seen by it. Inductor's on-disk cache stores the
    generated code: the graphs compiled here are the library's own (compiled only with the flag).
    """

    def __init__(self, on: bool) -> None:
        self.on = on and _install_fast_exp()

    def __enter__(self) -> bool:
        if self.on:
            _fast_exp.on = True
        return self.on

    def __exit__(self, *exc: object) -> None:
        if self.on:
            _fast_exp.on = False


_fast_exp_installed: bool | None = None
_fast_exp_lock = threading.Lock()  # the chunk workers compile concurrently: install exactly once


def _install_fast_exp() -> bool:
    """Wrap inductor's vectorised C++ ``exp`` once (see :class:`_fast_exp_scope`); False if impossible."""
    global _fast_exp_installed
    with _fast_exp_lock:
        if _fast_exp_installed is None:
            try:
                from torch._inductor.codegen.cpp import CppVecOverrides

                original = CppVecOverrides.exp

                def exp(x: object) -> str:
                    return f"{x}.exp_u20()" if getattr(_fast_exp, "on", False) else original(x)

                CppVecOverrides.exp = staticmethod(exp)
                _fast_exp_installed = True
            except (ImportError, AttributeError):
                _fast_exp_installed = False
        return _fast_exp_installed


def _fast_exp_cache_key() -> object:
    """A no-op inductor graph pass whose ``uuid`` marks fast-exp compilations in the cache key.

    Why: inductor's on-disk cache keys a graph by its structure and the inductor config, not by
    the code-generation patch of :class:`_fast_exp_scope`; without this, a graph cached without
    the flag would be reused with it (and vice versa).
    """
    from torch._inductor.custom_graph_pass import CustomGraphPass

    class _FastExpKey(CustomGraphPass):
        def __call__(self, graph: torch.fx.graph.Graph) -> None:
            return None

        def uuid(self) -> str:
            return "diffusion_filters.fast_exp.exp_u20.v1"

    return _FastExpKey()


def _compiled_fn(fn: Callable[..., torch.Tensor], cpp_wrapper: bool, fast_exp: bool = False) -> Callable[..., torch.Tensor]:
    """The (cached) ``torch.compile`` wrapper of ``fn``; one per wrapper kind and exp flavour."""
    key = (fn, cpp_wrapper, fast_exp)
    compiled = _compiled.get(key)
    if compiled is None:
        options: dict[str, object] = {"cpp_wrapper": True} if cpp_wrapper else {}
        if fast_exp:
            options["post_grad_custom_post_pass"] = _fast_exp_cache_key()
        compiled = _compiled[key] = torch.compile(fn, fullgraph=True, options=options or None)
    return compiled


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
