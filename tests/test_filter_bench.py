"""``python -m diffusion_filters.bench``: the table, the C-kernel status line and the device option."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from diffusion_filters import bench


def test_bench_table_names_every_filter_anchor_and_the_c_kernels() -> None:
    res = bench.run_bench(batch_size=2, size=32, repeats=1, log=lambda _: None)
    assert res["device"] == "cpu" and set(res["native_kernels"]) == {"perona_malik", "srad", "nonlocal_means", "tensor_diffusion"}
    names = {r["name"] for r in res["results"]}
    assert {"perona_malik", "srad", "nonlocal_means"} <= names
    for r in res["results"]:
        assert r["images_per_s"] > 0 and all(v > 0 for v in r["ratios"].values())
    table = bench.format_table(res)
    assert "C kernels: perona_malik in use, srad in use, nonlocal_means in use, tensor_diffusion in use" in table
    assert "coherence_enhancing / perona_malik" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where no CUDA device exists")
def test_bench_on_cuda_without_a_device_is_one_clear_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "diffusion_filters.bench", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("no CUDA device is available to torch here; accepted: cpu")
