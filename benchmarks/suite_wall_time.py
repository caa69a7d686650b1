"""Print each suite's wall time against the reference server (server-level and behaviour checks, no SLO).

    python benchmarks/suite_wall_time.py
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pytest_glmv.suiterun import run_suite

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    total = 0.0
    for suite in sorted((ROOT / "suites").glob("test_*.py")):
        began = time.monotonic()
        run = run_suite([str(suite)], extra=["-m", "not slo"], cwd=ROOT)
        took = time.monotonic() - began
        total += took
        print(f"{suite.name:32} {took:6.1f} s  {len(run.passed):3d} passed {len(run.failed):3d} failed "
              f"{len(run.named('skipped')):3d} skipped")
    print(f"{'all suites':32} {total:6.1f} s  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
