"""How many output tokens the reference server answers the SLO workload's requests with, beside the
4xH100 reference results the default spec holds (2200.83 tok/s over 18.30 req/s: ~120 a request).

    python benchmarks/reference_output_len.py [-n 200] [--seed 0]

Sends the synthetic VisionArena-shaped workload one request at a time (max_tokens 128, as vllm bench serve
sends it) to a reference server of its own and prints the mean, min, max and how many hit the cap.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_glmv.kit.evidence import CHAT, chat_body  # noqa: E402
from pytest_glmv.reference.launcher import ReferenceServer  # noqa: E402
from pytest_glmv.slo import workload  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/reference_output_len.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="requests (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.n < 1:
        ap.error("-n must be at least 1")
    lens = []
    with ReferenceServer() as srv, httpx.Client(timeout=60) as http:
        for r in workload.synthetic(a.n, seed=a.seed):
            content = [{"type": "image_url", "image_url": {"url": r.image_url}}, {"type": "text", "text": r.text}]
            out = http.post(srv.root_url + CHAT, json=chat_body(srv.model, content, max_tokens=r.max_tokens))
            out.raise_for_status()
            lens.append(out.json()["usage"]["completion_tokens"])
    cap = workload.OUTPUT_LEN
    print(f"{len(lens)} requests: output tokens mean {statistics.mean(lens):.1f}, min {min(lens)}, max {max(lens)}, "
          f"{sum(x == cap for x in lens)} at the {cap}-token cap (4xH100 reference: ~120 a request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
