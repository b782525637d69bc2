"""Pipeline: config round trip, canonical config, description, chaining, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import diffusion_filters as df

CONFIG = [
    {"perona_malik": {"iterations": 10, "kappa": 0.1, "step": 0.2}},
    {"median": {"size": 3}},
]


def test_from_config_chains_filters_in_order() -> None:
    pipe = df.Pipeline.from_config(CONFIG)
    x = torch.rand(2, 1, 24, 24)
    expected = df.median(df.perona_malik(x, iterations=10, kappa=0.1, step=0.2), size=3)
    assert torch.equal(pipe(x), expected)
    img = (np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)
    out = pipe(img)
    assert isinstance(out, np.ndarray) and out.shape == (24, 24)
    np.testing.assert_array_equal(out, df.median(df.perona_malik(img, iterations=10, kappa=0.1, step=0.2), size=3))


def test_describe_and_canonical_config() -> None:
    pipe = df.Pipeline.from_config(CONFIG)
    assert pipe.describe() == "Perona–Malik (exponential, 10 it., κ=0.1, Δt=0.2) → median (3×3)"
    canonical = pipe.config()
    assert canonical == [
        {"perona_malik": {"iterations": 10, "kappa": 0.1, "step": 0.2, "conductance": "exponential", "spacing": None}},
        {"median": {"size": 3}},
    ]
    # Spelling differences (defaults omitted/given, int vs float) give the same canonical form.
    other = df.Pipeline.from_config(
        [{"perona_malik": {"step": 0.2, "conductance": "exponential", "kappa": 0.1, "iterations": 10}}, {"median": {"size": 3}}]
    )
    assert json.dumps(other.config(), sort_keys=True) == json.dumps(canonical, sort_keys=True)
    assert df.Pipeline.from_config(canonical).config() == canonical
    assert df.Pipeline.from_config([{"gaussian": {"sigma": 2}}]).config() == [{"gaussian": {"sigma": 2.0}}]


def test_every_registered_filter_round_trips_through_config() -> None:
    params = {
        "perona_malik": {"iterations": 2, "kappa": 0.1, "step": 0.2, "conductance": "tukey", "spacing": [1.0, 1.5]},
        "srad": {"iterations": 2, "step": 0.2, "q0": 0.3},
        "gaussian": {"sigma": 1.0},
        "median": {"size": 3},
        "coherence_enhancing": {"iterations": 2, "step": 0.2, "sigma": 1.0, "rho": 2.0},
        "edge_enhancing": {"iterations": 2, "step": 0.2, "sigma": 1.0, "lam": 0.05},
        "nonlocal_means": {"patch_size": 3, "search_size": 5, "h": 0.1},
    }
    assert set(params) <= set(df.available())
    cfg = [{name: p} for name, p in params.items()]
    pipe = df.Pipeline.from_config(cfg)
    again = df.Pipeline.from_config(pipe.config())
    assert again.config() == pipe.config()
    assert len(pipe.describe().split(" → ")) == len(params)
    x = torch.rand(1, 1, 16, 16) + 0.1
    assert torch.equal(pipe(x), again(x))


def test_empty_pipeline_is_identity() -> None:
    for cfg in (None, []):
        pipe = df.Pipeline.from_config(cfg)
        x = torch.rand(5, 5)
        assert torch.equal(pipe(x), x)
        assert pipe.config() == [] and pipe.describe() == "identity (no preprocessing)"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ([{"gaussian": {"sigma": 1}}, {"median": {"sizee": 3}}], r"^preprocess\[1\]\.median\.sizee: unknown parameter; accepted: size$"),
        ([{"nosuch": {}}], r"^preprocess\[0\]\.nosuch: unknown filter; available: coherence_enhancing, edge_enhancing"),
        ([{"perona_malik": {"iterations": 1, "kappa": 0.1, "step": 0.9}}], r"^preprocess\[0\]\.perona_malik: step=0.9 is outside the stability bound 0 < step <= 0.25$"),
        ([{"median": {}}], r"^preprocess\[0\]\.median: missing required parameter\(s\) size"),
        ([{"median": {"size": 3}, "gaussian": {"sigma": 1}}], r"^preprocess\[0\]: expected a single-key mapping"),
        (["median"], r"^preprocess\[0\]: expected a single-key mapping"),
        ([{"median": 3}], r"^preprocess\[0\]\.median: parameters must be a mapping"),
        ({"median": {"size": 3}}, r"^preprocess: expected a list of single-key mappings"),
        ([{"gaussian": {"sigma": "wide"}}], r"^preprocess\[0\]\.gaussian: sigma='wide' is invalid; must be a number in \(0, 100\]$"),
    ],
)
def test_config_errors_name_index_filter_and_key(cfg: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        df.Pipeline.from_config(cfg)  # type: ignore[arg-type]


def test_where_prefix_is_configurable() -> None:
    with pytest.raises(ValueError, match=r"^arms\[2\]\.preprocess\[0\]\.median\.x: unknown parameter"):
        df.Pipeline.from_config([{"median": {"x": 1}}], where="arms[2].preprocess")
