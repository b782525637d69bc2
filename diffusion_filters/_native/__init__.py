"""Kernels in C, built at first use with the system's C compiler and called through ctypes.

Why C and ctypes rather than ``torch.utils.cpp_extension``: the kernels need nothing from torch
but float pointers, and compiling torch's headers takes about a minute per build, against well
under a second for one plain C file; ctypes releases the GIL during the call, so the scheduler's
workers (:mod:`diffusion_filters._scheduler`) run them in parallel.

The shared library is built once per source, compiler and CPU (``-march=native``) into
``$DIFFUSION_FILTERS_CACHE/native`` (default ``~/.cache/diffusion_filters/native``), written
to a temporary file and renamed, so concurrent processes never load a half-written library.

Control with the environment variable ``DIFFUSION_FILTERS_NATIVE``:

* ``auto`` (default): use the kernels where they apply; if the build fails (no compiler, say),
  warn once with the reason and use the torch paths (same results to float rounding);
* ``off``: never use them;
* ``require``: raise :class:`NativeBuildError` (one line: the compiler and its first error) instead
  of falling back.

:func:`native_status` says, per kernel, whether it is in use and why not.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = ["ENV", "FLAGS", "NativeBuildError", "call", "library", "native_mode", "native_status", "plane_values",
           "run_in_place"]

ENV = "DIFFUSION_FILTERS_NATIVE"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffinite-math-only", "-std=c11",
         "-fPIC", "-shared")
"""Compiler flags. ``-ffinite-math-only`` lets GCC vectorise the float-to-int conversion of the
exponential (inputs are checked finite before any kernel runs, outputs after); no ``-ffast-math``,
which would also let the compiler reorder the scheme's arithmetic."""

_SOURCES = {"perona_malik": "perona_malik.c", "srad": "srad.c", "nonlocal_means": "nonlocal_means.c",
            "tensor_diffusion": "tensor_diffusion.c"}
_HEADERS = ("column_sums.h", "fastmath.h")  # included by the sources: part of every build's identity
_MODES = ("auto", "off", "require")
_libraries: dict[str, ctypes.CDLL | None] = {}
_failures: dict[str, str] = {}


class NativeBuildError(RuntimeError):
    """A native kernel could not be built or loaded (one line: what was run and what it said)."""


def native_mode() -> str:
    """``auto``, ``off`` or ``require``, from ``DIFFUSION_FILTERS_NATIVE``."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in _MODES:
        raise ValueError(f"{ENV}={value!r} is invalid; accepted: {', '.join(_MODES)}")
    return value


def library(name: str) -> ctypes.CDLL | None:
    """The loaded kernel library ``name`` (built if needed), or None where it cannot be used."""
    mode = native_mode()
    if mode == "off":
        return None
    if name in _libraries:
        if _libraries[name] is None and mode == "require":
            raise NativeBuildError(_failures[name])
        return _libraries[name]
    try:
        lib = ctypes.CDLL(str(_build(name)))
        _declare(name, lib)
    except (NativeBuildError, OSError) as err:
        _libraries[name] = None
        _failures[name] = f"diffusion_filters: native kernel {name!r} unavailable: {err}"
        if mode == "require":
            raise NativeBuildError(_failures[name]) from err
        warnings.warn(_failures[name] + f" (using the torch path; {ENV}=off silences this)", RuntimeWarning,
                      stacklevel=3)
        return None
    _libraries[name] = lib
    return lib


def plane_values(t: torch.Tensor | float, n: int) -> torch.Tensor:
    """A per-plane parameter (``(n, 1, 1, 1)`` or any shape of ``n`` values, or one float for every
    plane) as contiguous float32 for C."""
    if not isinstance(t, torch.Tensor):
        return torch.full((n,), float(t), dtype=torch.float32)
    return t.reshape(n).to(torch.float32).contiguous()


def call(lib: ctypes.CDLL, entry: str, *args: object) -> None:
    """Call ``lib.entry(*args)`` (tensors are passed as data pointers, None as NULL) and check its status."""
    fn = getattr(lib, entry)
    rc = fn(*(a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args))
    if rc == -2:
        raise MemoryError(f"diffusion_filters: {entry}: the C kernel could not allocate its scratch buffers")
    if rc != 0:
        raise RuntimeError(f"diffusion_filters: {entry} returned {rc} (invalid arguments)")


def run_in_place(name: str, entry: str, planes: torch.Tensor, *args: object) -> torch.Tensor | None:
    """``entry(out, n, H, W, *args)`` of library ``name`` on a contiguous copy ``out`` of the float32
    CPU ``planes`` (n, 1, H, W), which the kernel updates in place; None where the library is
    unavailable (the caller runs its torch path)."""
    lib = library(name)
    if lib is None:
        return None
    n, _, h, w = planes.shape
    out = planes.clone(memory_format=torch.contiguous_format)
    call(lib, entry, out, n, h, w, *args)
    return out


def native_status() -> dict[str, str]:
    """Per kernel: ``"in use: PATH"``, ``"off"`` or ``"unavailable: REASON"`` (builds it if needed)."""
    out = {}
    for name in _SOURCES:
        if native_mode() == "off":
            out[name] = f"off ({ENV}=off)"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lib = library(name)
        out[name] = f"in use: {lib._name}" if lib is not None else f"unavailable: {_failures.get(name, '?')}"
    return out


def _declare(name: str, lib: ctypes.CDLL) -> None:
    f, p, i, lg = ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    if name == "perona_malik":
        lib.pm_planes.restype = i
        lib.pm_planes.argtypes = [p, lg, i, i, i, i, p, p, p, f, f]
        lib.pm_mixture_planes.restype = i
        lib.pm_mixture_planes.argtypes = [p, p, lg, i, i, i, p, p, p]
        lib.pm_mixture_backward.restype = i
        lib.pm_mixture_backward.argtypes = [p, p, p, lg, i, i, i, p, p, p, p, p, p]
    elif name == "srad":
        lib.srad_planes.restype = i
        lib.srad_planes.argtypes = [p, lg, i, i, i, p, p]
    elif name == "tensor_diffusion":
        lib.tensor_planes.restype = i
        lib.tensor_planes.argtypes = [p, lg, i, i, i, i, p, p, p, p, i, i, f, i]
        lib.tpm_planes.restype = i
        lib.tpm_planes.argtypes = [p, p, lg, i, i, i, p, p, p, i, f]
        lib.tpm_backward.restype = i
        lib.tpm_backward.argtypes = [p, p, p, lg, i, i, i, p, p, p, p, p, p, i, f]
    elif name == "nonlocal_means":
        lib.nlm_planes.restype = i
        lib.nlm_planes.argtypes = [p, p, lg, i, i, i, i, f, f]


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise NativeBuildError("no C compiler found (set CC, or install gcc or clang)")
    return cc


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags where Linux lists them."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("DIFFUSION_FILTERS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "diffusion_filters") / "native"


def _build(name: str) -> Path:
    cc = _compiler()
    source = Path(__file__).with_name(_SOURCES[name])
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise NativeBuildError(f"{cc} --version failed: {err}") from err
    headers = [source.with_name(hname).read_text() for hname in _HEADERS]
    key = hashlib.sha256(
        "\0".join([source.read_text(), *headers, " ".join(FLAGS), version, platform.machine(), _cpu_signature()])
        .encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"{name}-{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so.tmp")
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, "-o", tmp, str(source), "-lm"], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
            raise NativeBuildError(f"{cc} {' '.join(FLAGS)} {source.name} failed: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
