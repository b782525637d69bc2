"""Content-addressed on-disk cache of decoded frames (uint8 ``.npy`` files opened memory-mapped).

Keys are hashes of the sources' bytes plus the decoding parameters (and the source code of the
decoder), never file names or dates, so a moved or renamed file still hits and an edited one
misses. Writes go to a temporary file renamed into place, so concurrent workers are safe.

The content is verified too: the SHA-256 of each ``.npy`` file (header and pixels,
:func:`harness.versions.file_sha256`) is recorded in its sidecar when written and checked when read
(about 14 ms for COVID-BLUES' 1,356 frames of 128 x 128 px, 22 MB), so frames changed on disk are
rebuilt (one warning line naming the file) instead of silently changing the predictions. The
preprocessing cache (:mod:`harness.preprocess`) uses the same check.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.frameset import DataError
from harness.safe_write import unwritable
from harness.versions import file_sha256

CACHE_ENV = "LUS_HARNESS_CACHE"


def default_cache_dir() -> Path:
    """``$LUS_HARNESS_CACHE`` when set, else ``~/.cache/lus-harness``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lus-harness"


def check_cache_dir(folder: Path) -> None:
    """One line (``DataError``) before anything is decoded when the cache folder cannot be written."""
    problem = unwritable(folder)
    if problem is not None:
        raise DataError(f"cache folder {folder} (--cache-dir or ${CACHE_ENV}): {problem}; accepted: a folder "
                        "this user can write to, e.g. --cache-dir /tmp/lus-cache (it is created if missing)")


def hash_json(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def source_hash(*modules: object) -> str:
    """Hash of the source files of the given modules: code changes invalidate cached outputs."""
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())  # type: ignore[attr-defined]
    return digest.hexdigest()[:16]


#: Sidecar key of the SHA-256 of a cached ``.npy`` file, recorded when it is written.
CHECKSUM_KEY = "npy_sha256"


def matches_checksum(npy: Path, recorded: object) -> bool:
    """Whether the cached ``npy`` still has the checksum ``recorded`` when it was written.

    A mismatch (the file changed on disk) prints one warning line naming the file; no checksum (an
    entry written before checksums existed) is a quiet miss. Either way the caller rebuilds the entry.
    """
    if not isinstance(recorded, str) or not recorded:
        return False
    if file_sha256(npy) == recorded:
        return True
    print(f"warning: {npy}: the cached arrays do not match the checksum recorded when they were written "
          "(changed on disk); rebuilding them", file=sys.stderr)
    return False


class FrameCache:
    """``<root>/<kind>/<key[:2]>/<key>.npy`` arrays plus optional ``.json`` sidecars."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def load(self, kind: str, key: str) -> tuple[np.ndarray, dict] | None:
        """The cached array (read-only memmap) and its sidecar, or None on a miss (also when the array
        does not match the checksum recorded when it was written: :func:`matches_checksum`)."""
        npy, meta = self._path(kind, key, ".npy"), self._path(kind, key, ".json")
        if not npy.exists() or not meta.exists():
            return None
        try:
            info = json.loads(meta.read_text())
            if not isinstance(info, dict) or not matches_checksum(npy, info.pop(CHECKSUM_KEY, None)):
                return None
            array = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is a miss; it will be rewritten
        return array, info

    def save(self, kind: str, key: str, array: np.ndarray, info: dict | None = None) -> None:
        """Store ``array`` (and ``info``) atomically."""
        self.save_stream(kind, key, array.shape[1:], [array], info=info)

    def save_stream(self, kind: str, key: str, frame_shape: tuple[int, ...], chunks: Iterable[np.ndarray],
                    info: dict | None = None) -> None:
        """Write uint8 chunks (each ``(n_i, *frame_shape)``) as one ``.npy`` without holding them all, then
        the sidecar: ``info`` and the file's checksum."""
        chunks = list(chunks) if not isinstance(chunks, list) else chunks
        total = sum(len(c) for c in chunks)
        target = self._path(kind, key, ".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (total, *frame_shape)}
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                for chunk in chunks:
                    handle.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
            checksum = file_sha256(tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._write_json(kind, key, {**(info or {}), CHECKSUM_KEY: checksum})

    def _write_json(self, kind: str, key: str, info: dict) -> None:
        target = self._path(kind, key, ".json")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        os.replace(tmp, target)
