"""Speed of the fast (midrank, Sun & Xu 2014) DeLong test against a vectorized O(m·n) anchor.

pytest-benchmark: ``python -m pytest tests/benchmarks/test_stats_bench.py --benchmark-enable``.
Table with ratios to the anchor measured in the same run:
``python tests/benchmarks/test_stats_bench.py``.
"""

from __future__ import annotations

import time

import numpy as np

from harness.stats.delong import delong_paired


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    a = rng.normal(size=n) + y
    b = a + rng.normal(size=n)
    clusters = np.repeat(np.arange(n // 10 + 1), 10)[:n]
    return y, a, b, clusters


def anchor_delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Variance of AUC(a) - AUC(b) from full kernel matrices (vectorized, O(m·n) memory/time)."""
    pos = y == 1
    comps10, comps01 = [], []
    for s in (a, b):
        x, z = s[pos], s[~pos]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps10.append(psi.mean(1))
        comps01.append(psi.mean(0))
    s = np.cov(np.vstack(comps10)) / pos.sum() + np.cov(np.vstack(comps01)) / (~pos).sum()
    return float(s[0, 0] + s[1, 1] - 2 * s[0, 1])


def test_bench_delong_fast(benchmark):
    y, a, b, _ = _data(2000)
    res = benchmark(delong_paired, y, a, b)
    assert abs(res["var"] / anchor_delong(y, a, b) - 1) < 1e-10


def test_bench_delong_clustered(benchmark):
    y, a, b, cl = _data(2000)
    res = benchmark(delong_paired, y, a, b, cl)
    assert res["var"] > 0


def test_bench_delong_anchor(benchmark):
    y, a, b, _ = _data(2000)
    assert benchmark(anchor_delong, y, a, b) > 0


def _best_ms(fn, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


if __name__ == "__main__":
    print(f"{'N':>6} {'anchor_ms':>10} {'fast_ms':>8} {'clustered_ms':>12} {'anchor/fast':>11}")
    for n in (500, 2000, 8000):
        y, a, b, cl = _data(n)
        t_anchor = _best_ms(lambda: anchor_delong(y, a, b), reps=3)
        t_fast = _best_ms(lambda: delong_paired(y, a, b))
        t_cl = _best_ms(lambda: delong_paired(y, a, b, clusters=cl))
        print(f"{n:>6} {t_anchor:>10.2f} {t_fast:>8.2f} {t_cl:>12.2f} {t_anchor / t_fast:>11.1f}")
