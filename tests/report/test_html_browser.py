"""report.html renders in a real browser: headless Chromium screenshots the page of the fault run.

Skipped without Chromium (Debian: apt-get install chromium), except with CI=true, where that is a
failure: CI must prove the page renders.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from .conftest import Run

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="session")  # session, like `runs`, so it is resolved first and a skip costs no run
def chromium() -> str:
    exe = next((p for p in map(shutil.which, NAMES) if p), None)
    if exe is None:
        reason = "no Chromium on PATH (Debian: apt-get install -y chromium) to render report.html"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return exe


def _browse(exe: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="glmv-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=120, check=False)


def test_screenshot_is_not_blank_and_the_matrix_is_in_the_dom(chromium: str, runs: dict[str, Run],
                                                              tmp_path: Path) -> None:
    page = runs["fault"].report_dir / "report.html"
    shot = tmp_path / "report.png"
    proc = _browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot from {chromium}:\n{proc.stderr[-2000:]}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2000), img.size
    colours = img.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50, f"the screenshot is (nearly) one colour: {colours[:5]}"
    # The matrix sits near the top, under the red banner: its green "ok" cell (slo) is the only green up there.
    top: dict[object, int] = {c: n for n, c in Image.open(shot).convert("RGB").crop((0, 0, 1280, 900)).getcolors(
        1_000_000) or []}
    reds, greens = top.get((248, 212, 212), 0), top.get((223, 243, 223), 0)
    assert reds > 500 and greens > 500, f"matrix verdict cells not visible (red {reds} px, green {greens} px)"
    dom = _browse(chromium, page, "--dump-dom").stdout
    assert '<table id="glmv-matrix">' in dom, dom[:2000]
    matrix = dom[dom.index('<table id="glmv-matrix">'):]
    matrix = matrix[:matrix.index("</table>")]
    for area in ("multimodal", "tools", "reasoning", "context", "slo", "robustness", "security"):
        assert f"<td>{area}</td>" in matrix, f"{area} missing from the rendered matrix"
    assert ">FAIL</td>" in matrix and 'alt="Latency CDFs (TTFT, TPOT, ITL, end-to-end)"' in dom
