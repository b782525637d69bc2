"""Model factory: timm EfficientNet-B0, weights loading (path / imagenet offline), stem and blocks."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from diffusion_filters.layers import TENSOR_SIGMA, DiffusionBlock, DiffusionPrepend, DiffusionStem
from harness.models import (
    INPUT_MEAN,
    INPUT_STD,
    ModelError,
    NormalizedConv2d,
    check_weights,
    create_model,
    learned_params,
    output_size,
)
from harness.suite import BlocksConfig, ModelConfig, StemConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], Path, Path]:
    """Random 3-channel, 1000-class timm efficientnet_b0 weights saved as .pth and .safetensors."""
    torch.manual_seed(123)
    state = {k: v.clone() for k, v in timm.create_model("efficientnet_b0", pretrained=False).state_dict().items()}
    d = tmp_path_factory.mktemp("weights")
    pth, st = d / "b0.pth", d / "b0.safetensors"
    torch.save(state, pth)
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    return state, pth, st


def test_plain_model_one_channel_two_classes() -> None:
    model = create_model(ModelConfig(pretrained="none"))
    assert isinstance(model.conv_stem, NormalizedConv2d)
    assert model.conv_stem.in_channels == 1
    assert model.classifier.out_features == 2
    assert model.drop_rate == pytest.approx(0.2)
    model.eval()
    assert model(torch.rand(3, 1, 32, 32)).shape == (3, 2)
    assert learned_params(model) == {}
    assert model.weights_report["source"] == "none"


def test_normalized_conv_equals_conv_of_normalized_input() -> None:
    conv = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False)
    norm = NormalizedConv2d.from_conv(conv)
    x = torch.rand(2, 1, 9, 9)
    torch.testing.assert_close(norm(x), conv((x - INPUT_MEAN) / INPUT_STD))
    assert list(norm.state_dict()) == ["weight"]  # timm's conv_stem.weight key is kept


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_path_checkpoint_loads_with_stem_adapted_and_new_classifier(checkpoint, kind: str) -> None:
    state, pth, st = checkpoint
    model = create_model(ModelConfig(pretrained=str(pth if kind == "pth" else st)))
    got = model.state_dict()
    torch.testing.assert_close(got["conv_stem.weight"], adapt_input_conv(1, state["conv_stem.weight"]))
    for key in ("bn1.weight", "blocks.3.1.conv_pw.weight", "conv_head.weight", "bn2.running_var"):
        torch.testing.assert_close(got[key], state[key])
    assert got["classifier.weight"].shape == (2, 1280)
    report = model.weights_report
    assert any(s.startswith("conv_stem.weight: (32, 3, 3, 3) -> (32, 1, 3, 3)") for s in report["adapted"])
    assert any("classifier.weight" in s for s in report["new"])
    assert report["missing"] == ["classifier.weight", "classifier.bias"]
    assert report["unexpected"] == []


def test_checkpoint_with_matching_classifier_loads_it(tmp_path: Path) -> None:
    # A 2-class checkpoint (e.g. one the harness wrote) keeps its classifier: only a new
    # classifier gets the small initialisation.
    state = timm.create_model("efficientnet_b0", pretrained=False, in_chans=1, num_classes=2).state_dict()
    path = tmp_path / "b0_2.pth"
    torch.save(state, path)
    model = create_model(ModelConfig(pretrained=str(path), classifier_init_std=0.01))
    torch.testing.assert_close(model.state_dict()["classifier.weight"], state["classifier.weight"])
    assert not any("initialised" in str(k) for k in model.weights_report["new"])


def test_a_new_classifier_starts_near_zero_logits() -> None:
    # timm's own initialisation puts 2-class logits several units from 0 (first losses far above
    # ln 2); the default small normal initialisation starts at chance.
    torch.manual_seed(0)
    x = torch.rand(16, 1, 64, 64) * 0.5
    default = create_model(ModelConfig()).train()
    timm_init = create_model(ModelConfig(classifier_init_std=None)).train()
    with torch.no_grad():
        assert default(x).abs().max() < 0.5
        assert timm_init(x).std() > 1.0
    assert float(default.classifier.bias.detach().abs().max()) == 0.0


def test_replaced_stem_is_new_everything_else_loads(checkpoint) -> None:
    state, _, st = checkpoint
    cfg = ModelConfig(pretrained=str(st), stem=StemConfig(mode="replace", iterations=2),
                      diffusion_blocks=BlocksConfig(after_stages=[1, 2]))
    model = create_model(cfg)
    got = model.state_dict()
    assert isinstance(model.conv_stem, DiffusionStem)
    assert "conv_stem.weight" not in got
    for key in ("bn1.weight", "bn1.running_mean", "blocks.1.0.conv_pw.weight", "blocks.2.1.bn3.bias"):
        torch.testing.assert_close(got[key], state[key])
    assert isinstance(model.blocks[1][-1], DiffusionBlock) and isinstance(model.blocks[2][-1], DiffusionBlock)
    assert model.blocks[1][-1].channels == 24 and model.blocks[2][-1].channels == 40
    assert any("DiffusionStem" in s for s in model.weights_report["new"])
    names = set(learned_params(model))
    assert {"conv_stem.kappa", "conv_stem.step", "blocks.1.2.gate", "blocks.2.2.kappa"} <= names


def test_prepend_keeps_the_pretrained_stem(checkpoint) -> None:
    state, pth, _ = checkpoint
    model = create_model(ModelConfig(pretrained=str(pth), stem=StemConfig(mode="prepend", iterations=2)))
    assert isinstance(model.conv_stem[0], DiffusionPrepend)
    torch.testing.assert_close(model.conv_stem[1].weight, adapt_input_conv(1, state["conv_stem.weight"]))
    model.eval()
    assert model(torch.rand(2, 1, 33, 35)).shape == (2, 2)


def test_shape_mismatch_names_the_layers(checkpoint, tmp_path: Path) -> None:
    state, _, _ = checkpoint
    bad = dict(state)
    bad["blocks.0.0.conv_dw.weight"] = torch.zeros(32, 1, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ModelError, match=r"blocks\.0\.0\.conv_dw\.weight: checkpoint \(32, 1, 5, 5\) vs model"):
        create_model(ModelConfig(pretrained=str(path)))


def test_missing_backbone_weights_are_an_error(checkpoint, tmp_path: Path) -> None:
    state, _, _ = checkpoint
    part = {k: v for k, v in state.items() if not k.startswith("blocks.6")}
    path = tmp_path / "part.safetensors"
    save_file({k: v.contiguous() for k, v in part.items()}, str(path))
    with pytest.raises(ModelError, match=r"lacks weights for efficientnet_b0 layers: blocks\.6\.0"):
        create_model(ModelConfig(pretrained=str(path)))


class _Evil:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("unpickled!",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(ModelError, match=r"weights_only=True"):
        create_model(ModelConfig(pretrained=str(path)))


def test_missing_file_and_bad_extension(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"does not exist"):
        create_model(ModelConfig(pretrained=str(tmp_path / "nope.pth")))
    # A mapping is validated by the suite's schema, with the same key-path error.
    bad = tmp_path / "w.bin"
    bad.write_bytes(b"00")
    with pytest.raises(ModelError, match=r"^model\.pretrained: '.*w\.bin' is not a weights file; accepted: none, imagenet"):
        create_model({"pretrained": str(bad)})


def test_imagenet_offline_fails_early_with_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError) as info:
        check_weights(ModelConfig(pretrained="imagenet"))
    message = str(info.value)
    assert "\n" not in message
    assert "imagenet weights" in message and "--set model.pretrained=" in message


@pytest.mark.parametrize("size", [32, 33, 47, 64, 65])
def test_stem_output_shape_equals_conv_stem(size: int) -> None:
    plain = create_model(ModelConfig())
    stem = create_model(ModelConfig(stem=StemConfig(mode="replace", iterations=1)))
    x = torch.rand(2, 1, size, size + 3)
    with torch.no_grad():
        want = plain.conv_stem(x).shape
        got = stem.conv_stem(x).shape
    assert got == want == (2, 32, output_size(size), output_size(size + 3))


def test_tensor_variant_and_frozen_stem() -> None:
    model = create_model(ModelConfig(stem=StemConfig(variant="tensor", iterations=1, trainable=False)))
    assert model.conv_stem.variant == "tensor" and model.conv_stem.sigma == TENSOR_SIGMA
    assert create_model({"stem": {"variant": "tensor", "sigma": 2.5}}).conv_stem.sigma == 2.5
    assert create_model({"stem": {"variant": "tensor", "mode": "prepend", "sigma": 0}}).conv_stem[0].sigma == 0.0
    assert not any(p.requires_grad for p in model.conv_stem.parameters())
    model.eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)


def test_unsupported_values_are_named() -> None:
    with pytest.raises(ModelError, match=r"model\.architecture: 'resnet18' is not accepted; accepted: 'efficientnet_b0'"):
        create_model({"architecture": "resnet18"})
    with pytest.raises(ModelError, match=r"model\.stem\.mode: 'middle' is not accepted; accepted: 'replace' or"):
        create_model({"stem": {"mode": "middle"}})
    with pytest.raises(ModelError, match=r"after_stages: stage\(s\) \[9\] out of range; accepted: 0\.\.6"):
        create_model({"diffusion_blocks": {"after_stages": [9]}})
    with pytest.raises(ModelError, match=r"sigma: 1\.0 applies to type: diffusion, variant: tensor only"):
        create_model({"stem": {"variant": "perona_malik", "sigma": 1.0}})
    with pytest.raises(ModelError, match=r"model\.stem\.sigma"):
        create_model({"stem": {"variant": "tensor", "sigma": -1}})


def test_unreachable_hub_goes_offline_at_once_and_says_both_fixes(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    import harness.models as models

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    seen: list[bool] = []
    real = models.timm.create_model

    def spy(*args, **kwargs):
        seen.append(hf_constants.HF_HUB_OFFLINE)
        return real(*args, **kwargs)

    monkeypatch.setattr(models.timm, "create_model", spy)
    before = hf_constants.HF_HUB_OFFLINE
    with pytest.raises(ModelError) as info:
        check_weights(ModelConfig(pretrained="imagenet"))
    message = str(info.value)
    assert seen == [True]  # no download retries: the hub client was offline
    assert hf_constants.HF_HUB_OFFLINE == before  # and is restored
    assert "\n" not in message and "not reachable" in message
    assert "--set model.pretrained=/path/to/efficientnet_b0.safetensors" in message
    assert "--set model.architecture=efficientnet_lite0" in message  # the ImageNet weights installed offline
    assert "python -m harness pretrain" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_long_reasons_are_cut_at_a_word() -> None:
    from harness.models import _shorten

    text = "word " * 60
    short = _shorten(text.strip(), 50)
    assert short.endswith(" …") and len(short) <= 52
    assert all(part == "word" for part in short[:-2].split())
