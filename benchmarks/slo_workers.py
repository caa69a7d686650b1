"""The SLO load generator past one core: 1 vs 2 worker processes (pytest_glmv/slo/workers.py), one table.

    python benchmarks/slo_workers.py [--rates 200,400] [--workers 1,2] [--seconds 10] [--tpot-ms 1]

Against the reference server (--ttft-ms/--tpot-ms small, so that its own pacing is short; it traces when each
request's first bytes arrived and when each chunk was written, CLOCK_MONOTONIC, the clock perf_counter reads
on Linux), at each Poisson rate (vllm bench serve's schedule, seed --seed) with 128-token answers (random text
prompts of --input-len tokens, ignore_eos) and each worker count, it prints:
- sent/rate: requests released per second over the schedule's span (n / (last release - start)) against the
  configured rate (target >= 99 %); done/rate: vLLM's request throughput (completed / duration, the last
  answers' tail included) against it;
- p99 send lag (target <= 2 ms) and p99 client queue time;
- TTFT bias: the client's mean TTFT minus the server's mean (first chunk written - request's first bytes read)
  over the same run's requests (target <= 1 ms). Means over the same set need no per-request matching, which
  at hundreds of requests a second in flight together could pair the wrong ones;
- the server's own mean TTFT and TPOT from its trace next to the configured ones: when they are far above,
  the server is the bottleneck and the run says more about it than about the client;
- the client's CPU seconds (all workers) and the 1-minute load average before and after each run.
Nothing is pinned: the point is using more than one core, and this is usually a 2-CPU host that the server
(one process, one core at most) shares with the client.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from slo_clients import loadavg, trace_means  # noqa: E402

from pytest_glmv.slo import client, metrics, schedule, workers, workload  # noqa: E402


def one(url: str, bodies: list[bytes], rate: float, n_workers: int, seed: int, trace: Path) -> dict[str, Any]:
    n = len(bodies)
    times = schedule.arrivals(n, rate, 1.0, seed)
    load0 = loadavg()
    out = workers.run(url, bodies, times, workers=n_workers)
    load1 = loadavg()
    res = metrics.compute(out.records, out.duration)
    ok = [r for r in out.records if r.ok]
    time.sleep(0.5)  # the server appends each request's trace line once it has finished writing
    srv = trace_means(trace, out.started, out.started + out.duration)
    sent = n / (max(r.dispatched for r in out.records) - out.started)
    return {"rate": rate, "workers": n_workers, "n": n, "failed": res["failed"], "sent": sent / rate * 100,
            "done": res["request_throughput"] / rate * 100, "lag": res["p99_send_lag_ms"],
            "queue": res["p99_client_queue_time_ms"], "ttft": res["mean_ttft_ms"], "srv_ttft": srv["ttft"],
            "srv_tpot": srv["tpot"], "srv_n": srv["n"], "bias": res["mean_ttft_ms"] - srv["ttft"],
            "cpu": out.cpu_seconds, "load": f"{load0} -> {load1}", "tokens": np.mean([r.output_len() for r in ok])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="200,400", help="Poisson rates, req/s")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare")
    ap.add_argument("--seconds", type=float, default=10.0, help="schedule length per run")
    ap.add_argument("--ttft-ms", type=float, default=1.0)
    ap.add_argument("--tpot-ms", type=float, default=1.0)
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from pytest_glmv.reference.launcher import ReferenceServer

    rates = [float(x) for x in a.rates.split(",")]
    counts = [int(x) for x in a.workers.split(",")]
    print(f"host: {os.cpu_count()} CPUs, python {sys.version.split()[0]}; load average before: {loadavg()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="glmv-workers-") as tmp:
        trace = Path(tmp) / "trace.jsonl"
        with ReferenceServer(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, trace=trace, log_dir=Path(tmp)) as srv:
            url = srv.root_url + "/v1/chat/completions"
            reqs = workload.load("random", int(max(rates) * a.seconds), a.seed, 128, input_len=a.input_len,
                                 output_len=128)
            bodies = [client.body(srv.model or "", r.text, None, 128, {"ignore_eos": True}) for r in reqs]
            one(url, bodies[:100], 50.0, 1, a.seed, trace)  # warm the server up; not reported
            for rate in rates:
                for k in counts:
                    rows.append(one(url, bodies[: int(rate * a.seconds)], rate, k, a.seed, trace))
                    print(json.dumps(rows[-1]), flush=True)
    print(f"\nreference server --ttft-ms {a.ttft_ms:g} --tpot-ms {a.tpot_ms:g}; Poisson, seed {a.seed}, "
          f"{a.seconds:g} s of schedule per run, random {a.input_len} in / 128 out, ignore_eos")
    head = ("rate", "workers", "n", "failed", "sent/rate %", "done/rate %", "p99 send lag ms", "p99 queue ms",
            "TTFT bias ms", "srv TTFT ms", "srv TPOT ms", "client CPU s", "load 1/5/15 before -> after")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join([f"{r['rate']:g}", str(r["workers"]), str(r["n"]), str(r["failed"]), f"{r['sent']:.2f}",
                          f"{r['done']:.2f}", f"{r['lag']:.3f}", f"{r['queue']:.3f}", f"{r['bias']:.3f}",
                          f"{r['srv_ttft']:.3f}", f"{r['srv_tpot']:.3f}", f"{r['cpu']:.2f}", r["load"]]))
    print("targets: sent/rate >= 99 %, p99 send lag <= 2 ms, TTFT bias <= 1 ms; server TTFT/TPOT far above "
          f"{a.ttft_ms:g}/{a.tpot_ms:g} ms means the server, not the client, was the bottleneck")
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":  # workers are spawned: they import this file again, and must not run it
    main()
