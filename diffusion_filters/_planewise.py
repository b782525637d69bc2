"""Run a per-plane filter over a ``(B, C, H, W)`` batch in cache-sized chunks.

The tensor-diffusion and non-local-means filters treat every ``(H, W)`` plane independently and
are chains of cheap elementwise passes. On a CPU, whole-batch passes are bound by memory
traffic and by page faults on freshly allocated multi-megabyte temporaries, and OpenMP barriers
stall badly when the cores are shared with other processes. Chunks of a few planes keep every
temporary in cache; the chunks run on a small thread pool whose workers use one intra-op thread
each (``torch.set_num_threads`` is per thread), which uses both cores without barriers.
Results do not depend on the number of workers: each chunk is computed the same way and the
outputs are concatenated in order.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["CPU_CHUNK_ELEMENTS", "run_planewise"]

CPU_CHUNK_ELEMENTS = 1 << 17
"""Pixels per chunk on CPU (two 256x256 planes)."""

Param = float | torch.Tensor


def run_planewise(
    t: torch.Tensor,
    params: dict[str, Param],
    run: Callable[[torch.Tensor, dict[str, Param]], torch.Tensor],
    chunk_elements: int = CPU_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Apply ``run(planes, params)`` to the planes of ``t`` (B, C, H, W) and reassemble.

    ``planes`` is ``(n, 1, H, W)``; tensor parameters of shape ``(1|B, 1|C, 1, 1)`` are expanded
    to ``(B*C, 1, 1, 1)`` and sliced along with their planes; float parameters pass through.
    The autograd graph (and the caller's grad / inference mode) is kept.
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
    if len(starts) == 1:
        return run(planes, flat).reshape(b, c, h, w)

    def chunk(i: int) -> tuple[torch.Tensor, dict[str, Param]]:
        return planes[i : i + n], {k: v[i : i + n] if isinstance(v, torch.Tensor) else v for k, v in flat.items()}

    workers = min(torch.get_num_threads(), len(starts))
    if workers <= 1:
        outs = [run(*chunk(i)) for i in starts]
    else:
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def task(i: int) -> torch.Tensor:
            torch.set_num_threads(1)  # per-thread setting: the caller's thread is unaffected
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return run(*chunk(i))

        with ThreadPoolExecutor(max_workers=workers) as pool:
            outs = list(pool.map(task, starts))
    return torch.cat(outs).reshape(b, c, h, w)
