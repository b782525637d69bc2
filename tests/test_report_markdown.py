"""The generated block of a Markdown results page (``harness report DIR --markdown PAGE``).

The numbers of docs/results.md come from the store, never from a hand: the block is rewritten in
place between its markers, the prose around it is kept, the forest plot is a PNG beside the page,
and a page that cannot take the block is refused before anything is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.report.markdown import BEGIN, END, MarkdownPageError, check_page
from test_report_verdicts import build  # the shared synthetic store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("markdown")
    arms = [{"name": "baseline"}, {"name": "pm", "preprocess": [{"perona_malik": {"iterations": 5}}]},
            {"name": "noise-floor", "training": {"seed_offset": 1}}]
    return build(out, {"baseline": 1.5, "pm": 2.2, "noise-floor": 1.5}, arms=arms, primary_level="video")


def _report(store: Path, page: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "report", str(store), "--markdown", str(page)],
                          capture_output=True, text=True, timeout=300)


def test_block_is_written_from_the_store_and_prose_is_kept(store: Path, tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text(f"# Results\n\nHand-written reading.\n\n{BEGIN} old -->\nstale numbers 0.999\n{END}\n\n## Limits\n\nProse.\n")
    proc = _report(store, page)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert text.startswith("# Results\n\nHand-written reading.\n\n") and text.endswith(f"{END}\n\n## Limits\n\nProse.\n")
    assert "stale numbers" not in text and text.count(BEGIN) == 1 and text.count(END) == 1
    assert (tmp_path / "results-forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](results-forest.png)" in text
    # the table's numbers are summary.json's (written from the same analysis)
    summary = json.loads((store / "summary.json").read_text())
    pm = summary["arms"]["pm"]["levels"]["video/mean"]["roc_auc"]
    assert f"| `pm` | 6 / 6 |" in text and f"{pm['mean']:.3f} [{pm['ci95_bounded'][0]:.3f}, {pm['ci95_bounded'][1]:.3f}]" in text
    comp = next(c for c in summary["comparisons_other_levels"] if c["arm"] == "pm" and c["level"] == "video"
                and c["metric"] == "roc_auc")
    assert f"{comp['mean_difference']:+.3f} [{comp['ci95'][0]:+.3f}, {comp['ci95'][1]:+.3f}]" in text
    assert "- **pm** (video level): " in text and "`python -m harness report" in text
    # regenerating gives the same page, byte for byte
    first = page.read_bytes()
    assert _report(store, page).returncode == 0 and page.read_bytes() == first


def test_new_page_gets_the_block_alone(store: Path, tmp_path: Path) -> None:
    page = tmp_path / "sub" / "new.md"
    page.parent.mkdir()
    assert _report(store, page).returncode == 0
    text = page.read_text()
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)


@pytest.mark.parametrize("content", ["# Results without markers\n", f"{BEGIN} -->\n{END}\n{BEGIN} -->\n{END}\n",
                                     f"{END}\n{BEGIN} -->\n"])
def test_page_that_cannot_take_the_block_is_refused_before_anything_is_written(
        store: Path, tmp_path: Path, content: str) -> None:
    page = tmp_path / "page.md"
    page.write_text(content)
    with pytest.raises(MarkdownPageError, match="accepted: a new file"):
        check_page(page)
    html = store / "report.html"
    before = html.stat().st_mtime_ns if html.exists() else None
    proc = _report(store, page)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and str(page) in proc.stderr
    assert page.read_text() == content and not (tmp_path / "page-forest.png").exists()
    assert (html.stat().st_mtime_ns if html.exists() else None) == before
