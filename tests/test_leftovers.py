"""No leftovers (issue 24 item 7): a clean run, the SIGTERM probe's extra server, and a pytest killed with
SIGKILL leave nothing in the temporary folder; a failed run keeps only its server log, and says where."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUITES = Path(__file__).resolve().parents[1] / "suites"


@pytest.fixture
def tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    return d


def _left(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.name.startswith("glmv-") or p.is_file())


def test_a_clean_run_with_the_sigterm_probe_leaves_nothing(pytester: pytest.Pytester, tmp: Path) -> None:
    # the probe starts a second reference server with a log folder of its own: it goes at its clean stop
    result = pytester.runpytest_subprocess(str(SUITES), "--glmv-server", "reference", "-p", "no:cacheprovider",
                                           "-k", "sigterm_under_load or reports_the_window")
    result.assert_outcomes(passed=2)
    assert _left(tmp) == []


def test_a_failed_run_keeps_only_its_log_and_says_where(pytester: pytest.Pytester, tmp: Path) -> None:
    pytester.makepyfile(test_bad="def test_bad(glmv_http):\n    glmv_http.get('/health')\n    assert False\n")
    result = pytester.runpytest_subprocess("--glmv-server", "reference", "-p", "no:cacheprovider", "test_bad.py")
    result.assert_outcomes(failed=1)
    left = _left(tmp)
    assert len(left) == 2 and left[0].startswith("glmv-logs-") and left[1].endswith(".log"), left
    result.stdout.fnmatch_lines([f"glmv: the server's log stays for this failed run: {tmp / left[1]} *"])


def test_kill_9_of_pytest_leaves_nothing(pytester: pytest.Pytester, tmp: Path) -> None:
    ready = tmp.parent / "ready"
    pytester.makepyfile(test_slow=f"""
import pathlib, time
def test_slow(glmv_http, glmv_media_dir):
    assert glmv_http.get('/health').status_code == 200
    pathlib.Path({str(ready)!r}).write_text('x')
    time.sleep(120)
""")
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--glmv-server", "reference", "-p", "no:cacheprovider",
                             "test_slow.py"], cwd=pytester.path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), "the check never ran"
        made = _left(tmp)
        assert any(n.startswith("glmv-logs-") for n in made) and any(n.startswith("glmv-media-") for n in made) \
            and any(n.startswith("glmv-watch-") for n in made), made
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20  # the watchdog: a 5 s SIGTERM grace for a ready server, then cleanup
        while _left(tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _left(tmp) == []
    finally:
        if proc.poll() is None:
            proc.kill()
