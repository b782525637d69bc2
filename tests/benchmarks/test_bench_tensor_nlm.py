"""Throughput of the tensor-diffusion filters (CED, EED) and non-local means, with anchors.

pytest-benchmark: ``python -m pytest tests/benchmarks/test_bench_tensor_nlm.py --benchmark-enable``
(CI runs them once with --benchmark-disable, so the inputs are small: 4 x 1 x 64 x 64). The
anchors measured in the same run are one Perona–Malik iteration (the cost target: one CED/EED
iteration <= 4x one PM iteration) and scikit-image's ``denoise_nl_means`` in fast mode (target:
non-local means >= 2x its images/s). Full-size table (32 x 1 x 256 x 256) with ratios:
``python -m diffusion_filters.bench``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_filters.nonlocal_means import nonlocal_means
from diffusion_filters.tensor_diffusion import coherence_enhancing, edge_enhancing


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))


def test_bench_ced_one_iteration(benchmark, batch) -> None:
    out = benchmark(coherence_enhancing, batch, iterations=1, step=0.5, sigma=1.0, rho=2.0, alpha=0.001,
                    C=1e-6)
    assert out.shape == batch.shape


def test_bench_eed_one_iteration(benchmark, batch) -> None:
    out = benchmark(edge_enhancing, batch, iterations=1, step=0.5, sigma=1.0, lam=0.05)
    assert out.shape == batch.shape


def test_bench_pm_one_iteration_anchor(benchmark, batch) -> None:
    pm = pytest.importorskip("diffusion_filters.perona_malik")
    out = benchmark(pm.perona_malik, batch, iterations=1, kappa=0.1, step=0.2)
    assert out.shape == batch.shape


def test_bench_ced_with_gradients(benchmark, batch) -> None:
    """The learnable-layer path: forward + backward of 2 iterations with a tensor step."""
    step = torch.tensor(0.5, requires_grad=True)

    def run() -> torch.Tensor:
        out = coherence_enhancing(batch, iterations=2, step=step, sigma=1.0, rho=2.0, alpha=0.001, C=1e-6)
        out.sum().backward()
        return out

    assert benchmark(run).shape == batch.shape


def test_bench_nlm_patch7_search11(benchmark, batch) -> None:
    out = benchmark(nonlocal_means, batch, patch_size=7, search_size=11, h=0.1)
    assert out.shape == batch.shape


def test_bench_nlm_skimage_fast_anchor(benchmark, batch) -> None:
    restoration = pytest.importorskip("skimage.restoration")
    imgs = batch[:, 0].numpy().astype(np.float64)

    def run() -> list[np.ndarray]:
        return [restoration.denoise_nl_means(im, 7, 5, 0.1, fast_mode=True) for im in imgs]

    assert len(benchmark(run)) == 4
