"""Running pytest-glmv's SLO client and `vllm bench serve` side by side, for benchmarks/slo_vs_peers.py
(its bare-client parity rows, benchmarks/slo_parity.py).

Each client run is its own process (`python benchmarks/slo_clients.py --child ...` for ours, vLLM's
CLI through a small wrapper for theirs), so the CPU each one spends is its own; request bodies are
built once, beforehand, byte for byte as vllm bench serve builds them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_glmv.kit import prometheus  # noqa: E402
from pytest_glmv.slo import client, metrics, promcheck, schedule, workload  # noqa: E402


# -- the child: our client, reading pre-built bodies so the parent's workload generation is not billed ----
def child(args: argparse.Namespace) -> None:
    # split on b"\n" only: str.splitlines() would also cut at U+2028 and friends inside a prompt
    bodies = Path(args.bodies).read_bytes().rstrip(b"\n").split(b"\n")[: args.n]
    times = schedule.arrivals(args.n, args.rate, 1.0, args.seed)
    # no probe request: vllm bench serve 0.32 skips its ready check unless --ready-check-timeout-sec
    q0 = _schedstat()
    out = asyncio.run(client.run(args.url + "/v1/chat/completions", bodies, times,
                                 max_concurrency=args.concurrency or None, probe=False))
    q1 = _schedstat()
    res = metrics.compute(out.records, out.duration)
    Path(args.out).write_text(json.dumps({
        "result": res, "cpu_in_run": out.cpu_seconds,
        # this process's time on a CPU and waiting in the run queue for one (Linux schedstat, ns)
        "on_cpu_ms": (q1[0] - q0[0]) / 1e6, "runqueue_wait_ms": (q1[1] - q0[1]) / 1e6,
        "records": [{"start": r.start, "ttft": r.ttft, "latency": r.latency, "itl": r.itl, "ok": r.ok,
                     "n": r.output_len(), "chunks": r.chunks} for r in out.records]}))


def _schedstat() -> list[int]:
    try:
        return [int(x) for x in Path("/proc/self/schedstat").read_text().split()[:2]]
    except OSError:
        return [0, 0]


# vllm bench serve, unchanged, run through this wrapper so its CPU time over the timed region can be
# read inside its process as ours is: from benchmark()'s entry (the session is made, the ready check
# is skipped by default) to calculate_metrics() (every request answered), start-up and imports excluded.
# The hook alone, shared with slo_vllm_bench.py's resident process: mark["t0"] / mark["t1"] in process CPU time.
VLLM_CPU_MARK = """
import json, os, sys, time, traceback
import vllm.benchmarks.serve as s
from vllm.entrypoints.cli.main import main
mark = {}
orig_benchmark, orig_metrics = s.benchmark, s.calculate_metrics
async def benchmark(*a, **k):
    mark["t0"] = time.process_time()
    return await orig_benchmark(*a, **k)
def calculate_metrics(*a, **k):
    mark.setdefault("t1", time.process_time())
    return orig_metrics(*a, **k)
s.benchmark, s.calculate_metrics = benchmark, calculate_metrics
"""
VLLM_CPU_WRAPPER = VLLM_CPU_MARK + """
sys.argv = ["vllm"] + sys.argv[1:]
try:
    main()
finally:
    with open(os.environ["GLMV_CPU_OUT"], "w") as f:
        json.dump({"cpu_in_run": mark.get("t1", 0.0) - mark.get("t0", 0.0)}, f)
"""


def cpu_of(argv: list[str], env: dict[str, str] | None = None) -> float:
    """User+system CPU seconds of one child process tree (waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=None if env is None else {**os.environ, **env})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        return prometheus.totals(resp.read().decode())


class Bench:
    """Runs either tool against one server; with metrics=True, every run also carries the server's own
    /metrics deltas over it (runs never overlap, so they are that run's alone)."""

    def __init__(self, a: argparse.Namespace, url: str, model: str, work: Path, metrics_too: bool = False) -> None:
        self.a, self.url, self.model, self.work, self.metrics_too = a, url, model, work, metrics_too
        self.k = 0
        self.resident: Any = None  # a slo_vllm_bench.Resident: vllm bench serve without a start-up per run
        self.timeout = 3600.0

    def _timed(self, run: Any) -> tuple[dict[str, Any], float]:
        before = scrape(self.url) if self.metrics_too else {}
        data, cpu = run()
        if self.metrics_too:
            data["server"] = server_means(before, scrape(self.url))
        return data, cpu

    def ours(self, n: int, rate: float, concurrency: int | None) -> tuple[dict[str, Any], float]:
        return self._timed(lambda: self._ours(n, rate, concurrency))

    def vllm(self, n: int, rate: float, concurrency: int | None) -> tuple[dict[str, Any], float]:
        return self._timed(lambda: self._vllm(n, rate, concurrency))

    def _ours(self, n: int, rate: float, concurrency: int | None) -> tuple[dict[str, Any], float]:
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

    def _vllm(self, n: int, rate: float, concurrency: int | None) -> tuple[dict[str, Any], float]:
        self.k += 1
        name = f"vllm-{self.k}.json"
        argv = [self.a.vllm_python, "-c", VLLM_CPU_WRAPPER, "bench", "serve", "--backend", "openai-chat",
                "--base-url", self.url, "--endpoint", "/v1/chat/completions", "--model", self.model,
                "--tokenizer", self.a.tokenizer,
                "--dataset-name", "custom_image", "--dataset-path", str(self.work / "vllm.jsonl"),
                "--disable-shuffle", "--custom-output-len", "128", "--num-prompts", str(n),
                "--request-rate", str(rate), "--seed", str(self.a.seed), "--save-result", "--save-detailed",
                "--result-dir", str(self.work), "--result-filename", name, "--disable-tqdm",
                "--percentile-metrics", "ttft,tpot,itl,e2el", "--temperature", "0", "--ignore-eos"]
        if concurrency:
            argv += ["--max-concurrency", str(concurrency)]
        cpu_file = self.work / f"vllm-{self.k}.cpu.json"
        if self.resident is not None:  # argv is [python, -c, wrapper, bench, serve, ...]
            cpu = self.resident.run(argv[3:], cpu_file, self.timeout)[1]
        else:
            cpu = cpu_of(argv, {"GLMV_CPU_OUT": str(cpu_file)})
        data = json.loads((self.work / name).read_text())
        recs = [metrics.Record(i, start=s, ttft=t, latency=lat, itl=itl, ok=not err, output_tokens=n_out,
                               chunks=len(itl) + 1)
                for i, (s, t, lat, itl, err, n_out) in enumerate(zip(
                    data["start_times"], data["ttfts"], latencies(data), data["itls"], data["errors"],
                    data["output_lens"], strict=True))]
        return {"result": data, "records": recs, **json.loads(cpu_file.read_text())}, cpu


def latencies(data: dict[str, Any]) -> list[float]:
    """Per-request latencies from a `vllm bench serve --save-detailed` result. Releases before 0.31 (0.26.0's
    KeyError: 'latencies', 0.27.1, 0.28.0) save no "latencies" list: there a request's latency is its TTFT
    plus its inter-token gaps: its last token chunk's arrival, where those releases end a latency too."""
    if "latencies" in data:
        return list(data["latencies"])
    return [ttft + sum(itl) for ttft, itl in zip(data["ttfts"], data["itls"], strict=True)]


def server_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """vLLM's own view of one run from its /metrics deltas: successful requests, mean TTFT (arrival
    in the engine's front end to first token out of it) and mean TPOT per request, ms."""
    def mean(hist: str) -> float:
        ms = promcheck.mean_ms(before, after, hist)
        return float("nan") if ms is None else ms
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)
    # prompt/generation token totals: the same requests from two tools must cost the server the same tokens
    return {"n": delta(promcheck.SUCCESS), "ttft": mean(promcheck.TTFT),
            "tpot": mean("vllm:request_time_per_output_token_seconds"),
            "prompt_tokens": delta("vllm:prompt_tokens_total"),
            "generation_tokens": delta("vllm:generation_tokens_total")}


def trace_means(trace: Path, lo: float, hi: float) -> dict[str, float]:
    """What the reference server traced (--trace) for the completed streams whose first bytes it read in
    [lo, hi]: count, mean TTFT (first chunk written - request arrived) and mean TPOT (ms). The last two
    writes of a stream are the usage chunk and [DONE]."""
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    mine = [t for t in rows if lo <= t["arrived"] <= hi and t.get("status") == 200 and len(t["chunks"]) >= 3]
    ttft = [(t["chunks"][0] - t["arrived"]) * 1000 for t in mine]
    tpots = [metrics.tpot(t["chunks"][0], t["chunks"][-3], int(t["completion_tokens"])) for t in mine]
    tpot = [x * 1000 for x in tpots if x is not None]
    return {"n": len(mine), "ttft": statistics.fmean(ttft) if ttft else math.nan,
            "tpot": statistics.fmean(tpot) if tpot else math.nan}


def chunks(data: dict[str, Any]) -> int:
    return sum(r.chunks for r in data["records"] if r.ok)


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def wait_quiet(max_load: float, wait: float) -> str:
    """Poll the 1-minute load average until it is below max_load or wait seconds have passed."""
    deadline = time.monotonic() + wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(10)
    quiet = os.getloadavg()[0] < max_load
    return f"{'quiet' if quiet else 'NOT quiet'} (1-min load {'<' if quiet else '>='} {max_load:g})"


def pin_tree(pid: int, cpu: int) -> None:
    """Every thread of pid and of its descendants onto one CPU (threads made later inherit it)."""
    pids, seen = [pid], set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                os.sched_setaffinity(int(tid), {cpu})
                pids += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue


def vllm_body(model: str, r: workload.Request) -> bytes:
    """The exact bytes vllm bench serve (openai-chat, custom_image, --ignore-eos, --temperature 0)
    posts: its payload keys in its order, ignore_eos after stream_options, temperature from
    extra_body last, aiohttp's json.dumps defaults. ignore_eos makes every answer the workload's
    128 output tokens."""
    return client.body(model, r.text, r.image_url, r.max_tokens, {"ignore_eos": True, "temperature": 0.0})


def write_workload(work: Path, reqs: list[workload.Request], model: str) -> None:
    with open(work / "vllm.jsonl", "w", encoding="utf-8") as f:
        for r in reqs:  # a text-only row as one text part (custom_image refuses an empty image_files)
            row = {"prompt": r.text, "image_files": [r.image_url]} if r.image_url else {
                "content": [{"type": "text", "text": r.text}]}
            f.write(json.dumps(row) + "\n")
    with open(work / "bodies.jsonl", "wb") as fb:
        for r in reqs:  # byte for byte what vllm bench serve sends for the same row
            fb.write(vllm_body(model, r) + b"\n")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true", required=True)
    p.add_argument("--url"), p.add_argument("--bodies"), p.add_argument("--out")
    p.add_argument("--n", type=int), p.add_argument("--rate", type=float)
    p.add_argument("--concurrency", type=int, default=0), p.add_argument("--seed", type=int, default=0)
    child(p.parse_args())
