"""The search section of a suite and its search space: schema, validation, and applying a trial.

A suite's ``search:`` section (:class:`SearchConfig`) gives every arm the same budget (``trials``),
the same inner cross-validation (``inner_folds``), sampler and pruner, and a shared ``space``; an
arm's ``search: {space: ...}`` (:class:`ArmSearchConfig`) adds keys to the shared space for that arm.

A space maps key paths of the arm's configuration to distributions::

    training.lr: {log_uniform: [1.0e-4, 1.0e-2]}
    training.epochs: {int: [4, 16]}
    model.drop_rate: {uniform: [0.1, 0.5]}
    preprocess.0.perona_malik.kappa: {log_uniform: [0.02, 0.5]}
    training.class_balance: {choice: [loss, sampler]}

Key paths are ``training.<key>`` (the arm's deep-merged training recipe), ``model.<key>[.<key>]``
(the arm's model, e.g. ``model.stem.iterations``) and ``preprocess.<step>.<filter>.<parameter>``.
:func:`space_problems` checks, before anything runs, that every key exists for the arm, that the
distribution fits the key's type, that both ends of a range (every choice) are accepted by the
schema or by the filter's parameter spec (``diffusion_filters._spec``), and that the arm's own
value lies in the range: trial 0 of every study is the suite's own configuration.

This module is the suite's: the suite owns the search section's schema, its sets of runs and their
identity, and the search (:mod:`harness.search`) only reads them. It never imports the search, nor the
rest of the suite package (an arm's configuration is validated through the suite's own
``arm_training`` / ``arm_model``); it imports only pydantic at import time.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Literal

from dataclasses import dataclass

from pydantic import Field, field_validator

from harness.suite.strict import Strict
from harness.variants import TUNED, UNTUNED, VARIANT_SEPARATOR

DISTRIBUTIONS = ("uniform", "log_uniform", "int", "choice")
#: Training keys that are not hyper-parameters of a fit (shared by design, or about the machine).
NOT_TUNABLE = {
    "val_fraction": "the inner validation split is shared by every arm",
    "seed_offset": "it selects the random streams, not the recipe",
    "device": "it is about the machine, not the recipe",
    "deterministic": "it is about the machine, not the recipe",
    "num_threads": "it is about the machine, not the recipe",
    "channels_last": "it is about the machine, not the recipe",
    "amp": "it is about the machine, not the recipe",
}
_KEY_RE = re.compile(r"^(training|model|preprocess)(\.[A-Za-z0-9_]+)+$")


def _check_distribution(key: str, value: Any) -> dict[str, Any]:
    accepted = "; accepted: {uniform: [low, high]}, {log_uniform: [low, high]}, {int: [low, high]}, " \
               "{choice: [a, b, ...]}"
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise ValueError(f"{key}: {value!r} is not a distribution{accepted}")
    (kind, args), = value.items()
    if not isinstance(args, list) or not args:
        raise ValueError(f"{key}: {kind} takes a list{accepted}")
    if kind == "choice":
        if len(args) < 2:
            raise ValueError(f"{key}: choice needs at least 2 values, got {args!r}")
        if any(not isinstance(a, (str, int, float, bool)) or a is None for a in args):
            raise ValueError(f"{key}: choice values are strings, numbers or booleans, got {args!r}")
        if len({repr(a) for a in args}) != len(args):
            raise ValueError(f"{key}: choice values repeat in {args!r}")
        return {kind: list(args)}
    if len(args) != 2:
        raise ValueError(f"{key}: {kind} takes [low, high], got {args!r}")
    lo, hi = args
    if kind == "int":
        if any(isinstance(a, bool) or not isinstance(a, int) for a in args):
            raise ValueError(f"{key}: int takes two integers [low, high], got {args!r}")
    elif any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) for a in args):
        raise ValueError(f"{key}: {kind} takes two finite numbers [low, high], got {args!r}")
    if not lo < hi:
        raise ValueError(f"{key}: low {lo!r} must be below high {hi!r}")
    if kind == "log_uniform" and lo <= 0:
        raise ValueError(f"{key}: log_uniform needs low > 0, got {lo!r}")
    return {kind: [lo, hi] if kind == "int" else [float(lo), float(hi)]}


def _check_space(value: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, dist in value.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ValueError(f"{key!r}: not a key path; accepted: training.<key>, model.<key>[.<key>], "
                             "preprocess.<step>.<filter>.<parameter>")
        out[key] = _check_distribution(key, dist)
    return out


class ArmSearchConfig(Strict):
    """An arm's addition to the shared search space (the budget stays the suite's)."""

    space: dict[str, Any] = Field(default_factory=dict, description="key path -> distribution, added for this arm")

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_space(value)


class SearchConfig(Strict):
    """Nested hyper-parameter search: the same budget, sampler and pruner for every arm."""

    trials: int = Field(ge=1, le=10_000, description="completed or pruned trials per outer run (the budget)")
    inner_folds: int = Field(3, ge=2, le=20, description="patient-grouped folds inside the outer training part")
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["none", "median"] = "median"
    space: dict[str, Any] = Field(default_factory=dict, description="key path -> distribution, for every arm")
    enabled: bool = Field(True, description="false: every arm trains its own configuration untuned "
                                            "(--set search.enabled=false), as without a search section")
    arms: list[str] | None = Field(
        None, description="the arms the search tunes (default: every arm). A subset runs every arm untuned under "
        "its own name and these arms tuned again as '<arm>~tuned' (the baseline among them), so a tuned verdict "
        "is read beside the untuned one")
    also_untuned: bool = Field(
        False, description="every tuned arm also runs untuned as '<arm>~untuned' (same splits and seeds), and the "
        "report puts both verdicts side by side: does tuning change the verdict?")

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_space(value)


# --------------------------------------------------------------------------- tuned and untuned runs
@dataclass(frozen=True)
class RunArm:
    """One set of runs of a suite's plan: an arm, tuned by the nested search or not, stored as ``name``.

    Without a search every arm runs once, untuned, under its own name. With ``search.arms`` unset
    every arm is tuned under its own name (``also_untuned`` adds ``<arm>~untuned``); with a subset every
    arm runs untuned under its own name and the subset is tuned again as ``<arm>~tuned``.
    """

    name: str
    arm: Any  # harness.suite.ArmConfig
    tuned: bool

    @property
    def variant(self) -> str:
        """'' for the arm's own runs, else the suffix after :data:`VARIANT_SEPARATOR`."""
        return self.name.partition(VARIANT_SEPARATOR)[2]


def tuned_arms(suite: Any) -> list[str]:
    """Names of the arms the search tunes (none without an enabled search)."""
    if not searching(suite):
        return []
    names = [a.name for a in suite.arms]
    return names if suite.search.arms is None else [n for n in names if n in suite.search.arms]


def run_arms(suite: Any) -> list[RunArm]:
    """Every set of runs of the suite, in the report's order: the arms' own runs in suite order, then
    the variants (``~tuned`` or ``~untuned``) in suite order."""
    if not searching(suite):
        return [RunArm(a.name, a, False) for a in suite.arms]
    tuned = set(tuned_arms(suite))
    if suite.search.arms is None:
        own = [RunArm(a.name, a, True) for a in suite.arms]
        twins = [RunArm(f"{a.name}{VARIANT_SEPARATOR}{UNTUNED}", a, False)
                 for a in suite.arms] if suite.search.also_untuned else []
        return own + twins
    return [RunArm(a.name, a, False) for a in suite.arms] + \
        [RunArm(f"{a.name}{VARIANT_SEPARATOR}{TUNED}", a, True) for a in suite.arms if a.name in tuned]


def run_arm(suite: Any, name: str) -> RunArm:
    """The :class:`RunArm` stored as ``name`` (KeyError naming the accepted ones otherwise)."""
    for r in run_arms(suite):
        if r.name == name:
            return r
    raise KeyError(f"no arm {name!r}; accepted: {', '.join(r.name for r in run_arms(suite))}")


# --------------------------------------------------------------------------- the space of an arm


def searching(suite: Any) -> bool:
    """Whether the suite tunes its arms (a search section, not disabled)."""
    search = getattr(suite, "search", None)
    return search is not None and bool(search.enabled)


def arm_space(suite: Any, arm: Any) -> dict[str, dict[str, Any]] | None:
    """The effective space of an arm (shared + the arm's own), or None when the suite has no search."""
    if not searching(suite):
        return None
    own = arm.search.space if getattr(arm, "search", None) is not None else {}
    return {**suite.search.space, **own}


def objective(suite: Any) -> dict[str, str]:
    """What the search optimises: the suite's primary metric, in its direction, at its primary level
    (the video level scores each video by the mean of its frames' probabilities, as the report does)."""
    from harness.metrics import LOWER_IS_BETTER

    ev = suite.evaluation
    return {"metric": ev.primary_metric, "direction": "minimize" if ev.primary_metric in LOWER_IS_BETTER else "maximize",
            "level": ev.primary_level, "aggregation": "none" if ev.primary_level == "frame" else "mean"}


def search_identity(suite: Any, run: RunArm) -> dict[str, Any] | None:
    """What of the search changes a set of runs' numbers (part of its run config hash): the budget,
    the space and what it optimises (the objective); None for untuned runs, so an untuned run's hash
    is the one it would have in a suite without a search (the same runs, shared)."""
    space = arm_space(suite, run.arm) if run.tuned else None
    if space is None:
        return None
    s = suite.search
    return {"trials": s.trials, "inner_folds": s.inner_folds, "sampler": s.sampler, "pruner": s.pruner,
            "space": {k: space[k] for k in sorted(space)}, "objective": objective(suite)}


def _parts(key: str) -> list[str]:
    return key.split(".")


def current_value(suite: Any, arm: Any, key: str) -> Any:
    """The arm's own value at ``key`` (KeyError with the accepted keys when it has none)."""
    head, *rest = _parts(key)
    if head == "training":
        node: Any = suite.arm_training(arm).model_dump(mode="json")
    elif head == "model":
        node = suite.arm_model(arm).model_dump(mode="json")
    else:
        node = arm.preprocess
        if not rest or not rest[0].isdigit() or int(rest[0]) >= len(node):
            n = len(node)
            raise KeyError(f"no preprocessing step {rest[0] if rest else ''!s}; accepted: "
                           + (f"0..{n - 1}" if n else "(the arm has no preprocess steps)"))
        step = node[int(rest[0])]
        if len(step) != 1:  # a callable: / module: step (diffusion_filters.external)
            raise KeyError(f"step {rest[0]} names outside code ({step.get('callable') or step.get('module')}); "
                           "accepted: the parameters of a built-in or entry-point filter step (a search over a "
                           "callable:/module: step is not supported yet)")
        (fname, params), = step.items()
        if len(rest) < 2 or rest[1] != fname:
            raise KeyError(f"step {rest[0]} is {fname}, not {rest[1] if len(rest) > 1 else '(nothing)'}; "
                           f"accepted: preprocess.{rest[0]}.{fname}.<parameter>")
        spec = filter_spec(fname)
        names = spec.names() if spec is not None else list(params or {})
        if len(rest) != 3 or rest[2] not in names:
            raise KeyError(f"no such key; accepted: {', '.join(names)}")
        canonical = spec.canonicalise(params or {}) if spec is not None else dict(params or {})
        return canonical[rest[2]]
    for depth, part in enumerate(rest):
        if not isinstance(node, dict) or part not in node:
            where = ".".join([head, *rest[:depth]])
            if isinstance(node, dict):
                raise KeyError(f"no such key; accepted: {', '.join(node)}")
            raise KeyError(f"{where} is {'not set for this arm' if node is None else 'a value'}; it has no keys")
        node = node[part]
    if isinstance(node, (dict, list)) or node is None and head == "model":
        raise KeyError("a section, not a value" if node is not None else "not set for this arm")
    return node


def filter_spec(name: str) -> Any:
    import diffusion_filters

    return getattr(diffusion_filters.registry.get_filter_class(name), "spec", None)


def _set(node: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def apply_params(arm: Any, params: dict[str, Any]) -> Any:
    """A copy of ``arm`` with the trial's ``{key path: value}`` set (training/model as partial
    overrides deep-merged by the suite; preprocessing steps edited in place of the copy)."""
    training = copy.deepcopy(arm.training)
    model = copy.deepcopy(arm.model)
    steps = copy.deepcopy(arm.preprocess)
    for key, value in params.items():
        head, *rest = _parts(key)
        if head == "training":
            _set(training, rest, value)
        elif head == "model":
            _set(model, rest, value)
        else:
            i, fname, pname = int(rest[0]), rest[1], rest[2]
            step = dict(steps[i])
            step[fname] = {**(step.get(fname) or {}), pname: value}
            steps[i] = step
    return arm.model_copy(update={"training": training, "model": model, "preprocess": steps})


def _ends(dist: dict[str, Any]) -> list[Any]:
    (kind, args), = dist.items()
    return list(args)


def _contains(dist: dict[str, Any], value: Any) -> bool:
    (kind, args), = dist.items()
    if kind == "choice":
        return any(value == a and type(value) is type(a) or (isinstance(value, (int, float))
                   and not isinstance(value, bool) and isinstance(a, (int, float)) and value == a) for a in args)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int" and float(value) != int(value):
        return False
    return args[0] <= value <= args[1] * (1 + 1e-12)


def _fmt(dist: dict[str, Any]) -> str:
    (kind, args), = dist.items()
    return f"{kind} {args}" if kind == "choice" else f"{kind} [{args[0]:g}, {args[1]:g}]"


def _has_diffusion_layers(model: Any) -> bool:
    return bool((model.stem is not None and model.stem.type == "diffusion") or model.diffusion_blocks)


def space_problems(suite: Any, arm: Any, where: str) -> list[tuple[str, str]]:
    """``(key path, message)`` for every key of the arm's space that cannot be searched.

    ``where`` is where the space is written for messages (``search.space`` or ``arms[i].search.space``;
    a shared key that fails for one arm is reported under that arm, naming it).
    """
    from pydantic import ValidationError


    problems: list[tuple[str, str]] = []
    own = arm.search.space if getattr(arm, "search", None) is not None else {}
    space = arm_space(suite, arm) or {}
    for key, dist in space.items():
        place = f"{where}.{key}" if key in own else f"search.space.{key} (arm {arm.name})"
        head, *rest = _parts(key)
        (kind, args), = dist.items()
        if head == "training" and rest[0] in NOT_TUNABLE:
            problems.append((place, f"not searchable: {NOT_TUNABLE[rest[0]]}"))
            continue
        try:
            value = current_value(suite, arm, key)
        except KeyError as err:
            problems.append((place, str(err.args[0])))
            continue
        # The distribution must fit the key's type.
        if isinstance(value, bool) or isinstance(value, str):
            if kind != "choice":
                problems.append((place, f"a {'boolean' if isinstance(value, bool) else 'string'} key; accepted: "
                                        "{choice: [...]}"))
                continue
        elif isinstance(value, int) and kind in ("uniform", "log_uniform"):
            problems.append((place, f"an integer key; accepted: {{int: [low, high]}} or {{choice: [...]}} "
                                    f"(got {kind})"))
            continue
        # Both ends (every choice) must be accepted by the schema or the filter.
        for end in _ends(dist):
            probe = apply_params(arm, {key: end})
            message = None
            if head == "preprocess":
                fname = rest[1]
                spec = filter_spec(fname)
                try:
                    if spec is not None:
                        spec.canonicalise(probe.preprocess[int(rest[0])][fname] or {})
                except (ValueError, TypeError) as err:
                    accepted = spec.param(rest[2]).accepted(probe.preprocess[int(rest[0])][fname])
                    message = (f"{_fmt(dist)} is not inside what {fname} accepts: {rest[2]} must be "
                               f"{accepted} ({str(err).splitlines()[0]})")
            else:
                try:  # the suite's own merge and validation of the arm's override
                    (suite.arm_training if head == "training" else suite.arm_model)(probe)
                except ValidationError as err:
                    first = err.errors()[0]
                    message = f"{_fmt(dist)}: the end {end!r} is not accepted: {first['msg']}"
            if message:
                problems.append((place, message))
                break
        else:
            if key == "training.diffusion_lr_multiplier" and not _has_diffusion_layers(suite.arm_model(arm)):
                problems.append((place, "this arm has no diffusion layers: the diffusion learning rate changes "
                                        "nothing (trials would be wasted)"))
            elif not _contains(dist, value):
                problems.append((place, f"{_fmt(dist)} does not contain the arm's own value {value!r}; trial 0 "
                                        "is the suite's own configuration, so the range must hold it"))
    return problems


def suite_search_problems(suite: Any) -> list[tuple[str, str]]:
    """Search checks of a whole suite (called by ``harness.suite.semantic_problems``)."""
    problems: list[tuple[str, str]] = []
    names = [a.name for a in suite.arms]
    chosen = suite.search.arms if suite.search is not None else None
    if chosen is not None:
        unknown = [n for n in chosen if n not in names]
        if unknown:
            return [("search.arms", f"{unknown} not arms of the suite; accepted: {', '.join(names)}")]
        if len(set(chosen)) != len(chosen) or not chosen:
            return [("search.arms", f"{chosen}: accepted: distinct arm names, at least one")]
        baseline = suite.report.baseline or names[0]
        if baseline not in chosen:
            return [("search.arms", f"the baseline {baseline!r} is not tuned: a tuned arm is compared with the tuned "
                                    f"baseline ({baseline}~tuned); accepted: a list that holds {baseline!r}")]
    tuned = set(tuned_arms(suite))
    for i, arm in enumerate(suite.arms):
        if getattr(arm, "search", None) is not None and suite.search is None:
            problems.append((f"arms[{i}].search", "an arm adds to the search space of a top-level search "
                                                  "section (trials, inner_folds, ...); accepted: add one"))
            continue
        if getattr(arm, "search", None) is not None and searching(suite) and arm.name not in tuned:
            problems.append((f"arms[{i}].search", f"arm {arm.name} adds to the search space but search.arms does "
                                                  f"not tune it; accepted: add {arm.name!r} to search.arms"))
            continue
        if arm.name in tuned:
            problems += space_problems(suite, arm, f"arms[{i}].search.space")
    empty = [arm.name for arm in suite.arms if arm.name in tuned and not arm_space(suite, arm)]
    if empty:  # their trials would be inner fits of one configuration: budget spent, nothing tuned
        problems.append(("search.space", f"nothing to tune for arm(s) {', '.join(empty)}: the space is empty; "
                                         "accepted: at least one key path in search.space or in each arm's "
                                         "search.space (e.g. training.lr: {log_uniform: [1.0e-4, 1.0e-2]}), "
                                         "or search.enabled: false"))
    return problems


__all__ = ["ArmSearchConfig", "DISTRIBUTIONS", "RunArm", "SearchConfig", "apply_params", "arm_space", "current_value",
           "objective", "run_arm", "run_arms", "search_identity", "searching", "space_problems", "suite_search_problems",
           "tuned_arms"]
