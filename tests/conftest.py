from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture(scope="session", autouse=True)
def _temp_folder_of_this_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The pytest runs these tests start (pytester subprocesses, servers) write their temporary folders under
    this run's basetemp, not the system's: runs that fail on purpose keep their server logs there, and pytest
    prunes old basetemps. Without it the test suite left dozens of glmv-logs-* in /tmp (issue 24 item 7)."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("tmp"))
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the fake `vllm` first on PATH; returns the file its tree's pids go to."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_VLLM_PIDS", str(pids))
    for var in [v for v in os.environ if v.startswith("GLMV_")]:
        monkeypatch.delenv(var)
    return pids
