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


def _corrupt_in_place(npy: Path) -> None:
    """Change every pixel of a cached ``.npy`` file, keeping its size and header (still a valid array)."""
    header = len(npy.read_bytes()) - int(np.load(npy, mmap_mode="r").nbytes)
    data = bytearray(npy.read_bytes())
    data[header:] = bytes(255 - b for b in data[header:])
    npy.write_bytes(bytes(data))


def test_frames_changed_on_disk_are_rebuilt_with_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 21: corrupting the cached frames in place (same size, valid header) must not change the data."""
    from harness.data import SimulatedData, load_frames

    cfg = SimulatedData(patients=3, frames_per_patient=2, image_size=32)
    first = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=0)
    original = np.array(first.images)
    (npy,) = (tmp_path / "cache" / "simulated").rglob("*.npy")
    _corrupt_in_place(npy)
    assert not np.array_equal(np.load(npy), original)  # the file really changed, header intact
    capsys.readouterr()
    again = load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=0)
    np.testing.assert_array_equal(np.asarray(again.images), original)
    assert again.content_hash == first.content_hash
    warned = [line for line in capsys.readouterr().err.splitlines() if "checksum" in line]
    assert len(warned) == 1 and str(npy) in warned[0] and "rebuilding" in warned[0]
    np.testing.assert_array_equal(np.load(npy), original)  # rebuilt on disk: the next load is quiet
    load_frames(cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache", seed=0)
    assert "checksum" not in capsys.readouterr().err


def test_entry_without_a_checksum_is_a_quiet_miss(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    cache = FrameCache(tmp_path)
    cache.save("frames", "cd" * 32, np.ones((1, 2, 2), dtype=np.uint8), {"indices": [0]})
    sidecar = tmp_path / "frames" / "cd" / f"{'cd' * 32}.json"
    sidecar.write_text(json.dumps({"indices": [0]}))  # as written before checksums existed
    assert cache.load("frames", "cd" * 32) is None and capsys.readouterr().err == ""


def test_hash_json_is_canonical() -> None:
    assert hash_json({"a": 1, "b": [1, 2]}) == hash_json({"b": [1, 2], "a": 1})
    assert hash_json({"a": 1}) != hash_json({"a": 2})
