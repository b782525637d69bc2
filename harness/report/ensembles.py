"""Seed ensembles in the report: how many networks each run averaged and how far their scores spread.

A run with ``training.seeds`` > 1 stores each member's primary scores (run column ``ensemble``,
:mod:`harness.training.ensemble`); the spread of those scores inside a run is the seed noise the
ensemble averages away, shown per arm as the mean of the runs' member SDs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.report.inputs import Inputs


def ensemble_spread(inputs: Inputs, arm: str) -> dict[str, Any] | None:
    """``{"seeds": S, "runs": n, "member_sd_mean": {level/aggregation/metric: mean SD}}`` of an arm whose
    runs are seed ensembles; None when they are single networks."""
    done = inputs.done
    if "ensemble" not in done:
        return None
    records = [r for r in done.loc[done["arm"] == arm, "ensemble"] if isinstance(r, Mapping)]
    if not records:
        return None
    keys = sorted({k for r in records for k in (r.get("member_sd") or {})})
    sds = {}
    for key in keys:
        values = np.array([r["member_sd"].get(key) for r in records if r.get("member_sd", {}).get(key) is not None],
                          dtype=np.float64)
        sds[key] = float(values.mean()) if len(values) else None
    return {"seeds": int(max(int(r.get("n", 0)) for r in records)), "runs": len(records), "member_sd_mean": sds}


def ensemble_line(inputs: Inputs, arms: list[str], metric_key: str) -> str:
    """One sentence for the cost section, or '' when no arm averaged several networks per run."""
    parts = []
    seeds = set()
    for arm in arms:
        e = ensemble_spread(inputs, arm)
        if e is None:
            continue
        seeds.add(e["seeds"])
        sd = e["member_sd_mean"].get(metric_key)
        parts.append(f"{arm} {sd:.3f}" if sd is not None else f"{arm} –")
    if not parts:
        return ""
    return (f"Each run averages the predictions of {'/'.join(str(s) for s in sorted(seeds))} networks trained with "
            f"different seeds (training.seeds); the mean SD of their {metric_key.replace('/', ' ')} inside a run "
            f"(the seed noise the average removes): {', '.join(parts)}.")


__all__ = ["ensemble_line", "ensemble_spread"]
