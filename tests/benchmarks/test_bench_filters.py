"""Filter throughput (Perona-Malik, SRAD, Gaussian, median) and their anchors.

pytest-benchmark: ``python -m pytest tests/benchmarks/test_bench_filters.py --benchmark-enable``
(CI runs them once with --benchmark-disable, so the inputs are small: 8 images of 64x64). The
full-size table (32 x 256 x 256, every filter, ratios to MedPy / OpenCV / scikit-image measured in
the same run) is ``python -m diffusion_filters.bench``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffusion_filters as df
from diffusion_filters.bench import make_batch

BATCH = make_batch(8, 64, seed=0)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.from_numpy(BATCH.copy())


@pytest.mark.benchmark(group="perona_malik")
def test_bench_perona_malik(benchmark, batch: torch.Tensor) -> None:
    m = df.create("perona_malik", iterations=20, kappa=0.1, step=0.2)
    y = benchmark(m, batch)
    assert y.shape == batch.shape and float(y.std()) < float(batch.std())


@pytest.mark.benchmark(group="perona_malik")
def test_bench_perona_malik_with_grad(benchmark, batch: torch.Tensor) -> None:
    """Training-time cost: forward + backward through 20 iterations with learnable kappa/step."""
    kappa = torch.tensor(0.1, requires_grad=True)
    step = torch.tensor(0.2, requires_grad=True)

    def fwd_bwd() -> torch.Tensor:
        kappa.grad = step.grad = None
        df.perona_malik(batch, iterations=20, kappa=kappa, step=step).square().mean().backward()
        return kappa.grad

    g = benchmark(fwd_bwd)
    assert g is not None and bool(torch.isfinite(g))


@pytest.mark.benchmark(group="perona_malik")
def test_bench_anchor_medpy_perona_malik(benchmark) -> None:
    smoothing = pytest.importorskip("medpy.filter.smoothing")
    imgs = [BATCH[i, 0] for i in range(BATCH.shape[0])]
    out = benchmark(lambda: [smoothing.anisotropic_diffusion(im, niter=20, kappa=0.1, gamma=0.2, option=1) for im in imgs])
    assert len(out) == len(imgs)


@pytest.mark.benchmark(group="srad")
def test_bench_srad(benchmark, batch: torch.Tensor) -> None:
    m = df.create("srad", iterations=20, step=0.2)
    y = benchmark(m, batch)
    assert y.shape == batch.shape and float(y.std()) < float(batch.std())


# Each smoother of the library with its parameters, and the same filter in scipy.ndimage (the anchor).
SMOOTHERS = {
    "gaussian": ({"sigma": 2.0}, lambda ndi, im: ndi.gaussian_filter(im, 2.0, mode="reflect")),
    "median": ({"size": 3}, lambda ndi, im: ndi.median_filter(im, size=3, mode="reflect")),
}


@pytest.mark.benchmark(group="smoothing")
@pytest.mark.parametrize("name", SMOOTHERS)
def test_bench_smoothing(benchmark, batch: torch.Tensor, name: str) -> None:
    y = benchmark(df.create(name, **SMOOTHERS[name][0]), batch)
    assert y.shape == batch.shape


@pytest.mark.benchmark(group="smoothing")
@pytest.mark.parametrize("name", SMOOTHERS)
def test_bench_anchor_scipy_smoothing(benchmark, name: str) -> None:
    ndi = pytest.importorskip("scipy.ndimage")
    anchor = SMOOTHERS[name][1]
    out = benchmark(lambda: [anchor(ndi, BATCH[i, 0]) for i in range(BATCH.shape[0])])
    assert np.asarray(out).shape == BATCH[:, 0].shape
