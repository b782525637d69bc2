"""Training step cost of the plain EfficientNet-B0 and of each diffusion variant (issue 5 §5),
plus a run of ``python -m harness bench`` on tiny settings.

pytest-benchmark (CI runs it once with --benchmark-disable; inputs are tiny):
``python -m pytest tests/benchmarks/test_bench_training.py --benchmark-enable``.
The table with ratios against the plain network measured in the same run is
``python -m harness bench --image-size 128 --batch-size 32`` (harness/bench.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from harness.bench import VARIANTS, main
from harness.models import create_model
from harness.suite import ModelConfig

SIZE, BATCH = 32, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _step_fn(variant: str):
    torch.manual_seed(0)
    model = create_model(ModelConfig(**VARIANTS[variant])).to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.rand(BATCH, 1, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1] * (BATCH // 2))

    def step() -> float:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bench_training_step(benchmark, variant: str) -> None:
    step = _step_fn(variant)
    loss = benchmark(step)
    assert torch.isfinite(torch.tensor(loss))


def test_bench_command_writes_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--image-size", "32", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--rounds", "1",
                 "--variants", "plain,stem-replace-pm", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "(a) training throughput" in text and "(b) training step per variant" in text
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["throughput"]]
    assert names[0].startswith("plain timm loop") and result["throughput"][0]["ratio"] == 1.0
    rows = {r["variant"]: r for r in result["variants"]}
    assert rows["plain"]["step_ratio"] == 1.0 and rows["plain"]["memory_ratio"] == 1.0
    # The stem keeps 32 diffused channels per iteration for the backward pass: more activations.
    assert rows["stem-replace-pm"]["activation_mb"] > rows["plain"]["activation_mb"]


def test_bench_rejects_unknown_variant() -> None:
    with pytest.raises(SystemExit):
        main(["--variants", "plain,nope"])
