"""Data throughput figures: ``python -m harness.data.bench [--frames 1000] [--size 128] [--covid-blues DIR]``.

Prints one table. Each figure comes with an anchor measured in the same run, so ratios survive a
busy machine: the simulator against drawing its complex Gaussian scatterer field alone (the
irreducible random-number cost), the COVID-BLUES decode against a bare PyAV decode of the same
videos. COVID-BLUES loads run in child processes so each reports its own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench child failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


LOAD = """
import json, resource, time
from pathlib import Path
from harness.data import CovidBluesData, load_frames
t = time.perf_counter()
fs = load_frames(CovidBluesData(path={path!r}, frame_step={step}, max_frames_per_video={maxf}, image_size={size}),
                 base_dir=Path.cwd(), cache_dir=Path({cache!r}))
touched = int(fs.images.sum(dtype='int64') >= 0)  # read every frame once
print(json.dumps({{"seconds": time.perf_counter() - t, "frames": len(fs), "videos": len(set(fs.videos)),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

BARE = """
import av, json, time
from pathlib import Path
t = time.perf_counter(); n = 0
for p in sorted(Path({path!r}, 'lus_videos').glob('*.mp4')):
    with av.open(str(p)) as c:
        s = c.streams.video[0]; s.thread_type = 'AUTO'
        for f in c.decode(s):
            n += 1
print(json.dumps({{"seconds": time.perf_counter() - t, "frames": n}}))
"""


def bench_simulator(frames: int, size: int) -> list[tuple[str, float, str]]:
    from harness.data.config import SimulatedData
    from harness.data.simulator import beam_grid, simulate

    patients = max(2, frames // 10)
    cfg = SimulatedData(patients=patients, frames_per_patient=frames // patients, image_size=size, probe="mixed")
    t, cpu = time.perf_counter(), time.process_time()
    images, _ = simulate(cfg, seed=0)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    nd, na = beam_grid(size)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(len(images)):
        rng.standard_normal((2, nd, na), dtype=np.float32)
    anchor = time.perf_counter() - t
    return [
        (f"simulate {len(images)} frames {size}x{size} (mixed probes)", seconds,
         f"{len(images) / seconds:.0f} frames/s, CPU {cpu:.1f} s; x{seconds / anchor:.1f} the scatterer-field "
         f"draw ({anchor:.2f} s)")
    ]


def bench_covid(path: str, size: int, step: int, maxf: int | None) -> list[tuple[str, float, str]]:
    with tempfile.TemporaryDirectory() as cache:
        args = dict(path=path, step=step, maxf=maxf, size=size, cache=cache)
        first = _child(LOAD.format(**args))
        second = _child(LOAD.format(**args))
    bare = _child(BARE.format(path=path))
    m = "all" if maxf is None else maxf
    what = f"COVID-BLUES {first['videos']} videos, step {step}, max {m}, {size}px -> {first['frames']} frames"
    return [
        (f"{what}: decode + cache", first["seconds"],
         f"peak RSS {first['rss_mb']:.0f} MB; x{first['seconds'] / bare['seconds']:.2f} a bare PyAV decode "
         f"of all {bare['frames']} frames ({bare['seconds']:.1f} s)"),
        (f"{what}: cached reload", second["seconds"],
         f"peak RSS {second['rss_mb']:.0f} MB; x{first['seconds'] / second['seconds']:.0f} faster than decoding"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.data.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--covid-blues", default=None, help="dataset folder; also measures decode/reload/RSS")
    parser.add_argument("--frame-step", type=int, default=1)
    parser.add_argument("--max-frames", type=int, default=0, help="0 = all frames")
    args = parser.parse_args(argv)
    rows = bench_simulator(args.frames, args.size)
    if args.covid_blues:
        rows += bench_covid(args.covid_blues, args.size, args.frame_step, args.max_frames or None)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'seconds':>8}  notes")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:>8.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
