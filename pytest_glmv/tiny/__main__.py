"""`python -m pytest_glmv.tiny [--arch moe|dense] [--cache-dir DIR] [--port N]`: build the
tiny model and print the exact `vllm serve` command (with its environment) to run by hand."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from . import prepare, vllm_executable


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.tiny", description=__doc__)
    ap.add_argument("--arch", choices=("moe", "dense"), default="moe")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--port", type=int, default=8000)
    a = ap.parse_args()
    tm = prepare(a.cache_dir, arch=a.arch)
    exe = vllm_executable() or "vllm"
    plan = tm.plan(exe, a.port, tp=1)
    argv = plan.argv
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in plan.env.items())
    print(f"# model dir: {tm.path}")
    print(f"{env} \\\n  {shlex.join(argv)}")


if __name__ == "__main__":
    main()
