"""Conformance of every registered filter to the one filter contract (as timm tests every model).

Each test runs over ``diffusion_filters.available()`` with the spec's ``example`` parameters, so a
newly registered filter is checked without writing a test for it: function and module agree;
the function's signature is the spec's (keyword-only after the image); the config round-trips
and int/float spellings give one config and one hash; ``describe()`` reflects every parameter;
numpy in gives numpy out with the documented dtype rules; gradients flow where the spec declares
them; wrong types and out-of-range values are rejected with the filter's name; a non-finite
output raises; too-small images are reported before and when an image is seen.

The runtime contract itself (shape, dtype, finite output, range, input left unchanged,
determinism, each frame filtered on its own) is one function of the library,
:func:`diffusion_filters.check_conformance`: the harness runs it on every filter from outside the
package before training (``harness.prechecks``), and this file runs it on every built-in one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from typing import Any

import numpy as np
import pytest
import torch

import diffusion_filters as df
from diffusion_filters._filter import NonFiniteOutputError
from diffusion_filters._spec import REQUIRED, FilterSpec, Param

NAMES = df.available()


def _spec(name: str) -> FilterSpec:
    return df.get_filter_class(name).spec  # type: ignore[attr-defined]


def _canonical(name: str) -> dict[str, Any]:
    return _spec(name).canonicalise(_spec(name).example)


def _image(name: str, side: int = 20, *, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    side = max(side, _spec(name).min_image_size(_canonical(name)) + 2)
    g = torch.Generator().manual_seed(seed)
    return (0.2 + 0.6 * torch.rand(2, 1, side, side + 1, generator=g)).to(dtype)


def _hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _high(p: Param, params: dict[str, Any]) -> float | None:
    return p.high_value(params)


def _valid(p: Param, v: Any, params: dict[str, Any]) -> bool:
    try:
        p.canonical(v, "t", params)
        return True
    except ValueError:
        return False


def _alternative(p: Param, value: Any, params: dict[str, Any]) -> Any:
    """A valid value different from ``value`` (for the describe() test)."""
    if p.kind == "choice":
        return next(c for c in p.choices if c != value)
    if p.kind == "spacing":
        return (1.0, 2.0) if value is None else None
    if value is None:  # nullable number: a value inside the range
        low = p.low or 0.0
        return (low + min(_high(p, params) or low + 1.0, low + 1.0)) / 2
    step = 2 if p.odd else 1
    mid = ((p.low or 0.0) + min(_high(p, params) or 1.0, (p.low or 0.0) + 1.0)) / 2
    candidates = [value + step, value - step] if p.kind == "int" else [value / 2, (value + (p.low or 0.0)) / 2, value * 1.5, mid]
    return next(c for c in candidates if c != value and _valid(p, c, params))


def _bad_values(p: Param, params: dict[str, Any]) -> list[Any]:
    """Values of the wrong type and values just outside the accepted range."""
    bad: list[Any] = ["1", True]
    if p.kind in ("int", "real", "spacing"):
        bad += [float("nan"), float("inf"), -float("inf")]
    if p.kind == "choice":
        bad += ["no-such-choice", 1]
        return bad
    if p.kind == "int":
        bad += [2.5, float(p.low if p.low is not None else 0)]  # a float where an int is meant
    if p.kind == "real" and not p.tensor:
        bad.append(torch.tensor(1.0))
    high = _high(p, params)
    if high is not None:
        bad.append(int(high) + 1 if p.kind == "int" else high * 10 + 1)
    if p.low is not None:
        below = p.low if p.low_open else (p.low - 1 if p.kind == "int" else p.low - max(abs(p.low), 1e-9) * 0.5 - 1e-12)
        bad.append(int(below) if p.kind == "int" else below)
    if p.kind == "spacing":
        bad += [(1.0,), (1.0, "2"), (1.0, 0.0)]
    return bad


# ------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", NAMES)
def test_every_filter_declares_the_contract(name: str) -> None:
    cls = df.get_filter_class(name)
    assert issubclass(cls, df.Filter), f"{name}: register a diffusion_filters.Filter subclass"
    spec = cls.spec
    assert spec.name == name and spec.example, f"{name}: the spec needs its name and example parameters"
    assert callable(cls.function) and callable(cls.kernel)
    for p in spec.params:
        if p.kind in ("int", "real", "spacing"):
            assert p.high is not None, f"{name}.{p.name}: every numeric parameter needs an upper bound"
        assert p.name in (cls.function.__doc__ or ""), f"{name}: the docstring does not document {p.name}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", [16, 33])
def test_every_filter_meets_the_runtime_contract(name: str, side: int) -> None:
    spec = _spec(name)
    size = (max(side, spec.min_image_size(_canonical(name))), side + 3)
    df.check_conformance(df.create(name, **spec.example), size)  # raises ConformanceError naming the property


def test_the_runtime_contract_refuses_each_property_in_one_line() -> None:
    from diffusion_filters.conformance import ConformanceError

    state = {"n": 0}

    def drifting(x: torch.Tensor) -> torch.Tensor:
        state["n"] += 1
        return x * (1.0 - 0.01 * state["n"])

    def in_place(x: torch.Tensor) -> torch.Tensor:
        return x.mul_(0.5)

    cases = [
        (lambda x: x[..., 1:], "shape", "changed the shape (2, 1, 16, 16) to (2, 1, 16, 15)"),
        (lambda x: x.double(), "dtype", "returned float64, not float32"),
        (lambda x: x * float("nan"), "finite", "the output has 512 NaN/Inf value(s) of 512"),
        (lambda x: x * 255, "range", "output range [0, 255] is outside [0, 1]"),
        (in_place, "input unchanged", "modified its input in place"),
        (drifting, "deterministic", "not deterministic: two calls on the same frames differ by up to 0.01"),
        (lambda x: 0.5 * x + 0.5 * x.mean(), "per frame", "a frame filtered alone differs from the same frame"),
        (lambda x: x.numpy(), "tensor", "returned a ndarray, not a torch.Tensor"),
        (lambda x: 1 / 0, "runs", "raised ZeroDivisionError: division by zero on 2 frame(s) of 16x16"),
    ]
    for f, prop, text in cases:
        with pytest.raises(ConformanceError) as err:
            df.check_conformance(f, 16, name="f")
        assert err.value.property == prop and str(err.value).startswith(f"f: {text}"), str(err.value)
        assert "\n" not in str(err.value) and "accepted: " in str(err.value)


@pytest.mark.parametrize("name", NAMES)
def test_signatures_are_the_spec(name: str) -> None:
    cls = df.get_filter_class(name)
    spec = cls.spec
    params = list(inspect.signature(cls.function).parameters.values())
    assert params[0].name == "x" and params[0].kind == params[0].POSITIONAL_OR_KEYWORD
    assert [p.name for p in params[1:]] == spec.names()
    assert all(p.kind == p.KEYWORD_ONLY for p in params[1:]), f"{name}: parameters after the image are keyword-only"
    for p in params[1:]:
        default = spec.param(p.name).default
        assert (p.default is p.empty) == (default is REQUIRED), p.name
        if default is not REQUIRED:
            assert p.default == default, f"{name}.{p.name}: function default {p.default!r} != spec {default!r}"
    module_sig = inspect.signature(cls)
    assert list(module_sig.parameters) == spec.names()
    assert all(p.kind == p.KEYWORD_ONLY for p in module_sig.parameters.values())


@pytest.mark.parametrize("name", NAMES)
def test_function_and_module_agree(name: str) -> None:
    x = _image(name)
    ex = _spec(name).example
    module = df.create(name, **ex)
    assert torch.equal(module(x), df.get_filter_class(name).function(x, **ex))
    assert module.get_params() == _canonical(name)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips(name: str) -> None:
    pipe = df.Pipeline.from_config([{name: dict(_spec(name).example)}])
    config = pipe.config()
    assert json.loads(json.dumps(config)) == config, "the canonical config is plain JSON"
    again = df.Pipeline.from_config(config)
    assert again.config() == config
    x = _image(name)
    assert torch.equal(pipe(x), again(x))


@pytest.mark.parametrize("name", NAMES)
def test_int_float_and_numpy_spellings_give_one_config(name: str) -> None:
    spec = _spec(name)
    base = _canonical(name)
    reference = df.Pipeline.from_config([{name: base}]).config()
    for p in spec.params:
        value = base[p.name]
        variants: list[Any] = []
        if p.kind == "int":
            variants = [np.int64(value), np.int32(value)]
        elif p.kind == "real" and value is not None:
            variants = [np.float64(value), np.float32(value) if float(np.float32(value)) == value else np.float64(value)]
            integer = next((i for i in (1, 2, 3) if _valid(p, i, base)), None)
            if integer is not None:  # 1 and 1.0 must give the same config and hash
                as_int = df.Pipeline.from_config([{name: {**base, p.name: integer}}]).config()
                as_float = df.Pipeline.from_config([{name: {**base, p.name: float(integer)}}]).config()
                assert as_int == as_float and _hash(as_int) == _hash(as_float), f"{name}.{p.name}"
                assert type(as_int[0][name][p.name]) is float
        for v in variants:
            config = df.Pipeline.from_config([{name: {**base, p.name: v}}]).config()
            assert config == reference and _hash(config) == _hash(reference), f"{name}.{p.name}={v!r}"
    # Omitting defaulted parameters is the same config as stating them.
    assert df.Pipeline.from_config([{name: dict(spec.example)}]).config() == reference


@pytest.mark.parametrize("name", NAMES)
def test_describe_reflects_every_parameter(name: str) -> None:
    spec = _spec(name)
    base = _canonical(name)
    text = df.create(name, **base).describe()
    assert isinstance(text, str) and text and "\n" not in text
    for p in spec.params:
        other = {**base, p.name: _alternative(p, base[p.name], base)}
        assert df.create(name, **other).describe() != text, f"{name}: describe() does not show {p.name}"


@pytest.mark.parametrize("name", NAMES)
def test_numpy_in_numpy_out_with_the_dtype_rules(name: str) -> None:
    fn = df.get_filter_class(name).function
    ex = _spec(name).example
    x = _image(name)[0, 0]
    u8 = (x.numpy() * 255).round().astype(np.uint8)
    out = fn(u8, **ex)
    assert isinstance(out, np.ndarray) and out.shape == u8.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, fn(torch.from_numpy(u8.astype(np.float32) / np.float32(255)), **ex).numpy())
    chw = np.stack([x.numpy(), x.numpy()[::-1]]).astype(np.float64)
    out64 = fn(chw, **ex)
    assert isinstance(out64, np.ndarray) and out64.shape == chw.shape and out64.dtype == np.float64
    out32 = fn(chw.astype(np.float32), **ex)
    assert out32.dtype == np.float32 and out32.shape == chw.shape
    t = fn(torch.from_numpy(chw), **ex)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.shape == chw.shape


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_where_declared(name: str) -> None:
    cls = df.get_filter_class(name)
    spec, base = cls.spec, _canonical(name)
    x = _image(name, 12, dtype=torch.float64).requires_grad_()
    weights = torch.rand(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    if not spec.differentiable:
        with pytest.raises(Exception, match=name):
            cls.function(x, **base)
        return
    tensors = {
        p.name: torch.tensor(float(base[p.name]), dtype=torch.float64, requires_grad=True)
        for p in spec.params
        if p.tensor and base[p.name] is not None
    }
    y = cls.function(x, **{**base, **tensors})
    (y * weights).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    for pname, t in tensors.items():
        assert t.grad is not None and bool(torch.isfinite(t.grad).all()), f"{name}: no gradient for {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_types_and_bounds_are_rejected_with_the_filters_name(name: str) -> None:
    spec, base = _spec(name), _canonical(name)
    fn = df.get_filter_class(name).function
    x = _image(name)
    for p in spec.params:
        for bad in _bad_values(p, base):
            params = {**base, p.name: bad}
            with pytest.raises(ValueError, match=rf"^{name}: {p.name}") as err:
                df.create(name, **params)
            assert "\n" not in str(err.value)
            with pytest.raises(ValueError, match=rf"^{name}: {p.name}"):
                fn(x, **params)
            with pytest.raises(ValueError, match=rf"^preprocess\[0\]\.{name}: {p.name}"):
                df.Pipeline.from_config([{name: params}])
    with pytest.raises(TypeError):
        fn(x, *base.values())  # parameters after the image are keyword-only


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_output_raises_with_the_filters_name(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = df.get_filter_class(name)
    module = df.create(name, **cls.spec.example)
    monkeypatch.setattr(cls, "kernel", staticmethod(lambda t, p: t * float("nan")))
    with pytest.raises(NonFiniteOutputError, match=rf"^{name}: the output has"):
        module(_image(name))


@pytest.mark.parametrize(
    ("name", "value"),
    [("srad", 1e30), ("coherence_enhancing", 1e30), ("edge_enhancing", 3e38), ("nonlocal_means", 3e38)],
)
def test_overflow_on_finite_input_raises_instead_of_returning_nan(name: str, value: float) -> None:
    fn = df.get_filter_class(name).function
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * value
    try:
        y = fn(x, **_spec(name).example)
    except NonFiniteOutputError as err:
        assert str(err).startswith(f"{name}: ")
    else:
        assert bool(torch.isfinite(y).all())


@pytest.mark.parametrize("name", NAMES)
def test_image_size_is_checked_before_and_when_the_image_is_seen(name: str) -> None:
    spec, base = _spec(name), _canonical(name)
    need = spec.min_image_size(base)
    config = [{name: dict(spec.example)}]
    df.check_image_size(config, need)
    assert df.Pipeline.from_config(config).min_image_size() == need
    if need > 1:
        with pytest.raises(ValueError, match=rf"^preprocess\[0\]\.{name}: image of size .* minimum size is {need}x{need}$"):
            df.check_image_size(config, (need - 1, 64))
        with pytest.raises(ValueError, match=rf"^{name}: image of size"):
            df.get_filter_class(name).function(torch.rand(need - 1, 64), **spec.example)


def test_huge_values_are_rejected_before_any_work() -> None:
    cases = [
        ("perona_malik", {"iterations": 1_000_000_000, "kappa": 0.1, "step": 0.2}),
        ("gaussian", {"sigma": 1e30}),
        ("gaussian", {"sigma": 1e7}),
        ("coherence_enhancing", {"iterations": 1, "step": 0.5, "sigma": 1e7, "rho": 1.0}),
        ("coherence_enhancing", {"iterations": 1, "step": 0.5, "sigma": 1.0, "rho": 1e30}),
        ("edge_enhancing", {"iterations": 1, "step": 0.5, "sigma": 1e7, "lam": 0.05}),
        ("edge_enhancing", {"iterations": 1, "step": 0.5, "sigma": 1.0, "lam": 1e30}),
        ("nonlocal_means", {"patch_size": 10001, "search_size": 5, "h": 0.1}),
        ("median", {"size": 999}),
    ]
    for name, params in cases:
        with pytest.raises(ValueError, match=rf"^{name}: \w+=.* is invalid; must be .* in [\[(].*[\])]$"):
            df.create(name, **params)


def test_upper_bounds_are_finite_numbers() -> None:
    for name in NAMES:
        for p in _spec(name).params:
            high = _high(p, _canonical(name))
            if p.kind in ("int", "real", "spacing"):
                assert high is not None and math.isfinite(high), f"{name}.{p.name}"
