"""The report as a person sees it: headless Chromium renders it without console errors, every
figure loads, and a screenshot is saved.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
JSON messages separated by NUL bytes on file descriptors 3 and 4), which needs nothing beyond
the standard library.  CI installs the browser (``apt-get install -y chromium``); without it
the test is skipped with that reason.  Screenshots land in ``$REPORT_SCREENSHOT_DIR`` when set
(else the test's temporary folder).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_store  # noqa: E402  (shared synthetic store)

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60.0


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """Minimal DevTools-protocol client over Chromium's ``--remote-debugging-pipe``."""

    def __init__(self, browser: str, profile: Path):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The child reads commands on fd 3 and writes replies/events on fd 4.
        hi_r, hi_w = os.dup(to_child_r), os.dup(from_child_w)  # above 3/4 so dup2 cannot clobber them
        profile.mkdir(parents=True, exist_ok=True)
        # stderr to a file: a pipe nobody reads would fill up and stall the browser.
        self._log = profile / "chromium-stderr.log"
        log = open(self._log, "wb")  # noqa: SIM115 - closed right after the start

        def wire() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "--window-size=1280,2000",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            # close_fds would run after preexec_fn and close 3/4 again; our own pipes are
            # non-inheritable (O_CLOEXEC), so nothing else of ours leaks into the browser.
            close_fds=False,
            preexec_fn=wire,
        )
        log.close()
        for fd in (to_child_r, from_child_w, hi_r, hi_w):
            os.close(fd)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message from Chromium in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe: {self.stderr()}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        """Send a command and return its result, keeping the events that arrive meanwhile."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        for e in self.events:
            if e["method"] == method:
                return e
        while True:
            e = self._read_message(deadline)
            if "method" in e:
                self.events.append(e)
                if e["method"] == method:
                    return e

    def stderr(self) -> str:
        """The end of the browser's log (why it stopped)."""
        return self._log.read_text(errors="replace")[-2000:] if self._log.is_file() else ""

    def close(self) -> None:
        try:
            os.close(self._to_child)
            os.close(self._from_child)
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def problems(events: list[dict[str, Any]]) -> list[str]:
    """Console errors/warnings, uncaught exceptions and failed loads among the page's events."""
    out = []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
        elif e["method"] == "Runtime.exceptionThrown":
            out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            out.append(f"log {p['entry'].get('source')}: {p['entry'].get('text')}")
        elif e["method"] == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


IMAGE_CHECK = """JSON.stringify(Array.from(document.images).map(i => ({
  alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
  data: i.src.startsWith('data:image/png;base64,')})))"""


def inspect_page(browser: str, page: Path, profile: Path, shots: Path | None = None) -> dict[str, Any]:
    """Open ``page`` in headless Chromium; return its images, text, script count and problems.

    With ``shots``, also saves ``report_top.png`` (1280 x 2000 viewport), ``report_full.png``
    (the whole page at half scale) and ``report.pdf`` (print layout).
    """
    dt = DevTools(browser, profile)
    try:
        targets = dt.send("Target.getTargets", session=False)["targetInfos"]
        tab = next(t for t in targets if t["type"] == "page")
        dt.session = dt.send("Target.attachToTarget", {"targetId": tab["targetId"], "flatten": True}, session=False)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.send(f"{domain}.enable")
        dt.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False},
        )
        dt.send("Page.navigate", {"url": page.resolve().as_uri()})
        dt.wait_event("Page.loadEventFired")

        def evaluate(expression: str) -> Any:
            return dt.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"]["value"]

        out = {
            "images": json.loads(evaluate(IMAGE_CHECK)),
            "text": evaluate("document.body.innerText"),
            "scripts": evaluate("document.scripts.length"),
        }
        if shots is not None:
            shot = dt.send("Page.captureScreenshot", {"format": "png"})
            (shots / "report_top.png").write_bytes(base64.b64decode(shot["data"]))
            size = dt.send("Page.getLayoutMetrics")["cssContentSize"]
            full = dt.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": size["width"],
                        "height": min(size["height"], 16000),
                        "scale": 0.5,
                    },
                },
            )
            (shots / "report_full.png").write_bytes(base64.b64decode(full["data"]))
            out["pdf"] = base64.b64decode(dt.send("Page.printToPDF", {"printBackground": True})["data"])
            (shots / "report.pdf").write_bytes(out["pdf"])
            dt.send("Emulation.setEmulatedMedia", {"media": "print"})  # the @media print layout, as seen on paper
            shot = dt.send("Page.captureScreenshot", {"format": "png"})
            (shots / "report_print.png").write_bytes(base64.b64decode(shot["data"]))
        out["problems"] = problems(dt.events)
        return out
    finally:
        dt.close()


def loaded(image: dict[str, Any]) -> bool:
    return bool(image["complete"] and image["width"] > 0 and image["height"] > 0)


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        reason = "headless Chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("LUS_REQUIRE_BROWSER") == "1":  # set by .ci/run: there the test must run
            pytest.fail(f"{reason}, but LUS_REQUIRE_BROWSER=1")
        pytest.skip(f"{reason}; CI installs it")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.report import build_report

    out = tmp_path_factory.mktemp("browser")
    make_store(out, description="Rendered in Chromium: <script>alert(1)</script> stays text.", checkpoints=True)
    return build_report(out)


def test_report_renders_in_chromium(browser: str, report: Path, tmp_path: Path) -> None:
    shots = Path(os.environ.get("REPORT_SCREENSHOT_DIR") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    seen = inspect_page(browser, report, tmp_path / "profile", shots)
    assert len(seen["images"]) >= 6, seen["images"]
    broken = [i for i in seen["images"] if not (loaded(i) and i["data"])]
    assert not broken, f"figures that did not load: {broken}"
    # The description is shown as text, and no script exists (the CSP forbids them anyway).
    assert "<script>alert(1)</script> stays text." in seen["text"]
    assert seen["scripts"] == 0
    assert not seen["problems"], seen["problems"]
    assert seen["pdf"][:5] == b"%PDF-"
    assert (shots / "report_top.png").stat().st_size > 10_000


def test_the_check_sees_broken_pages(browser: str, tmp_path: Path) -> None:
    """The inspection is not blind: a missing image, a console error and a blocked fetch are caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; script-src 'unsafe-inline'; img-src data:\"></head><body>"
        '<img src="missing.png" alt="missing"><img src="https://example.invalid/x.png" alt="remote">'
        "<script>console.error('boom')</script></body></html>",
        encoding="utf-8",
    )
    seen = inspect_page(browser, page, tmp_path / "profile")
    assert [i["alt"] for i in seen["images"] if not loaded(i)] == ["missing", "remote"]
    text = " ".join(seen["problems"])
    assert "boom" in text
    assert "Content Security Policy" in text or "Refused" in text
