"""Content-addressed frame cache: location, round trip, damaged entries, streamed writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.data.cache import FrameCache, default_cache_dir, hash_json


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LUS_HARNESS_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LUS_HARNESS_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "lus-harness"


def test_round_trip_is_a_read_only_memmap(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path)
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    key = hash_json({"a": 1})
    assert cache.load("frames", key) is None
    cache.save("frames", key, array, {"indices": [0, 5]})
    loaded, info = cache.load("frames", key)
    np.testing.assert_array_equal(loaded, array)
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable and info == {"indices": [0, 5]}
    assert not list(tmp_path.rglob("*.tmp"))


def test_streamed_chunks_and_damaged_entries(tmp_path: Path) -> None:
    cache = FrameCache(tmp_path)
    chunks = [np.full((n, 2, 2), n, dtype=np.uint8) for n in (1, 3, 2)]
    cache.save_stream("sets", "ab" * 32, (2, 2), chunks, info={"n": 6})
    loaded, _ = cache.load("sets", "ab" * 32)
    np.testing.assert_array_equal(loaded, np.concatenate(chunks))
    (tmp_path / "sets" / "ab" / f"{'ab' * 32}.npy").write_bytes(b"garbage")
    assert cache.load("sets", "ab" * 32) is None  # a damaged entry is a miss, rewritten next time


def test_hash_json_is_canonical() -> None:
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": 1}) != hash_json({"a": 2})
