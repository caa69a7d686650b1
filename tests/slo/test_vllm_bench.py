"""benchmarks/slo_vllm_bench.py: vllm bench serve kept resident, run against a stand-in `vllm` package whose
CLI main does what the real one does to the resident process (reads sys.argv, runs the benchmark coroutine and
calculate_metrics, may raise SystemExit or hang or die)."""
from __future__ import annotations

import importlib.util
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"

SERVE = """
import asyncio, time
async def benchmark(n):
    t = time.process_time()
    while time.process_time() - t < n:  # burn n CPU seconds inside the timed region
        pass
def calculate_metrics():
    return {}
"""
MAIN = """
import asyncio, os, sys, time
import vllm.benchmarks.serve as s
def main():
    what, arg = sys.argv[1], float(sys.argv[2])
    print("vllm says hello")  # vLLM prints freely to stdout: the protocol must not depend on it
    if what == "exit":
        sys.exit(int(arg))
    if what == "hang":
        time.sleep(arg)
    if what == "die":
        os._exit(7)
    time.sleep(0.2)  # set-up before the timed region: not in the CPU figure
    asyncio.run(s.benchmark(arg))
    s.calculate_metrics()
"""


@pytest.fixture()
def resident(tmp_path: Path) -> Any:
    pkg = tmp_path / "fake" / "vllm"
    for sub, text in (("benchmarks/serve.py", SERVE), ("entrypoints/cli/main.py", MAIN)):
        (pkg / sub).parent.mkdir(parents=True, exist_ok=True)
        (pkg / sub).write_text(textwrap.dedent(text))
    for d in (pkg, pkg / "benchmarks", pkg / "entrypoints", pkg / "entrypoints/cli"):
        (d / "__init__.py").touch()
    sys.path.insert(0, str(BENCH))  # it imports its sibling slo_clients, as the benchmarks run from their folder
    try:
        spec = importlib.util.spec_from_file_location("slo_vllm_bench", BENCH / "slo_vllm_bench.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    r = module.Resident(sys.executable, tmp_path / "bench.log", env)
    yield r, tmp_path
    r.close()


def test_jobs_run_one_after_another_in_one_process_with_the_timed_cpu(resident: Any) -> None:
    r, tmp = resident
    rc, cpu = r.run(["run", "0.3"], tmp / "1.json", 60)
    pid = r.proc.pid
    assert rc == 0 and 0.29 <= cpu < 0.6, cpu  # the 0.2 s set-up sleep and the imports are not in it
    rc, cpu = r.run(["exit", "3"], tmp / "2.json", 60)
    assert rc == 3 and r.proc.pid == pid  # SystemExit ends the job, not the process
    assert "vllm says hello" in (tmp / "bench.log").read_text()


def test_a_job_past_its_timeout_is_stopped_and_the_next_starts_a_new_process(resident: Any) -> None:
    r, tmp = resident
    r.run(["run", "0"], tmp / "1.json", 60)
    pid = r.proc.pid
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer in 1 s"):
        r.run(["hang", "30"], tmp / "2.json", 1)
    assert time.monotonic() - t0 < 10 and r.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung process is gone, not left behind
    assert r.run(["run", "0"], tmp / "3.json", 60)[0] == 0


def test_a_process_that_dies_is_one_error_with_its_log(resident: Any) -> None:
    r, tmp = resident
    with pytest.raises(RuntimeError, match="exited 7: .*vllm says hello"):
        r.run(["die", "0"], tmp / "1.json", 60)
