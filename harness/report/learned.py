"""The diffusion parameters the learnable arms ended with, and their course over the epochs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# arm -> parameter group -> values
Values = dict[str, dict[str, np.ndarray]]


def param_kind(name: str) -> str:
    """``"conv_stem.kappa"`` -> ``"kappa"``: parameters of one kind are pooled over layers in figures."""
    return name.rsplit(".", 1)[-1]


def same_name(name: str) -> str:
    """Keeps each layer's parameter apart (the summary lists every one)."""
    return name


@dataclass
class LearnedParameters:
    """``final[arm][group]``: every value of the group at the end of training (all layers, all
    runs); ``trajectory[arm][group]``: (epochs, runs) array of the group's mean per epoch."""

    final: Values
    trajectory: Values

    @property
    def empty(self) -> bool:
        return not self.final and not self.trajectory


def learned_parameters(
    done: pd.DataFrame, epochs: pd.DataFrame, by: Callable[[str], str] = param_kind
) -> LearnedParameters:
    """Learned parameters of the done runs grouped by ``by(name)``."""
    final: dict[str, dict[str, list[np.ndarray]]] = {}
    for row in done.itertuples(index=False):
        params = row.learned_params if isinstance(row.learned_params, Mapping) else {}
        for name, values in params.items():
            arr = _flat(values)
            if arr.size:
                final.setdefault(row.arm, {}).setdefault(by(name), []).append(arr)
    final_arr = {a: {n: np.concatenate(v) for n, v in d.items()} for a, d in final.items()}
    return LearnedParameters(final_arr, _trajectories(epochs, by))


def _trajectories(epochs: pd.DataFrame, by: Callable[[str], str]) -> Values:
    runs: dict[str, dict[str, list[list[float]]]] = {}
    if not len(epochs) or "learned_params" not in epochs.columns:
        return {}
    for (arm, _run), run_ep in epochs.sort_values("epoch").groupby(["arm", "run_id"], sort=True):
        for group, values in _epoch_means(run_ep["learned_params"], by).items():
            runs.setdefault(arm, {}).setdefault(group, []).append(values)
    return {a: {n: _pad(r) for n, r in d.items()} for a, d in runs.items()}


def _epoch_means(records: pd.Series, by: Callable[[str], str]) -> dict[str, list[float]]:
    """One run's per-epoch mean of each parameter group."""
    series: dict[str, list[float]] = {}
    for params in records:
        if not isinstance(params, Mapping):
            continue
        per_epoch: dict[str, list[np.ndarray]] = {}
        for name, values in params.items():
            per_epoch.setdefault(by(name), []).append(_flat(values))
        for group, arrays in per_epoch.items():
            arr = np.concatenate(arrays)
            series.setdefault(group, []).append(float(arr.mean()) if arr.size else float("nan"))
    return series


def learned_summary(done: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Per arm and parameter (each layer apart): mean, sd, min, max and count at the end of training."""
    final = learned_parameters(done, epochs, by=same_name).final
    return {
        arm: {
            name: {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "min": float(v.min()),
                "max": float(v.max()),
                "n": int(v.size),
            }
            for name, v in params.items()
        }
        for arm, params in final.items()
    }


def _flat(values: Any) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return np.empty(0)
    return arr[np.isfinite(arr)]


def _pad(runs: list[list[float]]) -> np.ndarray:
    """Runs of different lengths (early stopping) as an (epochs, runs) array padded with NaN."""
    n = max(len(r) for r in runs)
    out = np.full((n, len(runs)), np.nan)
    for j, r in enumerate(runs):
        out[: len(r), j] = r
    return out
