"""In-domain pretraining on simulated lung ultrasound: ``python -m harness pretrain SPEC.yaml --out DIR``.

Trains the study's network (``harness.models.create_model``: timm EfficientNet-B0, one input
channel, two classes) on many simulated patients, supervised on the B-line label, with the study's
own training step (``harness.training.fit_evaluate``), and writes

- ``DIR/weights.safetensors``: the selected epoch's weights as a plain timm state dict (torch
  tensors, BatchNorm counters included), so any suite loads it as ``model.pretrained: DIR/weights.safetensors``;
- ``DIR/model_card.json``: what the weights are (data spec, recipe, seed, wall time, held-out
  ROC-AUC, code version, torch/timm versions, the weights' sha256). A suite run stores the card of
  every weights file it uses in its results store (meta ``model_cards``) and the report's methods
  section prints it.

Why the simulator: no real frame is involved, so the weights cannot carry a study's test patients
into its training (no leakage by construction). The spec mixes patients across simulator settings:
``data.base`` is one ``SimulatedData`` section, ``data.vary`` a grid of values for some of its keys
(e.g. speckle and B-line contrast); every combination is simulated with its own seed and its own
patients (ids prefixed ``c<i>-``), and the frames are concatenated. Probes mix per patient with
``probe: mixed``; B-line counts vary per clip (up to ``max_b_lines``, some confluent).

The held-out score comes from a patient-grouped split of these simulated patients
(``held_out``: the share of patients never trained on or selected on; ``training.val_fraction`` of
the rest select the epoch), made by :func:`harness.cv.get_split`.

Example spec (``tests/data/pretrain-tiny.yaml``)::

    name: tiny
    seed: 0
    data:
      base: {patients: 4, frames_per_patient: 2, image_size: 32, probe: mixed}
      vary: {speckle: [0.7, 1.3]}
    training: {epochs: 1, batch_size: 8}
    held_out: 0.25
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.backbones import describe_backbones
from harness.data.config import SEED_MAX, SimulatedData
from harness.models import weights_bytes
from harness.preprocess import to_unit
from harness.suite import ModelConfig, SuiteError, TrainingConfig, _check_name, read_yaml_config, validation_lines
from harness.versions import file_sha256

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "model_card.json"
CARD_FORMAT = "lus-harness model card 1"
#: Keys of ``SimulatedData`` that cannot vary across the mix (frames are concatenated; seeds are derived).
FIXED_KEYS = ("source", "seed", "image_size")


class PretrainSpecError(SuiteError):
    """A pretraining spec that cannot be used; one line per problem (``FILE: key.path: message``)."""


class SimulatedMix(BaseModel):
    """``base``: a simulated data section; ``vary``: values per key, every combination simulated."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict, description="a SimulatedData section (source may be left out)")
    vary: dict[str, list[Any]] = Field(default_factory=dict, description="{key: [values]}: a grid over the base")


class PretrainSpec(BaseModel):
    """The ``pretrain`` YAML: data mix, network, recipe, held-out share, seed."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)  # as a suite's

    name: str = "pretrain"
    description: str = ""
    seed: int = Field(0, ge=0, le=SEED_MAX)
    data: SimulatedMix = Field(default_factory=SimulatedMix)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    held_out: float = Field(0.2, ge=0.05, le=0.5, description="share of simulated patients kept for the held-out score")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:  # the default output folder is pretrained/<name>: a plain name only
        return _check_name(value, "name")

    @field_validator("model")
    @classmethod
    def _plain(cls, value: ModelConfig) -> ModelConfig:
        if value.stem is not None or value.diffusion_blocks is not None:
            raise ValueError("pretraining trains the plain network (its weights load into every arm); accepted: no "
                             "stem and no diffusion_blocks")
        return value

    def components(self) -> list[SimulatedData]:
        """One ``SimulatedData`` per combination of ``data.vary`` (validated by :func:`spec_problems`)."""
        keys = list(self.data.vary)
        combos = list(itertools.product(*(self.data.vary[k] for k in keys))) if keys else [()]
        out = []
        for i, values in enumerate(combos):
            seed = int(np.random.SeedSequence([int(self.seed), i]).generate_state(1)[0] % 2**31)
            out.append(SimulatedData.model_validate({**self.data.base, "source": "simulated",
                                                     **dict(zip(keys, values)), "seed": seed}))
        return out


def spec_problems(spec: PretrainSpec) -> list[tuple[str, str]]:
    """(key path, message) of the data mix: the base and every varied value validated with its path."""
    problems: list[tuple[str, str]] = []
    base = dict(spec.data.base)
    for key in ("source", "seed"):
        if key == "source" and base.get(key, "simulated") == "simulated":
            continue
        if key in base:
            problems.append((f"data.base.{key}", "the seed sets every component's simulator seed; accepted: "
                             "leave it out" if key == "seed" else "pretraining simulates; accepted: simulated"))
    base = {k: v for k, v in base.items() if k not in ("source", "seed")}
    try:
        SimulatedData.model_validate({**base, "source": "simulated"})
    except ValidationError as err:
        return problems + [(f"data.base.{p}", m) for p, m in validation_lines(err, SimulatedData)]
    for key, values in spec.data.vary.items():
        if key not in SimulatedData.model_fields or key in FIXED_KEYS:
            allowed = [k for k in SimulatedData.model_fields if k not in FIXED_KEYS]
            problems.append((f"data.vary.{key}", f"cannot vary; accepted: {', '.join(allowed)}"))
            continue
        if not values:
            problems.append((f"data.vary.{key}", "empty list; accepted: one or more values"))
        for i, value in enumerate(values):
            try:
                SimulatedData.model_validate({**base, "source": "simulated", key: value})
            except ValidationError as err:
                problems += [(f"data.vary.{key}[{i}]", m) for _, m in validation_lines(err, SimulatedData)]
    return problems


def load_spec(path: str | Path, overrides: Iterable[str] = ()) -> PretrainSpec:
    """Read, override and validate a pretraining spec; raises :class:`PretrainSpecError`."""
    data = read_yaml_config(path, overrides, "pretraining spec", PretrainSpec.model_fields, PretrainSpecError)
    label = str(path)
    return validate_spec(data, label)


def validate_spec(data: dict[str, Any], label: str = "<spec>") -> PretrainSpec:
    try:
        spec = PretrainSpec.model_validate(data)
    except ValidationError as err:
        raise PretrainSpecError([f"{label}: {p}: {m}" for p, m in validation_lines(err, PretrainSpec)]) from None
    problems = spec_problems(spec)
    if spec.model.pretrained not in ("none", "imagenet") and not Path(spec.model.pretrained).expanduser().is_file():
        problems.append(("model.pretrained", f"weights file {spec.model.pretrained!r} not found"))
    if problems:
        raise PretrainSpecError([f"{label}: {p}: {m}" for p, m in problems])
    return spec


# --------------------------------------------------------------------------- data


def concat_framesets(parts: list[Any], prefixes: list[str]) -> Any:
    """One FrameSet of several, ids prefixed so patients of different parts never merge."""
    import pandas as pd

    from harness.data.cache import hash_json
    from harness.data.frameset import DataError, FrameSet

    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) != 1:
        raise DataError(f"frames of different sizes {sorted(shapes)} cannot be concatenated")

    def ids(name: str) -> np.ndarray:
        return np.concatenate([np.char.add(f"{pre}-", getattr(p, name).astype(str)) for p, pre in zip(parts, prefixes)])

    meta = pd.concat([p.metadata.assign(component=pre) for p, pre in zip(parts, prefixes)], ignore_index=True)
    return FrameSet(images=np.concatenate([np.asarray(p.images) for p in parts]),
                    labels=np.concatenate([p.labels for p in parts]), groups=ids("groups"), videos=ids("videos"),
                    sample_ids=ids("sample_ids"), metadata=meta,
                    content_hash=hash_json([p.content_hash for p in parts]),
                    description="; ".join(f"{pre}: {p.description}" for p, pre in zip(parts, prefixes)))


def load_mix(spec: PretrainSpec, cache_dir: Path | None) -> tuple[Any, list[SimulatedData]]:
    """The concatenated simulated frames of every component, and the components."""
    from harness.data import load_frames

    comps = spec.components()
    parts = [load_frames(c, base_dir=Path.cwd(), cache_dir=cache_dir, seed=spec.seed) for c in comps]
    return concat_framesets(parts, [f"c{i}" for i in range(len(parts))]), comps


# --------------------------------------------------------------------------- weights and card


def pretrain_outputs(out_dir: Path) -> list[Any]:
    """The two files of a pretraining in ``out_dir``; each replaced only when it is an earlier pretraining's:
    the card by its format, the weights by the SHA-256 that card records for them."""
    from harness.safe_write import Output, json_field

    card_is_ours = json_field("format", lambda v: v == CARD_FORMAT)

    def weights_are_ours(path: Path) -> bool:
        card = path.parent / CARD_FILE
        if not (card.is_file() and card_is_ours(card)):
            return False
        recorded = (json.loads(card.read_text(encoding="utf-8")).get("weights") or {}).get("sha256")
        return recorded == file_sha256(path)

    return [Output(out_dir / WEIGHTS_FILE, "weights file of a pretraining (with its model card)", weights_are_ours,
                   "--out"),
            Output(out_dir / CARD_FILE, "model card", card_is_ours, "--out")]


def _checked_out_dir(out_dir: Path) -> Path:
    """``--out``: a directory whose files, if any, are an earlier pretraining's (checked before anything trains)."""
    from harness.safe_write import check_outputs

    if out_dir.exists() and not out_dir.is_dir():
        raise PretrainSpecError([f"--out {out_dir}: is a file; accepted: a directory"])
    check_outputs(pretrain_outputs(out_dir))
    return out_dir


def _weights_entry(spec: PretrainSpec, blob: bytes, n_tensors: int, weights: Path) -> dict[str, Any]:
    """The card's record of the weights file: its SHA-256 (how ``--out`` recognises it later) and how to use it."""
    return {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "architecture": spec.model.architecture,
            "in_chans": 1, "num_classes": spec.model.num_classes, "n_tensors": n_tensors,
            "format": "plain timm state dict (safetensors, torch tensors)", "use": f"model.pretrained: {weights}"}


def read_model_card(weights: str | Path) -> dict[str, Any] | None:
    """The ``model_card.json`` beside a weights file, or None; a card written for another file gets a note."""
    weights = Path(weights).expanduser()
    card_path = weights.parent / CARD_FILE
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(card, dict):
        return None
    described = (card.get("weights") or {}).get("sha256")
    if described and weights.is_file() and file_sha256(weights) != described:
        card["note"] = f"{weights.name} is not the file this card describes (sha256 differs)"
    return card


def _versions() -> dict[str, Any]:
    import platform

    import timm
    import torch

    from harness.environment import git_commit
    from harness.versions import ROOT, code_version

    return {"code_version": code_version(), "git_commit": git_commit(ROOT), "python": platform.python_version(),
            "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "n/a"


# --------------------------------------------------------------------------- the command


def pretrain(spec: PretrainSpec, out_dir: str | Path, cache_dir: str | Path | None = None,
             echo: Callable[[str], None] = print, command: list[str] | None = None) -> dict[str, Any]:
    """Train on the simulated mix, write ``weights.safetensors`` and ``model_card.json`` into ``out_dir``;
    returns the card."""
    from harness.cv import get_split
    from harness.data.cache import default_cache_dir
    from harness.metrics import run_metrics
    from harness.training import RunData, fit_evaluate

    from harness.safe_write import write_all

    t0 = time.perf_counter()
    out_dir = _checked_out_dir(Path(out_dir))
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    frames, comps = load_mix(spec, cache)
    folds = max(2, int(round(1.0 / spec.held_out)))
    split = get_split(frames.labels, frames.groups, folds, 1, spec.seed, spec.training.val_fraction, 0, 0)
    n_pat = len(np.unique(frames.groups))
    echo(f"pretrain {spec.name}: {len(frames)} simulated frames of {n_pat} patients ({len(comps)} settings); "
         f"train {len(split.train_idx)} / select {len(split.val_idx)} / held out {len(split.test_idx)} frames")

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return to_unit(frames.images[idx]), frames.labels[idx].astype(np.int64)

    data = RunData(*take(split.train_idx), *take(split.val_idx), *take(split.test_idx))

    def progress(rec: dict[str, Any]) -> None:
        echo(f"epoch {rec['epoch']}/{rec['epochs']}: train loss {rec['train_loss']:.3f}, val loss "
             f"{rec['val_loss']:.3f}, val ROC-AUC {_fmt(rec.get('val_roc_auc'))}, {rec['seconds']:.1f} s")

    result = fit_evaluate(spec.model, spec.training, data, spec.seed, want_state_dict=True, progress=progress)
    test = split.test_idx
    probs = np.asarray(result.test_probs, dtype=np.float64)
    rows = run_metrics(frames.labels[test], probs, frames.videos[test], frames.groups[test])

    def score(level: str, agg: str, metric: str = "roc_auc") -> float | None:
        v = next((r["value"] for r in rows if (r["level"], r["aggregation"], r["metric"]) == (level, agg, metric)), None)
        return None if v is None or v != v else float(v)

    weights = out_dir / WEIGHTS_FILE
    assert result.state_dict is not None
    blob = weights_bytes(result.state_dict)
    card = {
        "format": CARD_FORMAT,
        "name": spec.name,
        "description": spec.description,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "backbone": describe_backbones([spec.model])[0],  # which network, from which weights, and how it differs
        "weights": _weights_entry(spec, blob, len(result.state_dict), weights),
        "data": {"spec": spec.data.model_dump(mode="json"), "components": [c.model_dump(mode="json") for c in comps],
                 "descriptions": frames.description.split("; "), "n_components": len(comps),
                 "n_frames": len(frames), "n_patients": int(n_pat), "n_positive": int(frames.labels.sum()),
                 "content_hash": frames.content_hash, "real_data": False,
                 "leakage": "simulated frames only: no real patient can reach a study's test folds through these "
                            "weights"},
        "split": {"held_out_fraction": spec.held_out, "folds": folds, "n_train": len(split.train_idx),
                  "n_val": len(split.val_idx), "n_held_out": len(test), "leakage_check": split.leakage},
        "recipe": {"model": spec.model.model_dump(mode="json"), "training": spec.training.model_dump(mode="json")},
        "seed": spec.seed,
        "held_out": {"roc_auc": score("frame", "none"), "video_roc_auc": score("video", "mean"),
                     "patient_roc_auc": score("patient", "mean"), "n_frames": len(test),
                     "n_patients": int(split.leakage.get("n_test_groups", len(np.unique(frames.groups[test])))),
                     "metrics": rows},
        "training": {"best_epoch": int(result.best_epoch), "epochs_run": int(result.epochs_run),
                     "device": str(result.device), "diagnosis": result.diagnosis.as_dict(),
                     "history": [{k: h.as_dict()[k] for k in ("epoch", "train_loss", "val_loss", "val_roc_auc",
                                                              "seconds")} for h in result.history]},
        "versions": _versions(),
        "command": " ".join(command) if command else None,
        "wall_seconds": time.perf_counter() - t0,
    }
    from harness.jsonable import jsonable

    write_all({weights: blob, out_dir / CARD_FILE: json.dumps(jsonable(card), indent=2, allow_nan=False) + "\n"})
    echo(f"held-out ROC-AUC {_fmt(card['held_out']['roc_auc'])} (frame), {_fmt(card['held_out']['video_roc_auc'])} "
         f"(video); {card['wall_seconds']:.0f} s; wrote {weights} and {out_dir / CARD_FILE}")
    return card


def main(args: Any) -> int:
    """``python -m harness pretrain`` (see harness.cli)."""
    spec = load_spec(args.spec, args.overrides)
    out = args.out or Path("pretrained") / spec.name
    pretrain(spec, out, cache_dir=args.cache_dir, command=["python", "-m", "harness", *sys.argv[1:]])
    return 0


__all__ = ["CARD_FILE", "WEIGHTS_FILE", "PretrainSpec", "PretrainSpecError", "load_spec",
           "pretrain", "read_model_card", "validate_spec"]
