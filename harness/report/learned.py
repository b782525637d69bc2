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


@dataclass
class ParameterChanges:
    """Per arm and parameter (each layer apart): ``initial`` (channels,) before training, and
    ``final`` (runs, channels) at the selected epoch of every run that recorded both."""

    initial: Values
    final: Values
    run_ids: dict[str, list[str]]

    def drift(self) -> Values:
        """``final - initial`` per arm and parameter, (runs, channels)."""
        return {arm: {name: f - self.initial[arm][name][None, :] for name, f in params.items()}
                for arm, params in self.final.items()}


def parameter_changes(done: pd.DataFrame) -> ParameterChanges:
    """Initial and final diffusion parameters of the done runs (stores written before the
    initial values were recorded give an empty result)."""
    initial: dict[str, dict[str, np.ndarray]] = {}
    finals: dict[str, dict[str, list[np.ndarray]]] = {}
    run_ids: dict[str, list[str]] = {}
    if "initial_params" not in done.columns:
        return ParameterChanges({}, {}, {})
    for row in done.sort_values(["repeat", "fold"]).itertuples(index=False):
        start = row.initial_params if isinstance(row.initial_params, Mapping) else {}
        end = row.learned_params if isinstance(row.learned_params, Mapping) else {}
        shared = [n for n in start if n in end and np.size(start[n]) == np.size(end[n]) and np.size(end[n])]
        for name in shared:
            initial.setdefault(row.arm, {}).setdefault(name, _flat(start[name]))
            finals.setdefault(row.arm, {}).setdefault(name, []).append(_flat(end[name]))
        if shared:
            run_ids.setdefault(row.arm, []).append(str(row.run_id))
    final = {a: {n: np.vstack(v) for n, v in d.items()} for a, d in finals.items()}
    return ParameterChanges(initial, final, run_ids)


def learned_record(changes: ParameterChanges) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary.json``'s ``arms.<arm>.learned``: per parameter its initial values (per
    channel), the mean and s.d. over runs of the final values (per channel), and every run's."""
    return {
        arm: {
            name: {
                "initial": changes.initial[arm][name].tolist(),
                "final_mean": final.mean(axis=0).tolist(),
                "final_std": final.std(axis=0).tolist(),
                "per_run": [{"run_id": rid, "values": f.tolist()}
                            for rid, f in zip(changes.run_ids[arm], final, strict=True)],
            }
            for name, final in params.items()
        }
        for arm, params in changes.final.items()
    }
