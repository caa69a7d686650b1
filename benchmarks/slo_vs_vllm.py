"""pytest-glmv's SLO client against `vllm bench serve`, both loading the reference server.

    python benchmarks/slo_vs_vllm.py [--vllm .venv-vllm/bin/vllm] [--quick]

Prints one table:
- accuracy at concurrency 1 against the truth the server recorded in its --trace (CLOCK_MONOTONIC,
  the clock time.perf_counter() reads on Linux): TTFT bias = client TTFT - (first chunk written -
  request received); TPOT error = |client TPOT - server TPOT| / server TPOT, per request;
- parity with vllm bench serve on the same workload and the same seeded Poisson schedule;
- client CPU seconds per 1000 streamed chunks, from the difference between two run sizes (so
  imports and start-up cancel), for both tools;
- the highest Poisson rate our client sustains with p99 send lag <= 2 ms.
Every client runs in its own process; the server is a separate process too.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_glmv.slo import client, metrics, schedule, workload  # noqa: E402


# -- the child: our client, reading pre-built bodies so the parent's workload generation is not billed ----
def child(args: argparse.Namespace) -> None:
    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines()][: args.n]
    times = schedule.arrivals(args.n, args.rate, 1.0, args.seed)
    out = asyncio.run(client.run(args.url + "/v1/chat/completions", bodies, times,
                                 max_concurrency=args.concurrency or None))
    res = metrics.compute(out.records, out.duration)
    Path(args.out).write_text(json.dumps({
        "result": res, "cpu_in_run": out.cpu_seconds,
        "records": [{"start": r.start, "ttft": r.ttft, "latency": r.latency, "itl": r.itl, "ok": r.ok,
                     "n": r.output_len(), "chunks": r.chunks} for r in out.records]}))


def cpu_of(argv: list[str]) -> float:
    """User+system CPU seconds of one child process tree (waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class Bench:
    def __init__(self, a: argparse.Namespace, url: str, model: str, trace: Path, work: Path) -> None:
        self.a, self.url, self.model, self.trace, self.work = a, url, model, trace, work
        self.k = 0

    def ours(self, n: int, rate: float, concurrency: int | None) -> tuple[dict[str, Any], float]:
        self.k += 1
        out = self.work / f"ours-{self.k}.json"
        argv = [sys.executable, __file__, "--child", "--url", self.url, "--bodies", str(self.work / "bodies.jsonl"),
                "--n", str(n), "--rate", str(rate), "--seed", str(self.a.seed), "--out", str(out),
                "--concurrency", str(concurrency or 0)]
        cpu = cpu_of(argv)
        data = json.loads(out.read_text())
        data["records"] = [metrics.Record(i, start=r["start"], ttft=r["ttft"], latency=r["latency"], itl=r["itl"],
                                          ok=r["ok"], output_tokens=r["n"], chunks=r["chunks"])
                           for i, r in enumerate(data["records"])]
        return data, cpu

    def vllm(self, n: int, rate: float, concurrency: int | None) -> tuple[dict[str, Any], float]:
        self.k += 1
        name = f"vllm-{self.k}.json"
        argv = [self.a.vllm, "bench", "serve", "--backend", "openai-chat", "--base-url", self.url,
                "--endpoint", "/v1/chat/completions", "--model", self.model, "--tokenizer", self.a.tokenizer,
                "--dataset-name", "custom_image", "--dataset-path", str(self.work / "vllm.jsonl"),
                "--disable-shuffle", "--custom-output-len", "128", "--num-prompts", str(n),
                "--request-rate", str(rate), "--seed", str(self.a.seed), "--save-result", "--save-detailed",
                "--result-dir", str(self.work), "--result-filename", name, "--disable-tqdm",
                "--percentile-metrics", "ttft,tpot,itl,e2el"]
        if concurrency:
            argv += ["--max-concurrency", str(concurrency)]
        cpu = cpu_of(argv)
        data = json.loads((self.work / name).read_text())
        recs = [metrics.Record(i, start=s, ttft=t, latency=lat, itl=itl, ok=not err, output_tokens=n_out,
                               chunks=len(itl) + 1)
                for i, (s, t, lat, itl, err, n_out) in enumerate(zip(
                    data["start_times"], data["ttfts"], data["latencies"], data["itls"], data["errors"],
                    data["output_lens"], strict=True))]
        return {"result": data, "records": recs}, cpu

    def accuracy(self, records: list[metrics.Record]) -> tuple[float, float, float]:
        """(mean TTFT bias ms, max TTFT bias ms, mean |TPOT error| %) against the server's trace."""
        trace = [json.loads(line) for line in self.trace.read_text().splitlines()]
        bias, err = [], []
        for r in records:
            if not r.ok:
                continue
            t = next((t for t in trace if r.start <= t["received"] <= r.start + r.latency), None)
            if t is None or len(t["chunks"]) < 3:
                continue
            choices = t["chunks"][:-2]  # the last two writes are the usage chunk and [DONE]
            bias.append((r.ttft - (choices[0] - t["received"])) * 1000)
            n = int(t["completion_tokens"])
            if n > 1:
                truth = (choices[-1] - choices[0]) / (n - 1)
                err.append(abs((r.latency - r.ttft) / (r.output_len() - 1) - truth) / truth * 100)
        return float(np.mean(bias)), float(np.max(bias)), float(np.mean(err))


def chunks(data: dict[str, Any]) -> int:
    return sum(r.chunks for r in data["records"] if r.ok)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true")
    p.add_argument("--url"), p.add_argument("--bodies"), p.add_argument("--out")
    p.add_argument("--n", type=int, default=0), p.add_argument("--rate", type=float, default=math.inf)
    p.add_argument("--concurrency", type=int, default=0), p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vllm", default=str(ROOT / ".venv-vllm/bin/vllm"))
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--ttft-ms", type=float, default=20.0), p.add_argument("--tpot-ms", type=float, default=2.0)
    p.add_argument("--quick", action="store_true", help="fewer prompts")
    a = p.parse_args()
    if a.child:
        return child(a)
    from pytest_glmv.reference.launcher import ReferenceServer

    if a.tokenizer is None:
        from pytest_glmv.tiny import prepare

        a.tokenizer = str(prepare().path)
    small, big, par_n, par_rate = (10, 40, 40, 10.0) if a.quick else (20, 80, 100, 10.0)
    work = Path(tempfile.mkdtemp(prefix="glmv-bench-"))
    reqs = workload.synthetic(max(big, par_n, 600), seed=a.seed)
    with open(work / "vllm.jsonl", "w") as f:
        for r in reqs:
            f.write(json.dumps({"prompt": r.text, "image_files": [r.image_url]}) + "\n")
    trace = work / "trace.jsonl"
    rows: list[tuple[str, str, str, str]] = []
    with ReferenceServer(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, trace=trace, log_dir=work) as srv:
        with open(work / "bodies.jsonl", "w") as f:
            for r in reqs:  # the same text and image vLLM sends for custom_image, text first
                f.write(client.body(srv.model or "", r.text, r.image_url, 128).decode() + "\n")
        b = Bench(a, srv.root_url, srv.model or "", trace, work)
        # 1. accuracy + CPU at concurrency 1, two sizes each
        o_small, o_cpu_small = b.ours(small, math.inf, 1)
        o_big, o_cpu_big = b.ours(big, math.inf, 1)
        v_small, v_cpu_small = b.vllm(small, math.inf, 1)
        v_big, v_cpu_big = b.vllm(big, math.inf, 1)
        ob, omax, oerr = b.accuracy(o_big["records"])
        vb, vmax, verr = b.accuracy(v_big["records"])
        rows += [("TTFT bias vs server trace, mean (max) ms", f"{ob:.3f} ({omax:.3f})", f"{vb:.3f} ({vmax:.3f})",
                  "<= 0.7 ms"),
                 ("TPOT error vs server trace, mean %", f"{oerr:.4f}", f"{verr:.4f}", "<= 0.05 %")]
        o_cpu = (o_cpu_big - o_cpu_small) / max(1, chunks(o_big) - chunks(o_small)) * 1000
        v_cpu = (v_cpu_big - v_cpu_small) / max(1, chunks(v_big) - chunks(v_small)) * 1000
        rows.append(("client CPU s / 1000 chunks (run-size diff)", f"{o_cpu:.4f}", f"{v_cpu:.4f}",
                     f"ours/vllm {o_cpu / v_cpu:.2f} (<= 0.8)"))
        rows.append(("  ours in-process, timed region only", f"{o_big['cpu_in_run'] / chunks(o_big) * 1000:.4f}",
                     "", ""))
        # 2. parity on the same seeded Poisson schedule
        o_par, _ = b.ours(par_n, par_rate, None)
        v_par, _ = b.vllm(par_n, par_rate, None)
        for key in ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_itl_ms", "mean_e2el_ms",
                    "request_throughput", "output_throughput", "max_concurrent_requests"):
            rows.append((f"parity @{par_rate:g} req/s: {key}", f"{o_par['result'][key]:.2f}",
                         f"{v_par['result'][key]:.2f}", ""))
        o_starts = sorted(r.start for r in o_par["records"])
        v_starts = sorted(r.start for r in v_par["records"])
        gap = max(abs((x - o_starts[0]) - (y - v_starts[0])) for x, y in zip(o_starts, v_starts, strict=True))
        rows.append(("parity: max difference of send offsets, ms", f"{gap * 1000:.2f}", "", "same schedule"))
        # 3. send lag under Poisson load
        best = 0.0
        for rate in (25.0, 50.0, 100.0, 200.0):
            data, _ = b.ours(min(600, int(rate * 3)), rate, None)
            lag = data["result"]["p99_send_lag_ms"]
            rows.append((f"p99 send lag @{rate:g} req/s Poisson, ms", f"{lag:.3f}", "",
                         f"failed {data['result']['failed']}"))
            if lag <= 2.0:
                best = rate
        rows.append(("highest Poisson rate with p99 send lag <= 2 ms", f"{best:g} req/s", "", "of 25/50/100/200"))
    w = max(len(r[0]) for r in rows)
    # Latency numbers mean little on an overloaded host: say how loaded it was.
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"server: reference, ttft {a.ttft_ms:g} ms, tpot {a.tpot_ms:g} ms; seed {a.seed}; work dir {work}; "
          f"load average at the end {load} on {os.cpu_count()} CPUs")
    print(f"{'measure':<{w}}  {'pytest-glmv':>16}  {'vllm bench serve':>18}  note")
    for name, ours, theirs, note in rows:
        print(f"{name:<{w}}  {ours:>16}  {theirs:>18}  {note}")


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"(took {time.time() - t:.0f} s)", file=sys.stderr)
