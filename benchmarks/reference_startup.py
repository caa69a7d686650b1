"""Print how long the reference server takes from spawn to ready (/health 200 and the model listed).

    python benchmarks/reference_startup.py [--runs 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from pytest_glmv.reference.launcher import ReferenceServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    times = []
    for _ in range(args.runs):
        began = time.monotonic()
        with ReferenceServer():
            times.append(time.monotonic() - began)
    load = os.getloadavg()
    print(f"reference server spawn-to-ready over {args.runs} runs: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f} s, max {max(times):.3f} s (load average {load[0]:.2f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
