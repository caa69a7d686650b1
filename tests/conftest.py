from __future__ import annotations

import os
from pathlib import Path

import pytest

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the fake `vllm` first on PATH; returns the file its tree's pids go to."""
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_VLLM_PIDS", str(pids))
    for var in [v for v in os.environ if v.startswith("GLMV_")]:
        monkeypatch.delenv(var)
    return pids
