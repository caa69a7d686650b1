"""pytest-glmv's SLO client against `vllm bench serve`, both loading the reference server.

    python benchmarks/slo_vs_vllm.py [--vllm .venv-vllm/bin/vllm] [--quick] [--max-load 1.5 --wait 900]

Prints one table:
- accuracy at concurrency 1 against the truth the server recorded in its --trace (CLOCK_MONOTONIC,
  the clock time.perf_counter() reads on Linux): TTFT bias = client TTFT - (first chunk written -
  request's first bytes read; the handler's start, after aiohttp parsed it, is shown too);
  TPOT error = |client TPOT - server TPOT| / server TPOT, per request;
- parity with vllm bench serve on the same seeded Poisson schedule, with byte-identical request
  bodies (vLLM's JSON encoding, temperature 0 on both so the reference server's answers, and so
  the token counts, are the same; ignore_eos on both, so every answer is the workload's 128
  tokens), run in the order ours, vllm, vllm, ours so that a drift in host
  load shows as a difference between a tool's two runs; next to the client-side means, what the
  server recorded for the same requests, so a slower server is never mistaken for a client error;
- client CPU seconds per 1000 streamed chunks, from the difference between two run sizes (so
  imports and start-up cancel), for both tools;
- the highest Poisson rate our client sustains with p99 send lag <= 2 ms.
Every client runs in its own process; the server is a separate process too, pinned to one CPU with
the clients on the others (--no-pin to turn off). The host's load
average is printed before and after: latency numbers from an overloaded host mean little, and
--max-load waits (up to --wait seconds) for a quiet moment before starting.
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
VLLM_CPU_WRAPPER = """
import json, os, sys, time
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
        python = str(Path(self.a.vllm).parent / "python")
        argv = [python, "-c", VLLM_CPU_WRAPPER, "bench", "serve", "--backend", "openai-chat", "--base-url", self.url,
                "--endpoint", "/v1/chat/completions", "--model", self.model, "--tokenizer", self.a.tokenizer,
                "--dataset-name", "custom_image", "--dataset-path", str(self.work / "vllm.jsonl"),
                "--disable-shuffle", "--custom-output-len", "128", "--num-prompts", str(n),
                "--request-rate", str(rate), "--seed", str(self.a.seed), "--save-result", "--save-detailed",
                "--result-dir", str(self.work), "--result-filename", name, "--disable-tqdm",
                "--percentile-metrics", "ttft,tpot,itl,e2el", "--temperature", "0", "--ignore-eos"]
        if concurrency:
            argv += ["--max-concurrency", str(concurrency)]
        cpu_file = self.work / f"vllm-{self.k}.cpu.json"
        cpu = cpu_of(argv, {"GLMV_CPU_OUT": str(cpu_file)})
        data = json.loads((self.work / name).read_text())
        recs = [metrics.Record(i, start=s, ttft=t, latency=lat, itl=itl, ok=not err, output_tokens=n_out,
                               chunks=len(itl) + 1)
                for i, (s, t, lat, itl, err, n_out) in enumerate(zip(
                    data["start_times"], data["ttfts"], data["latencies"], data["itls"], data["errors"],
                    data["output_lens"], strict=True))]
        return {"result": data, "records": recs, **json.loads(cpu_file.read_text())}, cpu

    def accuracy(self, records: list[metrics.Record]) -> tuple[float, float, float, float]:
        """(mean TTFT bias ms, max TTFT bias ms, mean |TPOT error| %, mean TTFT bias ms against the
        handler's start instead of the request's arrival) against the server's trace."""
        trace = [json.loads(line) for line in self.trace.read_text().splitlines()]
        bias, err, late = [], [], []
        for r in records:
            if not r.ok:
                continue
            t = next((t for t in trace if r.start <= t["received"] <= r.start + r.latency), None)
            if t is None or len(t["chunks"]) < 3:
                continue
            choices = t["chunks"][:-2]  # the last two writes are the usage chunk and [DONE]
            bias.append((r.ttft - (choices[0] - t["arrived"])) * 1000)
            late.append((r.ttft - (choices[0] - t["received"])) * 1000)
            n = int(t["completion_tokens"])
            if n > 1:
                truth = (choices[-1] - choices[0]) / (n - 1)
                err.append(abs((r.latency - r.ttft) / (r.output_len() - 1) - truth) / truth * 100)
        return float(np.mean(bias)), float(np.max(bias)), float(np.mean(err)), float(np.mean(late))

    def server_view(self, records: list[metrics.Record]) -> dict[str, float]:
        """What the server recorded for one run's requests (runs never overlap in time): count, mean
        TTFT (first chunk written - request received) and mean TPOT (ms), over completed streams."""
        ok = [r for r in records if r.ok]
        lo, hi = min(r.start for r in ok), max(r.start + r.latency for r in ok)
        trace = [json.loads(line) for line in self.trace.read_text().splitlines()]
        mine = [t for t in trace if lo <= t["received"] <= hi and t.get("status") == 200 and len(t["chunks"]) >= 3]
        ttft = [(t["chunks"][0] - t["arrived"]) * 1000 for t in mine]
        tpot = [(t["chunks"][-3] - t["chunks"][0]) / (t["completion_tokens"] - 1) * 1000
                for t in mine if t["completion_tokens"] > 1]
        return {"n": len(mine), "ttft": float(np.mean(ttft)), "tpot": float(np.mean(tpot))}


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


def pin(server_pid: int | None) -> str:
    """Server on the first CPU, this process (so every client child, ours and vllm's) on the rest.
    Unpinned, Linux wakes the client on the CPU of the server that woke it, where it waits for the
    server's post-stream work (usage chunk, trace, metrics): the final chunk was read ~0.5 ms late in
    about a quarter of the streams, which is most of the TPOT error. Same treatment for both tools."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or server_pid is None:
        return ""
    for tid in os.listdir(f"/proc/{server_pid}/task"):  # its threads too; later ones inherit the mask
        os.sched_setaffinity(int(tid), {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"server pinned to CPU {cpus[0]}, clients to {','.join(map(str, cpus[1:]))}"


def vllm_body(model: str, r: workload.Request) -> bytes:
    """The exact bytes vllm bench serve (openai-chat, custom_image, --ignore-eos, --temperature 0)
    posts: its payload keys in its order, ignore_eos after stream_options, temperature from
    extra_body last, aiohttp's json.dumps defaults. ignore_eos makes every answer the workload's
    128 output tokens (the reference server's natural answers are ~43)."""
    return client.body(model, r.text, r.image_url, r.max_tokens, {"ignore_eos": True, "temperature": 0.0})


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
    p.add_argument("--max-load", type=float, default=None,
                   help="before starting, wait until the 1-minute load average is below this")
    p.add_argument("--wait", type=float, default=600.0, help="longest wait for --max-load, seconds")
    p.add_argument("--parity-rate", type=float, default=10.0,
                   help="Poisson rate of the parity runs (req/s); a server saturated by it drifts between runs")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server to one CPU and the clients to the others")
    a = p.parse_args()
    if a.child:
        return child(a)
    from pytest_glmv.reference.launcher import ReferenceServer

    if a.tokenizer is None:
        from pytest_glmv.tiny import prepare

        a.tokenizer = str(prepare().path)
    small, big, par_n, par_rate = (10, 40, 40, a.parity_rate) if a.quick else (20, 80, 100, a.parity_rate)
    work = Path(tempfile.mkdtemp(prefix="glmv-bench-"))
    reqs = workload.synthetic(max(big, par_n, 600), seed=a.seed)
    with open(work / "vllm.jsonl", "w", encoding="utf-8") as f:
        for r in reqs:
            f.write(json.dumps({"prompt": r.text, "image_files": [r.image_url]}) + "\n")
    trace = work / "trace.jsonl"
    rows: list[tuple[str, str, str, str]] = []
    waited = wait_quiet(a.max_load, a.wait) if a.max_load is not None else ""
    load_start = loadavg()
    t_start = time.time()
    with ReferenceServer(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, trace=trace, log_dir=work) as srv:
        pinned = "" if a.no_pin else pin(srv.pid)
        with open(work / "bodies.jsonl", "wb") as fb:
            for r in reqs:  # byte for byte what vllm bench serve sends for the same row
                fb.write(vllm_body(srv.model or "", r) + b"\n")
        b = Bench(a, srv.root_url, srv.model or "", trace, work)
        # 1. accuracy + CPU at concurrency 1, two sizes each
        o_small, o_cpu_small = b.ours(small, math.inf, 1)
        o_big, o_cpu_big = b.ours(big, math.inf, 1)
        v_small, v_cpu_small = b.vllm(small, math.inf, 1)
        v_big, v_cpu_big = b.vllm(big, math.inf, 1)
        ob, omax, oerr, olate = b.accuracy(o_big["records"])
        vb, vmax, verr, vlate = b.accuracy(v_big["records"])
        rows += [("TTFT bias vs server trace, mean (max) ms", f"{ob:.3f} ({omax:.3f})", f"{vb:.3f} ({vmax:.3f})",
                  "<= 0.7 ms; truth from the request's first bytes read"),
                 ("  same, truth from the handler's start", f"{olate:.3f}", f"{vlate:.3f}",
                  "after the server parsed the request"),
                 ("TPOT error vs server trace, mean %", f"{oerr:.4f}", f"{verr:.4f}", "<= 0.05 %")]
        o_cpu = (o_cpu_big - o_cpu_small) / max(1, chunks(o_big) - chunks(o_small)) * 1000
        v_cpu = (v_cpu_big - v_cpu_small) / max(1, chunks(v_big) - chunks(v_small)) * 1000
        o_in = o_big["cpu_in_run"] / chunks(o_big) * 1000
        v_in = v_big["cpu_in_run"] / chunks(v_big) * 1000
        rows.append(("client CPU s / 1000 chunks, in-process timed run", f"{o_in:.4f}", f"{v_in:.4f}",
                     f"ours/vllm {o_in / v_in:.2f} (<= 0.8)"))
        rows.append(("  same, run-size diff (start-up noise)", f"{o_cpu:.4f}", f"{v_cpu:.4f}",
                     f"ours/vllm {o_cpu / v_cpu:.2f}"))
        # 2. parity on the same seeded Poisson schedule, ABBA so that load drift shows up
        o1, _ = b.ours(par_n, par_rate, None)
        v1, _ = b.vllm(par_n, par_rate, None)
        v2, _ = b.vllm(par_n, par_rate, None)
        o2, _ = b.ours(par_n, par_rate, None)
        tag = f"parity @{par_rate:g} req/s"
        for key in ("completed", "failed", "total_output_tokens", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                    "p99_itl_ms", "mean_e2el_ms", "request_throughput", "output_throughput",
                    "max_concurrent_requests"):
            fmt = "{:.0f}" if key in ("completed", "failed", "total_output_tokens") else "{:.2f}"
            ours = " / ".join(fmt.format(d["result"][key]) for d in (o1, o2))
            theirs = " / ".join(fmt.format(d["result"][key]) for d in (v1, v2))
            note = "run 1 / run 2 (order o1 v1 v2 o2)" if key == "completed" else ""
            if key == "mean_ttft_ms":
                mo = (o1["result"][key] + o2["result"][key]) / 2
                mv = (v1["result"][key] + v2["result"][key]) / 2
                ok = abs(mo - mv) <= max(1.0, 0.01 * mv)
                note = f"means {mo:.2f} vs {mv:.2f}: {'within' if ok else 'OUTSIDE'} max(1 ms, 1%)"
            if key == "mean_tpot_ms":
                mo = (o1["result"][key] + o2["result"][key]) / 2
                mv = (v1["result"][key] + v2["result"][key]) / 2
                ok = abs(mo - mv) <= 0.005 * mv
                note = f"means {mo:.3f} vs {mv:.3f}: {'within' if ok else 'OUTSIDE'} 0.5%"
            rows.append((f"{tag}: {key}", ours, theirs, note))
        views = {id(d): b.server_view(d["records"]) for d in (o1, o2, v1, v2)}
        for name, key, client_key in (("TTFT", "ttft", "mean_ttft_ms"), ("TPOT", "tpot", "mean_tpot_ms")):
            rows.append((f"{tag}: server-recorded mean {name} ms",
                         " / ".join(f"{views[id(d)][key]:.2f}" for d in (o1, o2)),
                         " / ".join(f"{views[id(d)][key]:.2f}" for d in (v1, v2)),
                         "the same requests, as the server timed them"))
            rows.append((f"{tag}: client minus server mean {name} ms",
                         " / ".join(f"{d['result'][client_key] - views[id(d)][key]:.3f}" for d in (o1, o2)),
                         " / ".join(f"{d['result'][client_key] - views[id(d)][key]:.3f}" for d in (v1, v2)),
                         "measurement, net of server speed"))
        counts = {views[id(d)]["n"] for d in (o1, o2, v1, v2)} | {d["result"]["completed"] for d in (o1, o2, v1, v2)}
        rows.append((f"{tag}: requests the server traced per run", " / ".join(str(views[id(d)]["n"]) for d in (o1, o2)),
                     " / ".join(str(views[id(d)]["n"]) for d in (v1, v2)),
                     "identical counts" if len(counts) == 1 else "COUNTS DIFFER"))
        gaps = []
        for d in (o2, v1, v2):
            xs, ys = sorted(r.start for r in o1["records"]), sorted(r.start for r in d["records"])
            gaps.append(max(abs((x - xs[0]) - (y - ys[0])) for x, y in zip(xs, ys, strict=True)) * 1000)
        rows.append(("parity: max difference of send offsets vs o1, ms", f"{gaps[0]:.2f}",
                     f"{gaps[1]:.2f} / {gaps[2]:.2f}", "same schedule"))
        # 3. send lag under Poisson load
        best = 0.0
        # the client's run-queue wait (time it was runnable but had no CPU) next to its CPU time shows
        # how much of the lag is the host's: a release cannot happen while the process waits for a CPU
        for rate in (5.0, 10.0, 25.0, 50.0, 100.0, 200.0):
            data, _ = b.ours(min(600, max(60, int(rate * 3))), rate, None)
            lag = data["result"]["p99_send_lag_ms"]
            rows.append((f"p99 send lag @{rate:g} req/s Poisson, ms", f"{lag:.3f}", "",
                         f"failed {data['result']['failed']}; client on CPU {data['on_cpu_ms']:.0f} ms, waited "
                         f"for one {data['runqueue_wait_ms']:.0f} ms; 1-min load {os.getloadavg()[0]:.2f}"))
            if lag <= 2.0:
                best = rate
        rows.append(("highest Poisson rate with p99 send lag <= 2 ms", f"{best:g} req/s", "",
                     "of 5/10/25/50/100/200"))
    w = max(len(r[0]) for r in rows)
    # Latency numbers mean little on an overloaded host: say how loaded it was, before and after.
    print(f"server: reference, ttft {a.ttft_ms:g} ms, tpot {a.tpot_ms:g} ms; seed {a.seed}; work dir {work}; "
          f"{pinned or 'not pinned'}")
    print(f"host load average (1/5/15 min) at start {load_start}, at end {loadavg()}, on {os.cpu_count()} CPUs; "
          f"run took {time.time() - t_start:.0f} s{'; ' + waited if waited else ''}")
    print(f"{'measure':<{w}}  {'pytest-glmv':>16}  {'vllm bench serve':>18}  note")
    for name, ours, theirs, note in rows:
        print(f"{name:<{w}}  {ours:>16}  {theirs:>18}  {note}")


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"(took {time.time() - t:.0f} s)", file=sys.stderr)
