"""`data fetch`: download from a local file:// archive, checksum, safe extraction, offline message."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from harness.data import CovidBluesData, DataError, load_frames
from harness.data.fetch import fetch_dataset, safe_extract

SEVERITY = "video_file,Severity Score,A-lines,B-lines,comments\npatient_1_L1,1.0,yes,yes ,x\npatient_2_R3,0.0,yes,no,y\n"
CLINICAL = "patient_id,cov_test\n1,1\n2,0\n"


def _tiny_mp4(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for k in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 80 + 20 * k, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_zip(tmp_path: Path, prefix: str = "COVID-BLUeS-dataset-main/", extra: dict[str, bytes] | None = None,
             drop: tuple[str, ...] = ()) -> Path:
    video = tmp_path / "v.mp4"
    _tiny_mp4(video)
    members = {
        "severity.csv": SEVERITY.encode(),
        "clinical_variables.csv": CLINICAL.encode(),
        "README.md": b"fake",
        "lus_videos/patient_1_L1.mp4": video.read_bytes(),
        "lus_videos/patient_2_R3.mp4": video.read_bytes(),
    }
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            if name not in drop:
                zf.writestr(prefix + name, data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_from_a_local_archive_with_checksum(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    archive = make_zip(tmp_path)
    dest = tmp_path / "dest"
    root = fetch_dataset("covid-blues", dest, url=archive.as_uri(), sha256=sha(archive))
    assert root == dest and (dest / "severity.csv").exists() and len(list((dest / "lus_videos").glob("*.mp4"))) == 2
    assert not any(p.name.startswith(".download-") for p in dest.iterdir())  # temporary files removed
    frames = load_frames(CovidBluesData(path=str(dest), image_size=16), base_dir=tmp_path, cache_dir=tmp_path / "c")
    assert sorted(set(frames.groups.tolist())) == ["patient_1", "patient_2"] and frames.labels.tolist() == [1, 0]
    # without --sha256 it works and prints the digest to pin
    fetch_dataset("covid-blues", tmp_path / "again", url=archive.as_uri())
    assert sha(archive) in capsys.readouterr().out


def test_wrong_checksum_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        fetch_dataset("covid-blues", dest, url=archive.as_uri(), sha256="0" * 64)
    assert "checksum mismatch" in str(info.value) and sha(archive) in str(info.value)
    assert not (dest / "severity.csv").exists()


def test_offline_gives_one_line_saying_where_to_put_the_data(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        fetch_dataset("covid-blues", dest, url=(tmp_path / "missing.zip").as_uri())
    message = str(info.value)
    assert "\n" not in message and "cannot download" in message
    assert f"put the data by hand in {dest}" in message and "lus_videos/patient_<ID>_<POINT>[_2].mp4" in message
    assert "LUS_COVID_BLUES" in message


def test_bad_layout_and_lfs_pointers(tmp_path: Path) -> None:
    archive = make_zip(tmp_path, drop=("severity.csv",))
    with pytest.raises(DataError, match="not a COVID-BLUES folder .*missing severity.csv"):
        fetch_dataset("covid-blues", tmp_path / "d1", url=archive.as_uri())
    lfs = tmp_path / "lfs"
    lfs.mkdir()
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"
    archive = make_zip(lfs, drop=("lus_videos/patient_1_L1.mp4", "lus_videos/patient_2_R3.mp4"),
                       extra={"COVID-BLUeS-dataset-main/lus_videos/patient_1_L1.mp4": pointer})
    with pytest.raises(DataError, match="Git LFS pointer"):
        fetch_dataset("covid-blues", tmp_path / "d2", url=archive.as_uri())


@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil_abs.txt", "a/../../evil.txt"])
def test_zip_members_cannot_escape(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"x")
        zf.writestr(name, b"evil")
    with pytest.raises(DataError, match="outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_tar_links_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError, match="not a regular file"):
        safe_extract(archive, tmp_path / "out")
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        info = tarfile.TarInfo("sub/file.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    safe_extract(good, tmp_path / "out2")
    assert (tmp_path / "out2" / "sub" / "file.txt").read_text() == "hi"


def test_unknown_dataset_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DataError, match="unknown dataset 'mnist'; accepted: covid-blues"):
        fetch_dataset("mnist", tmp_path)
    from harness.cli import main

    archive = make_zip(tmp_path)
    assert main(["data", "fetch", "covid-blues", "--dest", str(tmp_path / "d"), "--url", archive.as_uri(),
                 "--sha256", sha(archive)]) == 0
    assert "export LUS_COVID_BLUES=" in capsys.readouterr().out
    code = main(["data", "fetch", "covid-blues", "--dest", str(tmp_path / "e"), "--url", archive.as_uri(),
                 "--sha256", "f" * 64])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "download archive" not in ln]  # no tqdm
    assert code != 0 and len(err) == 1 and "checksum mismatch" in err[0]
