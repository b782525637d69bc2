"""The manipulation check as the report shows it (issue 26 §1): did each arm's diffusion act?

Two sources, both read from the store (the report never decodes data):

* preprocessing pipelines: what the driver measured on a sample of the study's frames before
  training (meta ``manipulation`` and ``manipulation_sample``, :mod:`harness.manipulation`, where the
  four measures and the ≈ identity / ≈ Gaussian thresholds are defined);
* learnable layers (diffusion blocks, stems): their parameters before training and at the selected
  epoch (:func:`harness.report.learned.parameter_changes`). A diffusion block is
  ``x + gate (D(x) − x)``: with its gates where they started (0.02) the network is the baseline's up
  to a 2 % residual, so an arm whose gates stayed closed is **≈ baseline (gates closed)**. Gates are
  open when their final mean, over channels, blocks and runs, exceeds :data:`GATE_OPEN_FACTOR` times
  the initial mean or :data:`GATE_OPEN_MIN`.

An arm flagged by either check gets one caveat in its verdict: it is not a test of diffusion. Arms
whose runs were tuned by the nested search ran other filter parameters than the ones checked: their
filter check is shown but not turned into a caveat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.report.learned import ParameterChanges, param_kind
from harness.variants import split_variant

#: Gates are open when their final mean exceeds GATE_OPEN_FACTOR x their initial mean (they moved
#: clearly away from where they started: the reviewer's 0.02 -> 0.017-0.024 did not) ...
GATE_OPEN_FACTOR = 2.0
#: ... or exceeds GATE_OPEN_MIN whatever the start (a tenth of the diffused features mixed in).
GATE_OPEN_MIN = 0.1
NOT_A_TEST = "this arm is not a test of diffusion"


@dataclass(frozen=True)
class LearnedCheck:
    """One learnable arm's diffusion parameters: per kind (kappa, step, shape, gate) the mean of the
    initial values and of the final values (over layers, channels and runs); the gates' verdict."""

    arm: str
    parameters: dict[str, tuple[float, float]]  # kind -> (initial mean, final mean)
    n_runs: int
    gate_initial: float | None = None
    gate_final: float | None = None
    gate_final_max: float | None = None  # the largest channel's final mean
    gates_open: bool | None = None  # None: the arm has no gate (a stem)

    @property
    def closed(self) -> bool:
        return self.gates_open is False

    @property
    def reading(self) -> str:
        if self.gates_open is None:
            return "learned parameters (no gate): " + _moves(self.parameters)
        state = "open" if self.gates_open else "≈ baseline (gates closed)"
        return (f"{state}: gate mean {self.gate_initial:.3f} → {self.gate_final:.3f} (largest channel "
                f"{self.gate_final_max:.3f}; open above {GATE_OPEN_FACTOR:g} × the initial or {GATE_OPEN_MIN:g})")

    def as_dict(self) -> dict[str, Any]:
        return {"parameters": {k: {"initial_mean": a, "final_mean": b} for k, a, b in
                               ((k, *v) for k, v in self.parameters.items())},
                "n_runs": self.n_runs, "gate_initial_mean": self.gate_initial, "gate_final_mean": self.gate_final,
                "gate_final_max": self.gate_final_max, "gates_open": self.gates_open,
                "gates_closed": self.closed, "reading": self.reading}


def _moves(parameters: Mapping[str, tuple[float, float]]) -> str:
    return ", ".join(f"{k} {a:.3g} → {b:.3g}" for k, (a, b) in parameters.items()) or "none recorded"


@dataclass(frozen=True)
class ManipulationRow:
    """One arm of the manipulation table: its filter check (the stored record) and/or its learnable
    layers' check; ``caveat`` the sentence its verdict gets when flagged."""

    arm: str
    filter: dict[str, Any] | None
    learned: LearnedCheck | None
    tuned: bool = False
    caveat: str | None = None

    @property
    def flagged(self) -> bool:
        return self.caveat is not None

    @property
    def reading(self) -> str:
        parts = []
        if self.filter is not None:
            parts.append(str(self.filter.get("reading", "")))
        if self.learned is not None:
            parts.append(self.learned.reading)
        text = "; ".join(p for p in parts if p)
        if self.tuned and self.filter is not None:
            text += " (checked with the suite's own filter parameters; the tuned runs chose others)"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "filter": self.filter, "learned": self.learned.as_dict() if self.learned else None,
                "tuned": self.tuned, "flagged": self.flagged, "reading": self.reading, "caveat": self.caveat}


@dataclass(frozen=True)
class Manipulation:
    """The table's rows (suite order) and the sample the filters were checked on (empty: no check)."""

    rows: list[ManipulationRow] = field(default_factory=list)
    sample: dict[str, Any] = field(default_factory=dict)

    def row(self, arm: str) -> ManipulationRow | None:
        return next((r for r in self.rows if r.arm == arm), None)

    def as_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "gate_open": {"factor": GATE_OPEN_FACTOR, "min": GATE_OPEN_MIN},
                "arms": [r.as_dict() for r in self.rows]}


def learned_check(arm: str, changes: ParameterChanges) -> LearnedCheck | None:
    """The learnable layers of ``arm`` before and after training (None: it recorded none)."""
    initial, final = changes.initial.get(arm, {}), changes.final.get(arm, {})
    if not final:
        return None
    kinds: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for name, values in final.items():
        start, end = kinds.setdefault(param_kind(name), ([], []))
        start.append(np.asarray(initial[name], dtype=np.float64).ravel())
        end.append(np.asarray(values, dtype=np.float64).ravel())
    params = {k: (float(np.concatenate(a).mean()), float(np.concatenate(b).mean())) for k, (a, b) in kinds.items()}
    n_runs = len(changes.run_ids.get(arm, []))
    if "gate" not in kinds:
        return LearnedCheck(arm, params, n_runs)
    g0, g1 = params["gate"]
    per_channel = [np.asarray(final[n], dtype=np.float64).mean(axis=0) for n in final if param_kind(n) == "gate"]
    opened = bool(g1 > GATE_OPEN_FACTOR * g0 or g1 > GATE_OPEN_MIN)
    return LearnedCheck(arm, params, n_runs, g0, g1, float(np.concatenate(per_channel).max()), opened)


def _caveat(record: Mapping[str, Any] | None, learned: LearnedCheck | None, tuned: bool) -> str | None:
    said = []
    if record is not None and not tuned and record.get("error") is None:
        if record.get("identity"):
            said.append(f"≈ identity (its preprocessing changes the frames by {float(record['relative_change']):.2%}, "
                        "under 1 %)")
        elif record.get("gaussian_control"):
            said.append(f"≈ the Gaussian control {record.get('control')} (anisotropy "
                        f"{float(record['anisotropy']):.2f}: the control reproduces its change up to that share of it)")
        elif record.get("gaussian_like"):
            said.append(f"≈ a Gaussian of σ {float(record['matched_sigma']):g} px (anisotropy "
                        f"{float(record['anisotropy_matched']):.2f}: that Gaussian reproduces its change up to that "
                        "share of it)")
    if learned is not None and learned.closed:
        said.append(f"≈ baseline (gates closed: mean {learned.gate_initial:.3f} → {learned.gate_final:.3f})")
    if not said:
        return None
    return f"Its manipulation check says {' and '.join(said)}: {NOT_A_TEST}."


def manipulation(meta: Mapping[str, Any], arms: list[str], changes: ParameterChanges) -> Manipulation:
    """The rows of the arms (stored names, e.g. ``pm~tuned``) that have a filter check or learnable layers."""
    records = {str(r.get("arm")): dict(r) for r in meta.get("manipulation") or [] if isinstance(r, Mapping)}
    tuned = {str(r.get("name")): bool(r.get("tuned")) for r in meta.get("run_arms") or [] if isinstance(r, Mapping)}
    rows = []
    for arm in arms:
        record = records.get(split_variant(arm)[0])
        learned = learned_check(arm, changes)
        if record is None and learned is None:
            continue
        is_tuned = tuned.get(arm, False)
        rows.append(ManipulationRow(arm, record, learned, is_tuned, _caveat(record, learned, is_tuned)))
    sample = meta.get("manipulation_sample")
    return Manipulation(rows, dict(sample) if isinstance(sample, Mapping) else {})


def add_caveats(verdicts: list[Any], checks: Manipulation) -> None:
    """Append the manipulation caveat to the verdict of each flagged arm."""
    for v in verdicts:
        row = checks.row(v.arm)
        if row is not None and row.caveat and row.caveat not in v.caveats:
            v.caveats.append(row.caveat)


def _num(value: Any, fmt: str) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "–"
    return format(x, fmt) if np.isfinite(x) else "–"


def cells(row: ManipulationRow) -> dict[str, str]:
    """The table's cells of one row, as text (the page and the Markdown block show the same)."""
    f = row.filter or {}
    if f.get("is_control"):
        aniso = "(the control)"
    elif f.get("anisotropy") is not None:
        aniso = f"{_num(f['anisotropy'], '.2f')} vs {f.get('control')}"
        if f.get("anisotropy_matched") is not None:
            aniso += f"; {_num(f['anisotropy_matched'], '.2f')} vs σ {_num(f.get('matched_sigma'), 'g')}"
    elif f.get("anisotropy_matched") is not None:
        aniso = f"{_num(f['anisotropy_matched'], '.2f')} vs σ {_num(f.get('matched_sigma'), 'g')}"
    else:
        aniso = "–"
    learned = row.learned
    gates = "–"
    if learned is not None:
        gates = (f"gate {learned.gate_initial:.3f} → {learned.gate_final:.3f}" if learned.gate_initial is not None
                 else _moves(learned.parameters))
    return {"arm": row.arm, "steps": " → ".join(f.get("steps") or []) or "–",
            "relative_change": _num(f.get("relative_change"), ".2%") if row.filter else "–",
            "anisotropy": aniso, "speckle": _num(f.get("speckle_cov_ratio"), ".2f") if row.filter else "–",
            "edges": _num(f.get("edge_preservation"), ".2f") if row.filter else "–",
            "learned": gates, "reading": row.reading, "flagged": "yes" if row.flagged else "no"}


def sample_text(checks: Manipulation) -> str:
    """How the filters were checked, in one paragraph (empty when no arm has a filter check)."""
    s = checks.sample
    if not s or not any(r.filter for r in checks.rows):
        return ""
    t = s.get("thresholds") or {}
    return (f"Each arm's preprocessing was applied, before training, to {s.get('n_frames')} of the study's frames "
            f"({s.get('n_patients')} patients, patient-stratified, seed {s.get('seed')}; {float(s.get('seconds', 0)):.2f} s). "
            "Relative change ‖f(x) − x‖/‖x‖ over the frame; anisotropy ‖f(x) − g(x)‖/‖f(x) − x‖ over the fan's "
            "interior, against the Gaussian control arm and against the Gaussian of the σ closest to the arm's "
            f"output; speckle: mean local coefficient of variation ({t.get('window', 7)} × {t.get('window', 7)} "
            "windows) after / before in the fan's most homogeneous windows (below 1: reduced); edges: Sattar et al.'s "
            "(1997) β, the correlation of the Laplacians of f(x) and x at the input's strongest edges (1: kept). "
            f"≈ identity below a relative change of {float(t.get('identity_change', 0.01)):.0%}; ≈ the Gaussian "
            f"control (or ≈ a Gaussian) below an anisotropy of {t.get('gaussian_distance', 0.25)}; the equations "
            "are in docs/theory.md.")


def context(checks: Manipulation) -> dict[str, Any] | None:
    """The page's section (None: no arm has a filter or learnable layers)."""
    if not checks.rows:
        return None
    return {"rows": [cells(r) for r in checks.rows], "sample": sample_text(checks),
            "gates": any(r.learned is not None for r in checks.rows),
            "gate_rule": f"Learnable layers: a diffusion block's gates are open when their final mean exceeds "
                         f"{GATE_OPEN_FACTOR:g} × their initial mean or {GATE_OPEN_MIN:g}; closed gates leave the "
                         "network the baseline's up to a small residual (≈ baseline)."}


def markdown_table(checks: Manipulation) -> list[str]:
    """The Markdown block's table (empty without rows)."""
    if not checks.rows:
        return []
    head = ["arm", "relative change", "anisotropy", "speckle CoV ratio", "edge β", "learned", "reading"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in checks.rows:
        c = cells(r)
        rows.append(f"| `{c['arm']}` | {c['relative_change']} | {c['anisotropy']} | {c['speckle']} | {c['edges']} | "
                    f"{c['learned']} | {'**' + c['reading'] + '**' if r.flagged else c['reading']} |")
    text = sample_text(checks)
    return rows + (["", text] if text else [])
