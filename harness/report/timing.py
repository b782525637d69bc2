"""What each arm costs: preprocessing, training, inference and memory, from the stored timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.report.inputs import Inputs

TIMING_COLUMNS = (
    # (key in the summary, label, decimals shown)
    ("preprocessing_seconds", "preprocessing (s)", 2),
    ("train_seconds", "training (s / run)", 1),
    ("inference_ms_per_image", "inference (ms / image)", 3),
    ("peak_rss_mb", "peak memory (MB)", 0),
)
RUN_TIMINGS = ("train_seconds", "inference_ms_per_image", "peak_rss_mb")

# timing key -> arm -> mean over runs
Cost = dict[str, dict[str, float]]


def timing(inputs: Inputs, arms: Sequence[str]) -> Cost:
    """Mean cost per arm: preprocessing (store), training and inference (run timings), memory."""
    out: Cost = {key: {} for key, _, _ in TIMING_COLUMNS}
    for arm in arms:
        out["preprocessing_seconds"][arm] = _preprocessing_seconds(inputs, arm)
        runs = inputs.done[inputs.done["arm"] == arm]
        for key in RUN_TIMINGS:
            vals = [t.get(key) for t in runs["timings"] if isinstance(t, Mapping)]
            vals = [float(v) for v in vals if v is not None and np.isfinite(float(v))]
            out[key][arm] = float(np.mean(vals)) if vals else float("nan")
    return out


def _preprocessing_seconds(inputs: Inputs, arm: str) -> float:
    pre = inputs.preprocessing
    if len(pre) and arm in set(pre["arm"]):
        return float(pre.loc[pre["arm"] == arm, "seconds"].sum())
    if not inputs.arm_config(arm).get("preprocess"):
        return 0.0  # nothing to filter
    return float("nan")  # it filtered, but the store has no record of the cost


def timing_cell(values: Mapping[str, float], arm: str, baseline: str, digits: int) -> dict[str, Any]:
    """A table cell: the arm's value and its ratio to the baseline's."""
    v = values.get(arm, float("nan"))
    b = values.get(baseline, float("nan"))
    ratio = v / b if np.isfinite(v) and np.isfinite(b) and b > 0 else None
    return {"value": v, "ratio": ratio, "digits": digits}


def devices(done: Any, execution: Mapping[str, Any] | None) -> str:
    """Where the runs trained, for the cost section: each device with its run count and hosts, and how they
    were executed (a Ray request per run; worker processes sharing one machine's GPU)."""
    if not len(done) or "device" not in done:
        return ""
    hosts = done["host"] if "host" in done else [None] * len(done)
    by_device: dict[str, tuple[int, set[str]]] = {}
    for device, host in zip(done["device"], hosts):
        if device is None or (isinstance(device, float) and device != device):
            continue
        n, seen = by_device.get(str(device), (0, set()))
        by_device[str(device)] = (n + 1, seen | ({str(host)} if host else set()))
    parts = [f"{d} ({n} run{'s' if n != 1 else ''} on {len(h)} host{'s' if len(h) != 1 else ''})"
             for d, (n, h) in sorted(by_device.items())]
    text = ", ".join(parts)
    execution = execution or {}
    request = execution.get("request")
    if isinstance(request, Mapping):
        text += (f"; Ray, each run asked for {request.get('cpus_per_run', 0):g} CPU(s) and "
                 f"{request.get('gpus_per_run', 0):g} GPU(s) ({request.get('reason', '')})")
    elif execution.get("shared_gpus"):
        text += (f"; {execution.get('workers')} worker processes shared this machine's {execution['shared_gpus']} "
                 "GPU(s) on purpose, so each run's timings are of a shared card")
    return text

