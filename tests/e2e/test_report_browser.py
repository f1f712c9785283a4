"""The HTML report in a real browser: headless Chromium loads it, draws every plot, no errors.

Console errors are caught twice: Chromium's own log on stderr (every console message and
uncaught exception is logged as a CONSOLE line; the page logs nothing when all is well), and
the page's `window.onerror` / console.error recorder, read back from `--dump-dom`.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.unit.test_html import passing_case, synthetic_run
from vhostlm.report.html import render_report_files
from vhostlm.report.results import RunResult

NEEDS_ROOT = False  # a browser and a file: no namespaces or hugepages
CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_S = 120
WINDOW = (1280, 2400)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
# Chromium logs page console output as "...:INFO:CONSOLE:12] "msg", source: ..." (older
# builds: "CONSOLE(12)"); uncaught exceptions arrive the same way as "Uncaught ...".
CONSOLE_LINE = re.compile(r":CONSOLE[:(]\d*\)?\]|Uncaught ")
MAX_DRAW_MS = 3000.0  # generous: a 60 s run at 10k pps draws in well under a second


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """Skip without Chromium on a workstation; in CI (CI set) its absence is a failure."""
    if CHROMIUM.exists():
        return
    why = f"{CHROMIUM} not found: apt-get install chromium (the Makefile's deps do)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def run_chromium(url: str, profile: Path, *extra: str) -> tuple[str, str]:
    """Run headless Chromium with a fresh profile and a timeout; (stdout, stderr)."""
    profile.mkdir(parents=True)
    argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra, url]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills all of it
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s: {' '.join(argv)}")
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}:\n{err[-3000:]}"
    return out, err


class Dom(HTMLParser):
    """Attributes of <html> and of every canvas in a dumped DOM."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.root: dict[str, str] = {}
        self.canvases: list[dict[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        elif tag == "canvas":
            self.canvases.append(a)


@dataclass
class Loaded:
    """One page as the browser saw it."""

    dom: Dom
    stderr: str


def load(page: Path, profile: Path) -> Loaded:
    out, err = run_chromium(page.as_uri(), profile, "--dump-dom")
    return Loaded(Dom(out), err)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


def problems(loaded: Loaded, replies: list[int]) -> list[str]:
    """Everything wrong with a loaded report that should show `replies` in its plots."""
    found = [f"console: {line}" for line in console_lines(loaded.stderr)]
    root = loaded.dom.root
    if root.get("data-js-errors") != "0":
        found.append(f"page errors: {root.get('data-js-errors')}: {root.get('data-js-error-log')}")
    if root.get("data-report-ready") != "yes":
        found.append("the plot script did not run to its end")
    drawn = [c.get("data-drawn") for c in loaded.dom.canvases]
    if drawn != [str(n) for n in replies]:
        found.append(f"canvases drew {drawn}, expected {replies}")
    return found


def two_case_run() -> RunResult:
    """A 30 s run at 1000 pps and a 60 s run at 10k pps, both with a 48 ms outage."""
    return synthetic_run([passing_case("virtio_pmd"), passing_case("virtio_net", 10000, 60.0)])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    run = two_case_run()
    replies = [len(c.measure["timeline"]["reply_ms"]) for c in run.cases]
    return render_report_files(run, tmp_path_factory.mktemp("run")), replies


def test_report_loads_without_errors_and_draws_every_plot(
    report: tuple[Path, list[int]], tmp_path: Path
) -> None:
    page, replies = report
    loaded = load(page, tmp_path / "profile")
    assert problems(loaded, replies) == []
    assert all(n > 0 for n in replies)
    for canvas in loaded.dom.canvases:
        assert float(canvas["data-draw-ms"]) < MAX_DRAW_MS, canvas


def test_screenshot_beside_the_report(report: tuple[Path, list[int]], tmp_path: Path) -> None:
    page, _ = report
    shot = page.parent / "report.png"
    _, err = run_chromium(
        page.as_uri(),
        tmp_path / "profile",
        f"--screenshot={shot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    )
    assert console_lines(err) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == WINDOW
    assert len(data) > 50_000, f"{shot} is only {len(data)} bytes: a blank page?"


@pytest.mark.parametrize(
    ("name", "inject", "expect"),
    [
        ("uncaught", "<script>window.nothing.here = 1;</script>", ["console:", "page errors: 1"]),
        ("console_error", "<script>console.error('boom');</script>", ["console:", "boom"]),
        ("broken_data", None, ["console:", "page errors", "did not run", "canvases drew"]),
    ],
)
def test_detection_catches_a_broken_page(
    report: tuple[Path, list[int]],
    tmp_path: Path,
    name: str,
    inject: str | None,
    expect: list[str],
) -> None:
    page, replies = report
    text = page.read_text(encoding="utf-8")
    if inject is None:  # the embedded data no longer parses: nothing can be drawn
        text = re.sub(r'(id="vhostlm-data">)\{', r"\1{oops", text, count=1)
    else:
        text = text.replace("</body>", inject + "</body>")
    assert text != page.read_text(encoding="utf-8")
    broken = tmp_path / f"{name}.html"
    broken.write_text(text, encoding="utf-8")
    found = "\n".join(problems(load(broken, tmp_path / "profile"), replies))
    for needle in expect:
        assert needle in found, f"{needle!r} not in:\n{found}"
