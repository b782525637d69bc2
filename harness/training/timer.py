"""One wall-clock timer that sums named spans (``data``, ``forward``, ``backward``, ...)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class SpanTimer:
    """Sums wall-clock seconds per span name.

    On CUDA every boundary synchronises, so asynchronous kernel time lands in the span that
    launched it rather than in whichever span next waits for the device.

    Example:
        >>> t = SpanTimer(torch.device("cpu"))
        >>> with t.span("forward"):
        ...     _ = sum(range(10))
        >>> t.total("forward") >= 0.0
        True
    """

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        self._totals: defaultdict[str, float] = defaultdict(float)

    def now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def span(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            self._totals[name] += self.now() - start

    def add(self, name: str, seconds: float) -> None:
        self._totals[name] += seconds

    def total(self, name: str) -> float:
        return self._totals.get(name, 0.0)


__all__ = ["SpanTimer"]
