"""``python -m harness bench``: training speed and memory, always against an anchor measured in
the same process.

(a) throughput: training images/second of a plain timm loop (EfficientNet-B0, NCHW, plain
    Adam, no augmentation: timm's and torch's defaults) — the anchor — vs the same loop with
    channels_last, and vs the engine (``harness.training.fit_evaluate``, full recipe: AdamW,
    warm-up/cosine schedule, augmentation, channels_last, deterministic algorithms on CPU).
(b) variants: training step time and activation memory of each model variant (plain, diffusion
    stem replacing conv_stem with Perona-Malik / tensor diffusion, prepended diffusion, diffusion
    blocks after stages 1 and 2) vs the plain EfficientNet-B0, with the engine's settings.
    Steps are measured round-robin over the variants so background load hits them alike; the
    median step is reported. Memory is the bytes autograd saves for the backward pass
    (activations, counted once per storage) and, on CUDA, ``max_memory_allocated``.

Example: ``python -m harness bench --image-size 128 --batch-size 32 --steps 5 --json bench.json``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from diffusion_filters.bench import cpu_name

#: The ``--json`` file's format: how an earlier result of ours is recognised before it is replaced.
BENCH_FORMAT = "lus-harness bench 1"
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "stem-replace-pm": {"stem": {"mode": "replace", "variant": "perona_malik", "iterations": 4}},
    "stem-replace-tensor": {"stem": {"mode": "replace", "variant": "tensor", "iterations": 4}},
    "stem-prepend": {"stem": {"mode": "prepend", "variant": "perona_malik", "iterations": 4}},
    "blocks-1-2": {"diffusion_blocks": {"after_stages": [1, 2], "iterations": 2}},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _plain_loop_ips(size: int, batch: int, steps: int, warmup: int, device: torch.device,
                    channels_last: bool) -> float:
    """Images/second of a plain timm training loop (the anchor)."""
    import timm

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model("efficientnet_b0", in_chans=1, num_classes=2).to(device, memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch,), device=device)
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def _engine_ips(size: int, batch: int, steps: int, device: str) -> tuple[float, dict[str, Any]]:
    """Images/second of ``fit_evaluate`` (second epoch: the first one pays one-off set-up)."""
    from harness.suite import ModelConfig, TrainingConfig
    from harness.training import RunData, fit_evaluate

    rng = np.random.default_rng(0)
    n = batch * steps
    x = rng.random((n, size, size), dtype=np.float32)
    y = (np.arange(n) % 2).astype(np.int64)
    data = RunData(x, y, x[:batch], y[:batch], x[:batch], y[:batch])
    r = fit_evaluate(ModelConfig(), TrainingConfig(epochs=2, batch_size=batch, device=device), data, seed=0)
    return n / r.timings["epoch_train_seconds"][-1], r.timings


def throughput(size: int, batch: int, steps: int, warmup: int, device: str,
               rounds: int = 3) -> list[dict[str, Any]]:
    """Part (a): rows of (name, images/second, ratio to the plain loop).

    The three loops are measured in turn, ``rounds`` times, and the median of each is reported,
    so a change of background load hits all three alike.
    """
    from harness.training import resolve_device

    dev = resolve_device(device)
    names = ["plain timm loop (NCHW, Adam)", "plain loop + channels_last", "engine fit_evaluate (full recipe)"]
    runs: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        runs[names[0]].append(_plain_loop_ips(size, batch, steps, warmup, dev, channels_last=False))
        runs[names[1]].append(_plain_loop_ips(size, batch, steps, warmup, dev, channels_last=True))
        runs[names[2]].append(_engine_ips(size, batch, steps, device)[0])
    anchor = statistics.median(runs[names[0]])
    return [{"name": n, "images_per_second": statistics.median(runs[n]), "ratio": statistics.median(runs[n]) / anchor,
             "all": runs[n]} for n in names]


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn`` (a forward pass) and count the bytes autograd saves, once per storage."""
    seen: dict[tuple[int, torch.device], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[(st.data_ptr(), t.device)] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def variants(size: int, batch: int, steps: int, warmup: int, device: str,
             names: list[str] | None = None) -> list[dict[str, Any]]:
    """Part (b): step time (median, ms) and memory of each variant vs the plain network."""
    from harness.models import create_model
    from harness.suite import ModelConfig
    from harness.training import resolve_device

    dev = resolve_device(device)
    names = names or list(VARIANTS)
    torch.manual_seed(0)
    x = torch.rand(batch, 1, size, size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=dev)
    setups: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    for name in names:
        model = create_model(ModelConfig(**VARIANTS[name])).to(dev, memory_format=torch.channels_last)
        model.train()
        setups[name] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))
    times: dict[str, list[float]] = {n: [] for n in names}
    memory: dict[str, int] = {}
    cuda_peak: dict[str, float | None] = {n: None for n in names}
    for i in range(warmup + steps):
        for name in names:  # round-robin: background load affects every variant alike
            model, opt = setups[name]
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            _sync(dev)
            t0 = time.perf_counter()
            logits, saved = _saved_bytes(lambda m=model: m(x))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(dev)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
            memory[name] = saved
            if dev.type == "cuda":
                cuda_peak[name] = torch.cuda.max_memory_allocated(dev) / 2**20
    plain_ms = 1000 * statistics.median(times[names[0]])
    plain_mb = memory[names[0]] / 2**20
    rows = []
    for name in names:
        ms = 1000 * statistics.median(times[name])
        mb = memory[name] / 2**20
        rows.append({"variant": name, "step_ms": ms, "step_ratio": ms / plain_ms, "activation_mb": mb,
                     "memory_ratio": mb / plain_mb, "cuda_max_allocated_mb": cuda_peak[name],
                     "step_ms_all": [1000 * t for t in times[name]]})
    return rows


def bench_output(path: Path) -> Any:
    """``--json``: replaced only when it is a result of this command (its format, or, written before it had one,
    its ``environment`` record with the timed settings)."""
    from harness.safe_write import Output, either, json_field

    return Output(path, "bench result", either(
        json_field("format", lambda v: v == BENCH_FORMAT),
        json_field("environment", lambda v: isinstance(v, dict) and {"cpu", "threads", "steps"} <= v.keys())),
        "--json")


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m harness bench``; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m harness bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after --warmup)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="(a): measure the three loops in turn this many times")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--part", choices=["all", "throughput", "variants"], default="all")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)} (the first is the anchor)")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    for v in ("image_size", "batch_size", "steps", "rounds"):
        if getattr(args, v) < 1:
            p.error(f"--{v.replace('_', '-')} must be >= 1")
    if args.batch_size < 2:  # the engine's TrainingConfig: BatchNorm trains on 2 images per batch at least
        p.error(f"--batch-size {args.batch_size}: accepted: an integer >= 2 (BatchNorm needs two images per batch)")
    if args.json is not None:  # before minutes of measuring: an existing file must be a bench result of ours
        from harness.safe_write import OutputError, check_outputs

        if args.json.suffix.lower() != ".json":
            p.error(f"--json {args.json}: not a .json file; accepted: a path ending in .json")
        try:
            check_outputs([bench_output(args.json)])
        except OutputError as err:
            p.error(str(err))
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"--variants: unknown {', '.join(unknown)}; accepted: {', '.join(VARIANTS)}")
    old_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, names)
    finally:
        torch.set_num_threads(old_threads)


def _run(args: argparse.Namespace, names: list[str]) -> int:
    env = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "device": args.device, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
           "image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps}
    print(f"bench: {env['cpu']}, {env['threads']} threads, torch {env['torch']}, "
          f"{args.image_size} px, batch {args.batch_size}, {args.steps} steps\n")
    out: dict[str, Any] = {"format": BENCH_FORMAT, "environment": env}
    if args.part in ("all", "throughput"):
        rows = throughput(args.image_size, args.batch_size, args.steps, args.warmup, args.device, args.rounds)
        out["throughput"] = rows
        _print_table(f"(a) training throughput (anchor: plain timm loop, same process; median of {args.rounds} rounds)",
                     ["loop", "images/s", "ratio"],
                     [[r["name"], f"{r['images_per_second']:.1f}", f"{r['ratio']:.2f}x"] for r in rows])
    if args.part in ("all", "variants"):
        rows = variants(args.image_size, args.batch_size, args.steps, args.warmup, args.device, names)
        out["variants"] = rows
        _print_table(f"(b) training step per variant (anchor: {names[0]}; median of {args.steps} steps)",
                     ["variant", "step ms", "ratio", "activations MB", "ratio"],
                     [[r["variant"], f"{r['step_ms']:.0f}", f"{r['step_ratio']:.2f}x", f"{r['activation_mb']:.0f}",
                       f"{r['memory_ratio']:.2f}x"] for r in rows])
    if args.json:
        from harness.safe_write import write_all

        write_all({args.json: json.dumps(out, indent=2) + "\n"})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
