"""Shared foundations of diffusion_filters: input conversion, parameter handling, validation, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffusion_filters as df
from diffusion_filters._image import as_bchw, as_param
from diffusion_filters._validation import (
    check_choice,
    check_finite,
    check_min_size,
    check_nonneg_int,
    check_odd_int,
    check_positive,
    check_step,
)
from diffusion_filters.registry import accepted_params, get_filter_class


@pytest.mark.parametrize("shape", [(5, 6), (3, 5, 6), (2, 3, 5, 6)])
def test_as_bchw_shapes_round_trip(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, dtype=torch.float64)
    t, restore = as_bchw(x)
    assert t.dim() == 4 and t.shape[-2:] == (5, 6) and t.dtype == torch.float64
    back = restore(t)
    assert isinstance(back, torch.Tensor) and back.shape == x.shape
    assert torch.equal(back, x)


def test_as_bchw_numpy_dtypes() -> None:
    u8 = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    t, restore = as_bchw(u8)
    assert t.dtype == torch.float32 and t.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(t[0, 0].numpy(), [[0.0, 1.0], [0.2, 0.4]], atol=1e-7)
    out = restore(t)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2) and out.dtype == np.float32

    u16 = np.array([[0, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(as_bchw(u16)[0].numpy().ravel(), [0.0, 1.0])
    assert as_bchw(np.ones((2, 2), dtype=bool))[0].dtype == torch.float32
    i32 = as_bchw(np.full((2, 2), 7, dtype=np.int32))[0]
    assert i32.dtype == torch.float32 and float(i32.max()) == 7.0
    f64 = as_bchw(np.zeros((2, 2), dtype=np.float64))[0]
    assert f64.dtype == torch.float64
    big_endian = np.arange(4, dtype=">f4").reshape(2, 2)
    np.testing.assert_array_equal(as_bchw(big_endian)[0].numpy().ravel(), [0, 1, 2, 3])


def test_as_bchw_read_only_and_strided_numpy() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::-1]
    a.setflags(write=False)
    t, _ = as_bchw(a)
    np.testing.assert_array_equal(t[0, 0].numpy(), a)


def test_as_bchw_torch_dtypes() -> None:
    assert torch.equal(as_bchw(torch.tensor([[0, 255]], dtype=torch.uint8))[0].ravel(), torch.tensor([0.0, 1.0]))
    assert as_bchw(torch.zeros(2, 2, dtype=torch.float16))[0].dtype == torch.float32
    assert as_bchw(torch.zeros(2, 2, dtype=torch.int64))[0].dtype == torch.float32


def test_as_bchw_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"myfilter: image must have shape \(H, W\)"):
        as_bchw(torch.zeros(4), "myfilter")
    with pytest.raises(ValueError, match="5 dimensions"):
        as_bchw(torch.zeros(1, 1, 1, 2, 2))
    with pytest.raises(TypeError, match="expected a torch.Tensor or numpy.ndarray"):
        as_bchw([[1.0, 2.0]])
    with pytest.raises(TypeError, match="unsupported numpy dtype"):
        as_bchw(np.zeros((2, 2), dtype=np.complex64))
    with pytest.raises(ValueError, match="empty image"):
        as_bchw(torch.zeros(0, 3))


def test_as_param_number_and_tensor_keep_graph() -> None:
    like = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    p = as_param(0.5, like)
    assert p.shape == (1, 1, 1, 1) and p.dtype == torch.float64 and float(p) == 0.5
    k = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    q = as_param(k.view(3, 1, 1), like)
    assert q.shape == (1, 3, 1, 1) and q.dtype == torch.float64
    q.sum().backward()
    assert torch.equal(k.grad, torch.ones(3))
    assert as_param(torch.ones(2, 1, 1, 1), like).shape == (2, 1, 1, 1)


def test_as_param_rejects_bad_shapes_and_types() -> None:
    like = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"pm: kappa tensor of shape \(3,\) does not broadcast to \(B, C, 1, 1\)"):
        as_param(torch.ones(3), like, "kappa", "pm")
    with pytest.raises(ValueError, match="does not broadcast"):
        as_param(torch.ones(2, 3, 4, 4), like)
    with pytest.raises(TypeError, match="must be a number or a tensor"):
        as_param("0.1", like)
    with pytest.raises(TypeError):
        as_param(True, like)


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"^f: input image contains 2 NaN/Inf value\(s\)"):
        check_finite(torch.tensor([1.0, float("nan"), float("inf")]), "f")
    check_finite(torch.full((3,), 3e38), "f")  # the sum overflows, the values are finite
    with pytest.raises(ValueError, match=r"^f: kappa=0.0 is invalid; must be finite and > 0$"):
        check_positive("kappa", 0.0, "f")
    with pytest.raises(ValueError, match="kappa=tensor"):
        check_positive("kappa", torch.tensor([0.1, -1.0]), "f")
    check_positive("kappa", torch.tensor([0.1, 2.0]), "f")
    with pytest.raises(ValueError, match=r"iterations=-1 is invalid; must be an integer >= 0"):
        check_nonneg_int("iterations", -1, "f")
    with pytest.raises(ValueError, match=r"iterations=2.5 is invalid"):
        check_nonneg_int("iterations", 2.5, "f")
    with pytest.raises(ValueError, match="iterations=True"):
        check_nonneg_int("iterations", True, "f")
    assert check_nonneg_int("iterations", np.int64(3), "f") == 3
    with pytest.raises(ValueError, match=r"^f: step=0.3 is outside the stability bound 0 < step <= 0.25$"):
        check_step(0.3, 0.25, "f")
    with pytest.raises(ValueError, match="stability bound"):
        check_step(torch.tensor([0.1, 0.0]), 0.25, "f")
    check_step(torch.tensor([0.1, 0.25]), 0.25, "f")
    with pytest.raises(ValueError, match=r"^f: image of size 2x5 is smaller than the stencil; minimum size is 3x3$"):
        check_min_size(torch.zeros(1, 1, 2, 5), 3, "f")
    with pytest.raises(ValueError, match=r"size=4 is invalid; must be an odd integer >= 1"):
        check_odd_int("size", 4, "f")
    with pytest.raises(ValueError, match=r"conductance='x' is invalid; accepted: a, b"):
        check_choice("conductance", "x", ("a", "b"), "f")


def test_registry_lists_all_contract_filters() -> None:
    expected = {"perona_malik", "coherence_enhancing", "edge_enhancing", "nonlocal_means", "srad", "gaussian", "median"}
    assert expected <= set(df.available())
    assert df.available() == sorted(df.available())
    for name in expected:
        cls = get_filter_class(name)
        assert cls.filter_name == name
        assert callable(getattr(cls, "describe", None)), f"{name} has no describe()"


def test_create_errors_name_filter_key_and_accepted() -> None:
    with pytest.raises(ValueError, match=r"^perona_malik\.kapa: unknown parameter; accepted: iterations, kappa, step, conductance, spacing$"):
        df.create("perona_malik", iterations=1, kapa=0.1, step=0.1)
    with pytest.raises(ValueError, match=r"^nosuch: unknown filter; available: .*perona_malik"):
        df.create("nosuch")
    with pytest.raises(ValueError, match=r"^median: missing required parameter\(s\) size; accepted: size$"):
        df.create("median")
    with pytest.raises(ValueError, match=r"perona_malik: step=0.5 is outside the stability bound"):
        df.create("perona_malik", iterations=1, kappa=0.1, step=0.5)
    assert accepted_params("median") == (["size"], ["size"])


def test_register_filter_rejects_duplicates_and_non_modules() -> None:
    with pytest.raises(ValueError, match="already used"):

        @df.register_filter("median")
        class Other(torch.nn.Module):  # noqa: F841 - registration is the side effect under test
            pass

    with pytest.raises(TypeError, match="not an nn.Module"):
        df.register_filter("zzz_not_module")(int)
