"""A report never destroys what it did not make (issue 29).

``harness report STORE -o PATH`` once wrote its page over another study's results database, a suite, a
checkpoint, and replaced another suite's ``summary.json``/``metrics.csv``. Each case here names a victim
file, runs the command, and checks the refusal is one line (exit 2) and the victim's bytes are unchanged;
then that the report's own files are replaced as before, all of them or none.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import cli
from harness.report.destinations import SUMMARY_FORMAT
from harness.safe_write import OutputError, check_outputs, html_generator, png_software, write_all, Output
from harness.store import ResultsStore
from test_report_verdicts import build  # the shared synthetic store (suite "verdicts")

SIGNAL = {"baseline": 1.5, "pm": 2.2}
ARMS = [{"name": "baseline"}, {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 5}}]}]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Study A (suite 'verdicts', reported) and study B (suite 'other', the victim), each with its report."""
    root = tmp_path_factory.mktemp("destinations")
    a = build(root / "a", SIGNAL, arms=ARMS)
    b = build(root / "b", SIGNAL, arms=ARMS)
    with ResultsStore(b) as store:
        store.set_meta(suite_name="other", suite_config={**store.suite_config(), "name": "other"})
    assert cli.main(["report", str(a)]) == 0 and cli.main(["report", str(b)]) == 0
    return a, b


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, call: int, errno: int, message: str) -> None:
    """The ``call``-th ``os.fsync`` fails like a full or broken disk (the files before it were written)."""
    real, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == call:
            raise OSError(errno, message)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line
    for needle in needles:
        assert needle in err, err
    return err


def test_another_studys_database_is_never_overwritten(stores, capsys) -> None:
    a, b = stores
    before = _snapshot(b)
    _refused(["report", str(a), "-o", str(b / "results.sqlite")], capsys, "not a .html or .htm file")
    _refused(["report", str(a), "-o", str(b / "page.html")], capsys, "holds another results store (suite 'other')")
    assert _snapshot(b) == before
    assert cli.main(["status", str(b)]) == 0  # still a results store


def test_the_store_being_read_is_never_overwritten(stores, capsys) -> None:
    a, _ = stores
    before = _snapshot(a)
    _refused(["report", str(a), "-o", str(a / "results.sqlite")], capsys, "accepted: a path ending in .html")
    assert _snapshot(a) == before


@pytest.mark.parametrize("name, content", [
    ("victim.yaml", b"name: victim\narms: [{name: baseline}]\n"),
    ("baseline.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "),
    ("page.html", b"<!doctype html><html><head><title>somebody's page</title></head></html>\n"),
    ("page.htm", b"<html>hand-written</html>\n"),
])
def test_a_file_the_tool_did_not_make_is_never_overwritten(stores, tmp_path, capsys, name, content) -> None:
    a, _ = stores
    victim = tmp_path / name
    victim.write_bytes(content)
    _refused(["report", str(a), "-o", str(victim)], capsys, str(victim))
    assert victim.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no summary.json / metrics.csv beside it


def test_another_suites_summary_and_metrics_are_never_replaced(stores, tmp_path, capsys) -> None:
    """A folder holding another suite's report files (its store elsewhere) takes none of ours."""
    a, b = stores
    other = tmp_path / "other-report"
    other.mkdir()
    for name in ("summary.json", "metrics.csv", "report.html"):
        shutil.copy(b / name, other / name)
    before = _snapshot(other)
    _refused(["report", str(a), "-o", str(other / "page.html")], capsys, "report files of suite 'other'")
    _refused(["report", str(a), "-o", str(other / "report.html")], capsys, "report files of suite 'other'")
    _refused(["report", str(a), "-o", str(tmp_path / "mine.html"), "--summary", str(other / "summary.json")], capsys,
             "report files of suite 'other'")
    assert _snapshot(other) == before
    assert not (tmp_path / "mine.html").exists()


def test_a_page_of_another_suite_is_not_replaced(stores, tmp_path, capsys) -> None:
    a, b = stores
    page = tmp_path / "b.html"
    shutil.copy(b / "report.html", page)  # a folder without summary.json: the page itself names its suite
    _refused(["report", str(a), "-o", str(page)], capsys, "not a report page of suite 'verdicts' written by this tool")
    assert page.read_bytes() == (b / "report.html").read_bytes()


def test_the_reports_own_files_are_replaced_and_named_ones_go_where_named(stores, tmp_path, capsys) -> None:
    a, _ = stores
    page = tmp_path / "out" / "a.html"
    assert cli.main(["report", str(a), "-o", str(page)]) == 0
    first = _snapshot(page.parent)
    assert sorted(first) == ["a.html", "metrics.csv", "summary.json"]
    summary = json.loads(first["summary.json"])
    assert summary["format"] == SUMMARY_FORMAT and summary["suite"]["name"] == "verdicts"
    assert b'<meta name="harness-suite" content="verdicts">' in first["a.html"]
    assert cli.main(["report", str(a), "-o", str(page)]) == 0  # ours, same suite: replaced
    again = _snapshot(page.parent)
    assert again["summary.json"] == first["summary.json"] and again["metrics.csv"] == first["metrics.csv"]
    elsewhere = tmp_path / "named"
    assert cli.main(["report", str(a), "-o", str(tmp_path / "p.html"), "--summary", str(elsewhere / "s.json"),
                     "--metrics", str(elsewhere / "m.csv")]) == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["m.csv", "s.json"]
    assert (elsewhere / "m.csv").read_bytes() == first["metrics.csv"]


def test_a_summary_written_before_it_had_a_format_is_still_recognised(stores, tmp_path) -> None:
    a, _ = stores
    old = json.loads((a / "summary.json").read_text())
    old.pop("format")
    (a / "summary.json").write_text(json.dumps(old))
    assert cli.main(["report", str(a)]) == 0
    assert json.loads((a / "summary.json").read_text())["format"] == SUMMARY_FORMAT


def test_a_failed_write_replaces_nothing(stores, tmp_path, monkeypatch, capsys) -> None:
    """A disk that fills after the first file (``-o /dev/full`` in spirit): every earlier file is as it was,
    no temporary file is left, and the one line says nothing was replaced."""
    a, _ = stores
    before = _snapshot(a)
    _fail_fsync(monkeypatch, call=2, errno=28, message="No space left on device")
    capsys.readouterr()
    assert cli.main(["report", str(a)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "nothing was replaced" in err and err.count("\n") == 1
    assert _snapshot(a) == before  # summary.json (written first) was not replaced either
    assert not [p for p in a.iterdir() if p.name.endswith(".tmp")]


def test_dev_full_is_refused_before_anything_is_written(stores, capsys) -> None:
    a, _ = stores
    before = _snapshot(a)
    _refused(["report", str(a), "-o", "/dev/full"], capsys, "/dev/full")
    assert _snapshot(a) == before


# ------------------------------------------------------------------ --markdown


def test_a_binary_page_is_refused_in_one_line_before_anything_is_written(stores, tmp_path, capsys) -> None:
    a, _ = stores
    before = _snapshot(a)
    page = tmp_path / "results.md"
    page.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    _refused(["report", str(a), "--markdown", str(page)], capsys, "not UTF-8 text")
    assert page.read_bytes() == b"\x89PNG\r\n\x1a\n\xff\xfe binary"
    assert _snapshot(a) == before  # the page is checked before report.html and summary.json are written


def test_a_page_must_be_markdown(stores, tmp_path, capsys) -> None:
    a, _ = stores
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: x\n")
    _refused(["report", str(a), "--markdown", str(suite)], capsys, "accepted: a Markdown page path ending in .md")
    assert suite.read_text() == "name: x\n"


def test_a_figure_beside_the_page_is_replaced_only_when_it_is_ours(stores, tmp_path, capsys) -> None:
    a, _ = stores
    page = tmp_path / "results.md"
    forest = tmp_path / "results-verdicts-forest.png"
    forest.write_bytes(b"a photo somebody saved here")
    _refused(["report", str(a), "--markdown", str(page)], capsys, str(forest))
    assert forest.read_bytes() == b"a photo somebody saved here" and not page.exists()
    forest.unlink()
    assert cli.main(["report", str(a), "--markdown", str(page)]) == 0
    assert png_software("harness.report")(forest)  # the figure carries the report's marker
    # a figure written before the marker existed is recognised by the page's block that shows it
    legacy = forest.read_bytes().replace(b"tEXtSoftware\x00harness.report", b"tEXtSoftwarX\x00harness.report")
    forest.write_bytes(legacy)
    assert not png_software("harness.report")(forest)
    assert cli.main(["report", str(a), "--markdown", str(page)]) == 0
    assert png_software("harness.report")(forest)


# ------------------------------------------------------------------ the building blocks


def test_write_all_writes_every_file_or_none(tmp_path, monkeypatch) -> None:
    keep = {tmp_path / n: f"old {n}" for n in ("a.txt", "b.txt", "c.txt")}
    for p, text in keep.items():
        p.write_text(text)
    write_all({p: f"new {p.name}" for p in keep})
    assert [p.read_text() for p in keep] == ["new a.txt", "new b.txt", "new c.txt"]
    _fail_fsync(monkeypatch, call=3, errno=5, message="Input/output error")
    with pytest.raises(OSError, match="nothing was replaced"):
        write_all({p: "newer" for p in keep})
    assert [p.read_text() for p in keep] == ["new a.txt", "new b.txt", "new c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.txt"]


def test_check_outputs_refuses_folders_special_files_and_foreign_files(tmp_path) -> None:
    ours = html_generator("harness.report")
    (tmp_path / "mine.html").write_text('<html><head><meta name="generator" content="harness.report">')
    (tmp_path / "theirs.html").write_text("<html><head><title>t</title>")
    check_outputs([Output(tmp_path / "mine.html", "report page", ours, "-o"),
                   Output(tmp_path / "new" / "x.html", "report page", ours, "-o")])
    for path, needle in [(tmp_path, "a folder"), (tmp_path / "theirs.html", "not a report page written by this tool"),
                         (Path("/dev/null"), "not a regular file")]:
        with pytest.raises(OutputError, match=needle):
            check_outputs([Output(path, "report page", ours, "-o")])
