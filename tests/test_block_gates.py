"""``model.diffusion_blocks.gate_init``: blocks whose gate can matter (issue 26 §1).

On COVID-BLUES the blocks' gates started at 0.02 and ended at 0.017-0.024: the arm was the baseline
plus at most 2.4 % of a diffused map. ``gate_init`` sets where the residual mix starts.
"""

from __future__ import annotations

import pytest
import torch

from diffusion_filters.layers import DiffusionBlock
from harness.models import create_model
from harness.suite import BlocksConfig, ModelConfig


def _gates(model: torch.nn.Module) -> list[float]:
    return [float(g) for m in model.modules() if isinstance(m, DiffusionBlock) for g in m.gate().detach()]


@pytest.mark.parametrize("gate_init", [0.02, 0.5])
def test_every_block_starts_at_its_gate(gate_init: float) -> None:
    cfg = ModelConfig(diffusion_blocks=BlocksConfig(after_stages=[1, 3], gate_init=gate_init))
    gates = _gates(create_model(cfg, in_chans=1))
    assert len(gates) > 0 and gates == pytest.approx([gate_init] * len(gates), rel=1e-6)


def test_the_default_keeps_the_identity_and_bad_values_are_refused() -> None:
    assert "gate_init" not in BlocksConfig(after_stages=[1]).model_dump(mode="json")
    assert BlocksConfig(after_stages=[1], gate_init=0.5).model_dump(mode="json")["gate_init"] == 0.5
    from pydantic import ValidationError

    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValidationError, match="gate_init"):
            BlocksConfig(after_stages=[1], gate_init=bad)


def test_an_open_gate_changes_what_the_network_computes() -> None:
    x = torch.rand(2, 1, 64, 64)
    torch.manual_seed(0)
    closed = create_model(ModelConfig(diffusion_blocks=BlocksConfig(after_stages=[2], gate_init=1e-6)), in_chans=1)
    torch.manual_seed(0)
    opened = create_model(ModelConfig(diffusion_blocks=BlocksConfig(after_stages=[2], gate_init=0.5)), in_chans=1)
    torch.manual_seed(0)
    plain = create_model(ModelConfig(), in_chans=1)
    for m in (closed, opened, plain):
        m.eval()
    with torch.no_grad():
        a, b, c = (m.forward_features(x) for m in (closed, opened, plain))  # the classifier starts near 0
    assert torch.allclose(a, c, atol=1e-4)  # a closed gate is the backbone
    assert (b - c).abs().mean() > 100 * (a - c).abs().mean()  # an open one is not
