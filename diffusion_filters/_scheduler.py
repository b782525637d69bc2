"""Run a per-plane computation over a ``(B, C, H, W)`` batch in cache-sized chunks on a thread pool.

Every filter treats each ``(H, W)`` plane independently and is a chain of cheap elementwise
passes. On a CPU, whole-batch passes are bound by memory traffic and by page faults on freshly
allocated multi-megabyte temporaries, and OpenMP barriers stall badly when the cores are shared
with other processes. Chunks of a few planes keep every temporary in cache; the chunks run on a
small thread pool whose workers use one intra-op thread each (``torch.set_num_threads`` is per
thread), which uses every core without barriers. Results do not depend on the number of
workers: each chunk is computed the same way and the outputs are assembled in order.

:func:`for_each_chunk` is the pool itself, for kernels with several outputs per chunk (the C
gradient of Perona–Malik); :func:`run_planes` runs a per-plane computation on it, with one option:

* ``autograd=False`` (inference): runs under ``torch.no_grad``; every worker writes its chunk
  straight into a preallocated output, so no multi-threaded ``torch.cat`` is needed;
* ``autograd=True`` (training): keeps the autograd graph and the caller's grad mode; the chunks
  are concatenated.

Both carry the caller's inference mode into the workers (grad and inference mode are
thread-local).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["CPU_CHUNK_ELEMENTS", "for_each_chunk", "run_planes"]

CPU_CHUNK_ELEMENTS = 1 << 17
"""Pixels per chunk on CPU (two 256x256 planes)."""

Param = float | torch.Tensor


def run_planes(
    t: torch.Tensor,
    params: Mapping[str, Any],
    run: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor],
    *,
    autograd: bool = False,
    chunk_elements: int = CPU_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Apply ``run(planes, params)`` to the planes of ``t`` (B, C, H, W) and reassemble.

    ``planes`` is ``(n, 1, H, W)``; tensor parameters of shape ``(1|B, 1|C, 1, 1)`` are expanded
    to ``(B*C, 1, 1, 1)`` and sliced along with their planes; other values pass through. On a
    GPU the whole batch is one chunk.

    Args:
        autograd: keep the autograd graph (and the caller's grad mode); otherwise the result is
            computed under ``torch.no_grad`` into a preallocated output.
        chunk_elements: pixels per chunk on CPU.
    """
    b, c, h, w = t.shape
    total = b * c
    planes = t.reshape(total, 1, h, w)
    flat = {
        k: v.expand(b, c, 1, 1).reshape(total, 1, 1, 1) if isinstance(v, torch.Tensor) else v
        for k, v in params.items()
    }
    n = total if t.device.type != "cpu" else max(1, chunk_elements // (h * w))
    starts = list(range(0, total, n))
    grad = autograd and torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()

    def chunk(i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return planes[i : i + n], {k: v[i : i + n] if isinstance(v, torch.Tensor) else v for k, v in flat.items()}

    if len(starts) == 1:
        with torch.set_grad_enabled(grad):
            return run(planes, flat).reshape(b, c, h, w)

    out = None if autograd else torch.empty_like(planes)
    outs: list[torch.Tensor | None] = [None] * len(starts)

    def task(j: int, i: int, stop: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            y = run(*chunk(i))
            if out is None:
                outs[j] = y
            else:
                out[i:stop].copy_(y)

    for_each_chunk(total, n, task)
    result = out if out is not None else torch.cat(outs)  # type: ignore[arg-type]
    return result.reshape(b, c, h, w)


def for_each_chunk(total: int, per_chunk: int, task: Callable[[int, int, int], None]) -> None:
    """Call ``task(j, start, stop)`` for the ``j``-th chunk ``[start, stop)`` of ``range(total)``.

    The chunks run on a thread pool of one worker per intra-op thread of the caller, each worker
    with one intra-op thread of its own (the caller's setting is unaffected); one chunk, or one
    thread, runs in the caller's thread. Tasks must write disjoint outputs.
    """
    starts = list(range(0, total, per_chunk))
    workers = min(torch.get_num_threads(), len(starts))

    def one(j: int, single_thread: bool) -> None:
        if single_thread:
            torch.set_num_threads(1)  # per-thread setting: the caller's thread is unaffected
        task(j, starts[j], min(starts[j] + per_chunk, total))

    if workers <= 1:
        for j in range(len(starts)):
            one(j, False)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda j: one(j, True), range(len(starts))))
