"""The report's methods and integrity sections, written from the stored suite and runs.

Each arm's filter is described by ``diffusion_filters.Pipeline.from_config(...).describe()``
(the parameter values) together with the equation of every filter it uses (``EQUATIONS``), and
each model variant (diffusion stem / blocks) in words. A step of the user's code (``callable:`` /
``module:``, an entry-point filter) is named by its import path, its code's identity (distribution
and version, or the module file's SHA-256) and every parameter, from the canonical pipeline the
runner stored when the runs started (meta ``pipelines``): the code as it ran, not as it is now.
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.jsonable import jsonable

# Plain-text equations of the registered filters (u: filtered image, v: input, t: diffusion time).
EQUATIONS: dict[str, str] = {
    "perona_malik": "∂u/∂t = div( g(|∇u|) ∇u ),  g(s) = exp(−(s/κ)²) (exponential) or 1/(1 + (s/κ)²) (rational); "
    "explicit 4-neighbour scheme with step Δt (Perona & Malik 1990)",
    "coherence_enhancing": "∂u/∂t = div( D(J_ρ(∇u_σ)) ∇u ),  D with eigenvalue α across and "
    "α + (1 − α)·exp(−C/(μ₁ − μ₂)²) along the structure-tensor orientation (Weickert 1999)",
    "edge_enhancing": "∂u/∂t = div( D(∇u_σ) ∇u ),  D with eigenvalue g(|∇u_σ|²) across edges and 1 along them, "
    "g(s²) = 1 − exp(−C_m / (s/λ)^m) (Weickert 1998)",
    "srad": "∂u/∂t = div( c(q) ∇u ),  c(q) = 1 / (1 + (q² − q₀²) / (q₀²(1 + q₀²))), q the instantaneous "
    "coefficient of variation (speckle-reducing anisotropic diffusion, Yu & Acton 2002)",
    "nonlocal_means": "u(x) = Σ_y w(x, y) v(y) / Σ_y w(x, y),  w(x, y) = exp(−‖P(x) − P(y)‖² / h²) over patches P "
    "(Buades, Coll & Morel 2005)",
    "gaussian": "u = G_σ ∗ v  (the linear heat equation ∂u/∂t = Δu run to t = σ²/2)",
    "median": "u(x) = median of v over the window centred at x",
}


def describe_model_variant(model: Mapping[str, Any]) -> str:
    """A sentence for an arm's model override (diffusion stem / blocks), empty when none."""
    parts = []
    stem = model.get("stem")
    if isinstance(stem, Mapping):
        where = (
            "replaces the first convolution (conv_stem)"
            if stem.get("mode", "replace") == "replace"
            else "runs before the unchanged first convolution"
        )
        parts.append(
            f"a learnable diffusion stem ({stem.get('variant', 'perona_malik')}, "
            f"{stem.get('iterations', '?')} unrolled iterations, "
            f"{'trained' if stem.get('trainable', True) else 'frozen'}) {where}"
        )
    blocks = model.get("diffusion_blocks")
    if isinstance(blocks, Mapping):
        parts.append(
            f"diffusion blocks ({blocks.get('iterations', '?')} iterations, "
            f"{'trained' if blocks.get('trainable', True) else 'frozen'}) after stages "
            f"{', '.join(str(i) for i in blocks.get('after_stages', []))}"
        )
    other = {k: v for k, v in model.items() if k not in ("stem", "diffusion_blocks")}
    if other:
        parts.append("model settings " + json.dumps(other, sort_keys=True))
    return "; ".join(parts)


def _external_text(step: Mapping[str, Any]) -> str:
    """What a canonical ``callable:`` / ``module:`` step ran: convention, code identity, every parameter."""
    how = (f"per-image function, given each frame as a {step.get('dtype') or 'float32'} array"
           + (" in 0..255" if step.get("dtype") == "uint8" else " in [0, 1]")
           if "callable" in step else "nn.Module called on the (B, 1, H, W) batch in [0, 1]")
    params = json.dumps(jsonable(step.get("params") or {}), sort_keys=False)
    return f"user code ({how}); code: {step.get('code') or 'not recorded'}; parameters: {params}"


def _is_external(step: Any) -> bool:
    return isinstance(step, Mapping) and ("callable" in step or "module" in step)


def equations(steps: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(filter name, equation) for each distinct filter of a pipeline config, in order; a step of user
    code gives (its import path, what it ran: convention, code identity, parameters)."""
    out: list[tuple[str, str]] = []
    for step in steps:
        if _is_external(step):
            name = str(step.get("callable") or step.get("module"))
            entry = (name, _external_text(step))
            if entry not in out:
                out.append(entry)
            continue
        for name in step:
            if name not in [n for n, _ in out]:
                out.append((name, EQUATIONS.get(name, "see the diffusion_filters documentation")))
    return out


def _kv(d: Mapping[str, Any], skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    return [(str(k), v if isinstance(v, str) else json.dumps(jsonable(v))) for k, v in d.items() if k not in skip]


def _describe_pipeline(steps: list[dict[str, Any]]) -> str:
    """One line per pipeline: the built-in filters' descriptions, a user step's import path, parameters and
    code (from the stored canonical config, never by importing it again)."""
    if not steps:
        return ""
    try:
        from diffusion_filters import Pipeline
        from diffusion_filters.external import describe_config

        return " → ".join(describe_config(s) if _is_external(s) else Pipeline.from_config([s]).describe()
                          for s in steps)
    except Exception as exc:  # still say what the arm did
        return json.dumps(steps) + f"\n(description unavailable: {(str(exc).splitlines() or [type(exc).__name__])[0]})"


def _arm_steps(meta: Mapping[str, Any], arm: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The arm's canonical pipeline as the runner stored it (code identities included), else its suite steps."""
    stored = (meta.get("pipelines") or {}).get(arm.get("name"))
    return list(stored) if isinstance(stored, list) else list(arm.get("preprocess") or [])


def _span(values: Any) -> str:
    """``"16"`` or ``"14–18"``: the range of some sizes."""
    v = [float(x) for x in values]
    lo, hi = min(v), max(v)
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}"


def _share(fraction: Any) -> str:
    return f"{100 * float(fraction):.0f} %" if isinstance(fraction, (int, float)) else "a share"


def methods(inputs: Any, ratio: float, n_train: Mapping[Any, float], n_test: Mapping[Any, float]) -> dict[str, Any]:
    """The methods section written from the stored suite: data, splits, model, recipe, arms."""
    s = inputs.suite_dict
    ev = s.get("evaluation", {})
    size_text = "no completed run"
    if n_test:
        size_text = (
            f"test folds of {_span(n_test.values())} frames, training parts "
            f"(training + inner validation) of {_span(n_train.values())} frames"
        )
        if "n_test_groups" in inputs.done.columns and inputs.done["n_test_groups"].notna().all():
            size_text += f"; {_span(inputs.done['n_test_groups'])} patients per test fold"
    arms = []
    for a in s.get("arms", []):
        steps = _arm_steps(inputs.meta, a)
        arms.append(
            {
                "name": a.get("name"),
                "description": a.get("description", ""),
                "pipeline": _describe_pipeline(steps),
                "on_the_fly": bool(a.get("on_the_fly")),
                "equations": equations(steps),
                "model_override": json.dumps(a.get("model")) if a.get("model") else "",
                "model_text": describe_model_variant(a.get("model") or {}),
            }
        )
    folds, repeats = ev.get("folds"), ev.get("repeats")
    return {
        "data_description": str(
            inputs.meta.get("data_description") or f"Data source: {s.get('data', {}).get('source', 'unknown')}."
        ),
        "data_config": _kv(s.get("data", {})),
        "splits": (
            f"{repeats} repeat{'s' if repeats != 1 else ''} × {folds} folds of stratified, patient-grouped "
            "cross-validation (StratifiedGroupKFold, a new shuffle per repeat), identical for every arm; the model is "
            "selected on an inner, patient-grouped validation split of the training part "
            f"({_share(s.get('training', {}).get('val_fraction'))} of its patients). Sizes: {size_text}."
        ),
        "split_sizes": size_text,
        "model": _kv(s.get("model", {})),
        "backbones": backbones(inputs.meta, s),
        "training": _kv(s.get("training", {})),
        "arms": arms,
        "test_train_ratio": ratio,
        "model_cards": model_cards(inputs.meta),
    }


def backbones(meta: Mapping[str, Any], suite: Mapping[str, Any]) -> list[dict[str, str]]:
    """The network(s) the runs trained and where their starting weights came from, as the runner stored
    them (meta ``backbones``, :func:`harness.backbones.describe_backbones`); a store written before that
    gets the architecture's name alone, never a guess."""
    stored = meta.get("backbones")
    if isinstance(stored, list) and stored:
        return [dict(b) for b in stored if isinstance(b, Mapping)]
    model = suite.get("model", {}) or {}
    return [{"architecture": str(model.get("architecture", "?")), "title": str(model.get("architecture", "?")),
             "summary": "", "weights": f"model.pretrained: {model.get('pretrained', '?')}"}]


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and value == value else "n/a"


def model_cards(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model card of each pretrained weights file the suite used (``harness pretrain`` writes it beside
    the weights; the runner stores it in the meta ``model_cards``): what the weights were trained on and how."""
    out = []
    for path, card in (meta.get("model_cards") or {}).items():
        if not isinstance(card, Mapping):
            continue
        data, held = card.get("data") or {}, card.get("held_out") or {}
        versions = card.get("versions") or {}
        wall = card.get("wall_seconds")
        backbone = card.get("backbone") or {}
        rows = [
            ("name", str(card.get("name", ""))),
            ("network", f"{backbone.get('title', '?')}: {backbone.get('summary', '')} Started from: "
                        f"{backbone.get('weights', '?')}" if backbone else
                        str((card.get("weights") or {}).get("architecture", "?"))),
            ("data", f"{data.get('n_frames', '?')} frames of {data.get('n_patients', '?')} simulated patients from "
                     f"{data.get('n_components', '?')} simulator settings; real data: "
                     f"{'yes' if data.get('real_data') else 'none'} ({data.get('leakage', '')})"),
            ("data spec", json.dumps(jsonable(data.get("spec", {})), sort_keys=True)),
            ("held-out ROC-AUC", f"{_num(held.get('roc_auc'))} frame level, {_num(held.get('video_roc_auc'))} video "
                                 f"level ({held.get('n_frames', '?')} frames of {held.get('n_patients', '?')} "
                                 "simulated patients never trained or selected on)"),
            ("recipe", json.dumps(jsonable((card.get("recipe") or {}).get("training", {})), sort_keys=True)),
            ("seed", str(card.get("seed"))),
            ("wall time", f"{wall:.0f} s" if isinstance(wall, (int, float)) else "?"),
            ("code", ", ".join(f"{k} {v}" for k, v in versions.items())),
            ("weights sha256", str((card.get("weights") or {}).get("sha256", "?"))),
        ]
        if card.get("note"):
            rows.append(("note", str(card["note"])))
        out.append({"path": str(path), "rows": rows})
    return out


def leakage(inputs: Any) -> dict[str, Any]:
    """Count runs whose recorded patient-overlap check passed / failed / is missing."""
    passed = failed = unknown = 0
    details = []
    for row in inputs.done.itertuples(index=False):
        check = row.leakage_check
        ok = None
        if isinstance(check, Mapping):
            # harness.cv records overlap counts (groups_in_train_and_test, ..., samples_in_two_roles).
            counts = {k: v for k, v in check.items() if k.startswith(("groups_in_", "samples_in_"))}
            if counts:
                ok = all(not v for v in counts.values())
            elif "passed" in check:
                ok = bool(check["passed"])
        elif isinstance(check, (bool, np.bool_)):
            ok = bool(check)
        if ok is None:
            unknown += 1
        elif ok:
            passed += 1
        else:
            failed += 1
            details.append(f"{row.run_id}: {json.dumps(jsonable(check))}")
    return {"total": passed + failed, "passed": passed, "failed": failed, "unknown": unknown, "details": details}


def failed_runs(inputs: Any) -> list[dict[str, Any]]:
    r = inputs.runs
    bad = r[r["status"].isin(["failed", "running", "interrupted"])]
    return [
        {
            "arm": x.arm,
            "repeat": int(x.repeat),
            "fold": int(x.fold),
            "status": x.status,
            "error": x.error
            if isinstance(x.error, str) and x.error
            else ("interrupted or still running" if x.status == "running" else ""),
        }
        for x in bad.itertuples(index=False)
    ]


@dataclass(frozen=True)
class CodeProvenance:
    """Which code computed the reported runs, against the code of this checkout
    (:func:`harness.versions.code_version`): a report of runs that ``harness run`` would redo says so."""

    runs: dict[str, int]  # code version -> completed runs it computed ("not recorded" for old stores)
    current: str

    @property
    def is_current(self) -> bool:
        return set(self.runs) <= {self.current}

    def describe(self, checkout: bool = True) -> str:
        """One line: the version(s) of the runs and, when they are not this checkout's, what follows;
        ``checkout=False`` leaves "(this checkout's)" out of a current one (a page committed beside code
        that moves on)."""
        if not self.runs:
            return f"no completed run (this checkout: {self.current})"
        listed = ", ".join(f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in self.runs.items())
        if self.is_current:
            return f"{self.current} (this checkout's)" if checkout else self.current
        return (f"{listed}; this checkout computes {self.current}: these runs were computed by other code, "
                "and `harness run` on this suite would redo them")

    def as_dict(self) -> dict[str, Any]:
        return {"runs": dict(self.runs), "current": self.current, "is_current": self.is_current}


NOT_RECORDED = "not recorded"


def code_provenance(runs: Any) -> CodeProvenance:
    """The :class:`CodeProvenance` of a store's completed runs (``Inputs.done``)."""
    from harness.versions import code_version

    column = runs["code_version"] if "code_version" in runs.columns else [None] * len(runs)
    counts: dict[str, int] = {}
    for v in column:
        key = NOT_RECORDED if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
        counts[key] = counts.get(key, 0) + 1
    return CodeProvenance(dict(sorted(counts.items(), key=lambda kv: -kv[1])), code_version())


def environment(meta: Mapping[str, Any], code: CodeProvenance) -> list[tuple[str, str]]:
    env = meta.get("environment")
    rows: list[tuple[str, str]] = [("code_version", code.describe())]
    if isinstance(env, Mapping):
        for k, v in env.items():
            rows.append((str(k), v if isinstance(v, str) else json.dumps(jsonable(v))))
    for key in ("suite_hash", "data_content_hash", "started_at"):
        if key in meta:
            v = meta[key]
            if key == "started_at" and isinstance(v, (int, float)):
                v = _dt.datetime.fromtimestamp(v, _dt.UTC).isoformat(timespec="seconds")
            rows.append((key, str(v)))
    return rows


def reproduce_command(inputs: Any) -> str:
    cmd = inputs.meta.get("command")
    if isinstance(cmd, (list, tuple)):
        return shlex.join(str(c) for c in cmd)
    if cmd:
        return str(cmd)
    suite = inputs.meta.get("suite_path") or f"<suite {inputs.suite_dict.get('name', '')}.yaml>"
    return f"python -m harness run {suite} --out {shlex.quote(str(inputs.out_dir))}"
