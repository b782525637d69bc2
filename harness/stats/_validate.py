"""Input checks shared by the statistics modules.

Every public statistics function accepts Python sequences or numpy arrays; these helpers turn
them into float64 / int arrays and raise ``ValueError`` with one line that names the argument
and says what is accepted, so a report built from a damaged results store fails loudly instead
of printing a p-value computed from NaNs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ArrayLike1D = Sequence[float] | np.ndarray


def as_float_array(values: Any, name: str, ndim: int, expected: str) -> np.ndarray:
    """Return ``values`` as a float64 array with ``ndim`` dimensions or raise ``ValueError``.

    ``expected`` describes what is accepted, e.g. ``"a 1-D sequence of numbers"``. Finiteness
    is left to the caller, which knows how to name a bad position (index, (run, arm), ...).
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected {expected} ({exc})") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {expected}, got shape {arr.shape}")
    return arr


def as_float_vector(values: Any, name: str, *, min_len: int = 1) -> np.ndarray:
    """Return ``values`` as a finite 1-D float64 array or raise ``ValueError``.

    ``min_len`` is the smallest number of entries the caller can work with.
    """
    arr = as_float_array(values, name, 1, "a 1-D sequence of numbers")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name}: {bad.size} non-finite value(s) (NaN/inf) at position(s) "
            f"{bad[:10].tolist()}; drop or repair those runs first"
        )
    if arr.size < min_len:
        raise ValueError(f"{name}: need at least {min_len} value(s), got {arr.size}")
    return arr


def same_length(**arrays: np.ndarray) -> int:
    """Check that all named arrays have one common length and return it."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise ValueError(f"length mismatch ({desc}); the inputs must be paired element by element")
    return next(iter(lengths.values()))


def as_binary_labels(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as an int8 array of 0/1 labels or raise ``ValueError``."""
    arr = as_float_vector(values, name)
    if not np.all((arr == 0) | (arr == 1)):
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        raise ValueError(
            f"{name}: labels must be 0 or 1; got {arr[bad[0]]!r} at position {int(bad[0])}"
        )
    return arr.astype(np.int8)


def check_probability(value: float, name: str, *, open_interval: bool = True) -> float:
    """Check ``0 < value < 1`` (or ``0 <= value <= 1``) and return it as float."""
    v = float(value)
    ok = (0.0 < v < 1.0) if open_interval else (0.0 <= v <= 1.0)
    if not np.isfinite(v) or not ok:
        bounds = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"{name}: must lie in {bounds}, got {value!r}")
    return v
