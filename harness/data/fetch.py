"""Download a public dataset archive: progress bar, checksum, safe extraction, layout check.

Example::

    root = fetch_dataset("covid-blues", Path("~/data/covid-blues").expanduser())

Offline (or when the server is unreachable) it raises one :class:`DataError` line saying where
to put the data by hand and which layout is expected. Extraction refuses any member that would
land outside ``dest`` (``../``, absolute paths, links).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from harness.data.covid_blues import ENV, LAYOUT, check_layout
from harness.data.frameset import DataError

DATASETS = {
    "covid-blues": {
        # the dataset's public GitHub repository (videos stored in the repository itself)
        "url": "https://github.com/NinaWie/COVID-BLUeS-dataset/archive/refs/heads/main.zip",
        "sha256": None,  # the branch archive changes with the repository; pass --sha256 to pin one
        "layout": LAYOUT,
    }
}
LFS_MAGIC = b"version https://git-lfs"


def _download(url: str, target: Path, timeout: float = 30.0) -> str:
    """Stream ``url`` to ``target`` with a tqdm bar; returns the SHA-256 of the bytes."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}", leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _inside(dest: Path, name: str) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise DataError(f"archive member {name!r} would be written outside {dest}; refusing to extract")
    target = (dest / pure).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DataError(f"archive member {name!r} would be written outside {dest}; refusing to extract")
    return target


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest``; no member may escape it or be a link/device."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _inside(dest, info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataError(f"archive member {info.filename!r} is a symbolic link; refusing to extract")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                _inside(dest, member.name)
                if not (member.isfile() or member.isdir()):
                    raise DataError(f"archive member {member.name!r} is not a regular file; refusing to extract")
            tf.extractall(dest, filter="data")
        return
    raise DataError(f"{archive}: not a zip or tar archive; accepted: .zip, .tar, .tar.gz")


def find_root(dest: Path) -> Path:
    """The folder holding the dataset: ``dest`` itself or one folder level below (archive prefix)."""
    for candidate in [dest, *sorted(p for p in dest.iterdir() if p.is_dir())]:
        if (candidate / "severity.csv").exists() or (candidate / "lus_videos").is_dir():
            return candidate
    return dest


def validate(root: Path) -> None:
    check_layout(root)
    videos = sorted((root / "lus_videos").glob("*.mp4"))
    if not videos:
        raise DataError(f"{root}/lus_videos: no .mp4 videos; expected: {LAYOUT}")
    with open(videos[0], "rb") as handle:
        if handle.read(len(LFS_MAGIC)) == LFS_MAGIC:
            raise DataError(f"{videos[0]}: a Git LFS pointer, not a video; download the videos by hand "
                            "(e.g. from huggingface.co/datasets/jannisborn/COVID-BLUES) into lus_videos/")


def fetch_dataset(name: str, dest: Path, url: str | None = None, sha256: str | None = None) -> Path:
    """Download, check, extract and validate dataset ``name`` into ``dest``; returns the dataset folder."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    url = url or spec["url"]
    expected = (sha256 or spec["sha256"] or "").lower() or None
    dest = Path(dest).expanduser()
    hand = (f"put the data by hand in {dest} with the layout {spec['layout']} "
            f"and set {ENV}={dest}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        archive = Path(tmp) / "archive"
        try:
            actual = _download(url, archive)
        except (urllib.error.URLError, socket.timeout, OSError) as exc:  # offline, DNS, refused, reset
            reason = getattr(exc, "reason", exc)
            raise DataError(f"cannot download {url} ({reason}); offline? {hand}") from None
        if expected and actual != expected:
            raise DataError(f"{url}: checksum mismatch (sha256 {actual}, expected {expected}); "
                            f"the archive is damaged or changed; retry, or {hand}")
        staging = Path(tmp) / "extract"
        safe_extract(archive, staging)
        root = find_root(staging)
        try:
            validate(root)
        except DataError as exc:  # name the archive, not the temporary folder
            raise DataError(f"{url}: {str(exc).split(': ', 1)[1]}") from None
        for child in root.iterdir():
            target = dest / child.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(child), str(target))
    validate(dest)
    if not expected:
        print(f"sha256 of the downloaded archive: {actual} (pass --sha256 to pin it)")
    return dest
