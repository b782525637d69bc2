"""The runtime contract of a preprocessing filter, checked on synthetic frames before it is used.

One function, :func:`check_conformance`, for every filter: the test suite runs it on every
built-in filter (``tests/test_filter_conformance.py``) and the harness runs it on every filter
from outside the package (``callable:`` / ``module:`` steps, entry-point filters) before any
training (``harness.prechecks``). A filter conforms when, on a batch of synthetic frames
(:func:`conformance_frames`: ``(B, 1, H, W)`` float32 in ``[0, 1]``, speckle and bright vertical
lines over a smooth background, exact 0 and 1 included), it

1. runs (an exception is reported in one line);
2. returns a ``torch.Tensor``
3. of the input's shape
4. and dtype (float32);
5. whose values are all finite
6. and lie in ``[0, 1]`` up to :data:`RANGE_TOLERANCE`: the harness clips the filtered frames to
   exactly ``[0, 1]`` (as it does for the built-in filters: the tensor-diffusion schemes overshoot
   near sharp edges by a few hundredths), so the tolerance admits such overshoot and refuses a
   filter on another scale (``0..255``, ``[-1, 1]``) rather than clipping it to white or black;
7. leaves its input unchanged (no in-place edit of the caller's batch);
8. is deterministic: a second call on the same frames gives the same values, bit for bit (the
   preprocessing cache and the paired design assume it);
9. filters each frame on its own: a frame filtered alone equals that frame filtered in the batch
   (within :data:`BATCH_TOLERANCE`; the harness filters in batches whose composition varies).

The first property broken raises :class:`ConformanceError` with one line naming the filter and the
property, e.g. ``my_filters:Noisy: not deterministic: two calls on the same frames differ by up
to 0.031; accepted: a filter that gives the same output for the same input``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral

import torch

__all__ = ["BATCH_TOLERANCE", "PROPERTIES", "RANGE_TOLERANCE", "ConformanceError", "check_conformance",
           "conformance_frames"]

#: How far outside [0, 1] an output value may lie before the harness clips it (the overshoot of a scheme
#: that does not keep the range exactly; an output on another scale lies far beyond it).
RANGE_TOLERANCE = 0.25
#: Largest difference between a frame filtered alone and in a batch (batched kernels may round differently).
BATCH_TOLERANCE = 1e-5
#: The properties, in the order they are checked (``ConformanceError.property``).
PROPERTIES = ("runs", "tensor", "shape", "dtype", "finite", "range", "input unchanged", "deterministic",
              "per frame")


class ConformanceError(ValueError):
    """A filter that breaks the contract; ``property`` is one of :data:`PROPERTIES`."""

    def __init__(self, name: str, prop: str, message: str):
        self.name = name
        self.property = prop
        super().__init__(f"{name}: {message}")


def conformance_frames(size: int | Sequence[int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """``(batch, 1, H, W)`` float32 synthetic ultrasound-like frames in ``[0, 1]`` (``size``: a side or ``(H, W)``)."""
    h, w = (size, size) if isinstance(size, Integral) else (int(size[0]), int(size[1]))
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0.0, 1.0, h).view(h, 1)
    xx = torch.linspace(0.0, 1.0, w).view(1, w)
    frames = []
    for b in range(batch):
        background = 0.25 + 0.2 * torch.sin(6.0 * xx + 2.0 * b) * torch.cos(4.0 * yy)
        line = 0.6 * torch.exp(-(((xx - (0.3 + 0.4 * b / max(batch, 1))) / 0.04) ** 2)) * (yy > 0.2).float()
        speckle = torch.empty(h, w).exponential_(1.0, generator=g)
        frames.append((background + line) * speckle)
    x = torch.stack(frames).unsqueeze(1).clamp_(0.0, 1.0)
    x.view(batch, -1)[:, 0] = 0.0  # exact bounds present
    x.view(batch, -1)[:, -1] = 1.0
    return x.contiguous()


def _call(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, name: str) -> torch.Tensor:
    try:
        with torch.no_grad():
            return f(x)
    except Exception as err:
        text = " ".join(str(err).split())
        text = text if len(text) <= 300 else text[:297] + "..."
        raise ConformanceError(name, "runs", f"raised {type(err).__name__}" + (f": {text}" if text else "")
                               + f" on {x.shape[0]} frame(s) of {x.shape[-2]}x{x.shape[-1]}; accepted: a filter "
                               "that runs on (B, 1, H, W) float32 frames in [0, 1]") from None


def check_conformance(f: Callable[[torch.Tensor], torch.Tensor], size: int | Sequence[int] = 32, *,
                      name: str | None = None, batch: int = 2, seed: int = 0) -> None:
    """Raise :class:`ConformanceError` (one line) when ``f`` breaks the contract on frames of ``size``.

    ``f`` is a filter module (set to ``eval()`` here when it is an ``nn.Module``) or any function of a
    ``(B, 1, H, W)`` tensor; ``name`` (default: its ``describe()`` or type) starts the message.

    Example:
        >>> import diffusion_filters as df
        >>> check_conformance(df.create("median", size=3), 16)
        >>> check_conformance(lambda x: x * 255, 16, name="scaled")
        Traceback (most recent call last):
        ...
        diffusion_filters.conformance.ConformanceError: scaled: output range [0, 255] is outside [0, 1]; accepted: values in [0, 1] (within 0.25, clipped by the harness): a filter that keeps the frames' scale
    """
    if name is None:
        describe = getattr(f, "describe", None)
        name = describe() if callable(describe) else type(f).__name__
    if isinstance(f, torch.nn.Module):
        f.eval()
    x = conformance_frames(size, batch, seed)
    original = x.clone()
    y = _call(f, x, name)
    if not isinstance(y, torch.Tensor):
        raise ConformanceError(name, "tensor", f"returned a {type(y).__name__}, not a torch.Tensor; accepted: a "
                                               "tensor of the input's shape")
    if tuple(y.shape) != tuple(x.shape):
        raise ConformanceError(name, "shape", f"changed the shape {tuple(x.shape)} to {tuple(y.shape)}; accepted: "
                                              "the input's shape")
    if y.dtype != torch.float32:
        raise ConformanceError(name, "dtype", f"returned {str(y.dtype).removeprefix('torch.')}, not float32; "
                                              "accepted: the input's dtype, float32")
    y = y.detach().cpu()
    bad = int((~torch.isfinite(y)).sum())
    if bad:
        raise ConformanceError(name, "finite", f"the output has {bad} NaN/Inf value(s) of {y.numel()} on finite "
                                               "frames in [0, 1]; accepted: finite values")
    lo, hi = float(y.min()), float(y.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise ConformanceError(name, "range", f"output range [{lo:.4g}, {hi:.4g}] is outside [0, 1]; accepted: "
                                              f"values in [0, 1] (within {RANGE_TOLERANCE:g}, clipped by the "
                                              "harness): a filter that keeps the frames' scale")
    if not torch.equal(x, original):
        raise ConformanceError(name, "input unchanged", "modified its input in place; accepted: a filter that "
                                                        "leaves its input unchanged (work on a copy)")
    again = _call(f, x.clone(), name)
    if not (isinstance(again, torch.Tensor) and again.shape == y.shape and torch.equal(again.detach().cpu(), y)):
        diff = float((again.detach().cpu() - y).abs().max()) if isinstance(again, torch.Tensor) \
            and again.shape == y.shape else float("nan")
        raise ConformanceError(name, "deterministic", f"not deterministic: two calls on the same frames differ by "
                                                      f"up to {diff:.3g}; accepted: a filter that gives the same "
                                                      "output for the same input")
    if batch > 1:
        alone = _call(f, x[-1:].clone(), name)
        if not isinstance(alone, torch.Tensor) or alone.shape != y[-1:].shape:
            raise ConformanceError(name, "shape", f"changed the shape of one frame {tuple(x[-1:].shape)} to "
                                                  f"{tuple(getattr(alone, 'shape', ()))}; accepted: the input's shape")
        diff = float((alone.detach().cpu().float() - y[-1:]).abs().max())
        if not diff <= BATCH_TOLERANCE:
            raise ConformanceError(name, "per frame", f"a frame filtered alone differs from the same frame filtered in "
                                                      f"a batch by up to {diff:.3g}; accepted: a filter that "
                                                      "filters each frame on its own (no batch statistics)")
