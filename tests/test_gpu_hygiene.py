"""benchmarks/gpu_hygiene.py measures on GPU machines only (docs/gpu.md); here, its refusal on a CPU machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_hygiene.py"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine: the script would measure")
def test_without_nvidia_smi_it_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no nvidia-smi (and nothing else) on PATH
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", "a"], capture_output=True, text=True,
                          env=env, timeout=60)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(out) == 1, (proc.returncode, out)
    assert out[0].startswith("gpu_hygiene: nvidia-smi not found") and "--allow-no-gpu" in out[0]
