"""Multiple-comparison adjustment shared by the statistics modules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["holm"]


def holm(pvalues: Sequence[float] | np.ndarray) -> list[float]:
    """Holm (1979) step-down adjusted p-values via ``statsmodels`` ``multipletests(method='holm')``.

    NaN entries (a test that could not be computed) stay NaN and do not count towards the
    number of hypotheses; the order of the input is kept. Values must lie in [0, 1].
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues: expected a 1-D sequence, got shape {p.shape}")
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("pvalues: every p-value must lie in [0, 1] (or be NaN)")
    out = np.full(p.shape, np.nan)
    if finite.any():
        from statsmodels.stats.multitest import multipletests

        out[finite] = multipletests(p[finite], method="holm")[1]
    return [float(v) for v in out]
