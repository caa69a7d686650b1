"""report.html renders in a real browser: headless Chromium screenshots the page of the fault run.

Skipped without Chromium (Debian: apt-get install chromium), except with CI=true, where that is a
failure: CI must prove the page renders.
"""
from __future__ import annotations

import os
import re
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


def _colour_px(shot: Path) -> dict[tuple[int, int, int], int]:
    img = Image.open(shot).convert("RGB")
    return {c: n for n, c in img.getcolors(maxcolors=1_000_000) or []}


def test_screenshot_is_not_blank_and_the_matrix_is_in_the_dom(chromium: str, runs: dict[str, Run],
                                                              tmp_path: Path) -> None:
    page = runs["fault"].report_dir / "report.html"
    shot = tmp_path / "report.png"
    proc = _browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot from {chromium}:\n{proc.stderr[-2000:]}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 2400), img.size
    colours = _colour_px(shot)
    assert len(colours) > 50, f"the screenshot is (nearly) one colour: {list(colours)[:5]}"
    # the red banner and FAIL cells, and the matrix's green "ok" cell (slo), are on screen
    reds, greens = colours.get((248, 212, 212), 0), colours.get((223, 243, 223), 0)
    assert reds > 500 and greens > 500, f"verdict cells not visible (red {reds} px, green {greens} px)"
    dom = _browse(chromium, page, "--dump-dom").stdout
    assert '<table id="glmv-matrix">' in dom, dom[:2000]
    matrix = dom[dom.index('<table id="glmv-matrix">'):]
    matrix = matrix[:matrix.index("</table>")]
    for area in ("multimodal", "tools", "reasoning", "context", "slo", "robustness", "security"):
        assert f"<td>{area}</td>" in matrix, f"{area} missing from the rendered matrix"
    assert ">FAIL</td>" in matrix and 'alt="Latency CDFs (TTFT, TPOT, ITL, end-to-end)"' in dom
    # the three reasoning failures are one finding, named by its cause
    (finding,) = re.findall(r'<section class="finding cause" id="finding-1">(.*?)</section>', dom, re.S)
    assert "No reasoning parser" in finding and finding.count("<code>reasoning/") >= 3, finding[:1500]


def test_a_misdeployment_reads_as_one_finding_with_its_evidence(chromium: str, runs: dict[str, Run],
                                                                 tmp_path: Path) -> None:
    """--glmv-fault no-tool-parser,bomb-500: a dozen tools checks fail for one reason, and the page says that
    reason first, with the request and the server's answer; no traceback, no repr, no loopback URL as title."""
    run = runs["misdeployed"]
    assert run.rc == 1, run.output[-3000:]
    page = run.report_dir / "report.html"
    shot = tmp_path / "misdeployed.png"
    _browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,1600")
    assert shot.is_file() and len(_colour_px(shot)) > 50
    dom = _browse(chromium, page, "--dump-dom").stdout
    h1 = re.search(r"<h1>(.*?)</h1>", dom, re.S)
    assert h1 and "glmv-reference on the glmv reference server" in h1.group(1) and "127.0.0.1" not in h1.group(1)
    sections = re.findall(r'<section class="finding (\w+)" id="finding-(\d)"><h3>(.*?)</h3>(.*?)</section>', dom, re.S)
    assert [(kind, n) for kind, n, *_ in sections] == [("cause", "1"), ("server", "2")], [s[:3] for s in sections]
    tools, bomb = sections[0], sections[1]
    assert tools[2].startswith("1. No tool parser") and tools[3].count("<code>tools/") >= 10, tools[2]
    assert "--tool-call-parser glm45" in tools[3] and "Request</b> <code>POST /v1/chat/completions</code>" in tools[3]
    assert "&lt;tool_call&gt;" in tools[3]  # the server's answer, markup and all
    assert "status 500: DecompressionBombError" in bomb[2] and "robustness/decompression_bomb_is_refused_quickly" \
        in bomb[3], bomb[2]
    for junk in ("Traceback", "object at 0x", "def test_", "Exchange(method=", "+  where"):
        assert junk not in dom, f"{junk!r} in the page"
    target = dom[dom.index('<table id="glmv-target">'):]
    target = target[:target.index("</table>")]
    for row in ("Engine and version", "Launch command", "Where it ran", "Time to ready"):
        assert f"<td>{row}</td>" in target, target[:1500]
    assert "-m pytest_glmv.reference" in target and "--fault no-tool-parser" in target, target[:2000]
