"""TTFT bias and TPOT error of `pytest -m slo` itself, against the reference server's truth trace.

    python benchmarks/slo_pytest_bias.py [--scenario rate20,concurrency1] [--dataset synthetic|random]
        [-n 300] [--n-c1 40] [--repeat 3] [--ttft-ms 50 --tpot-ms 10] [--no-pin] [--awake-server]
        [-- EXTRA PYTEST ARGS]

What users run, not a stand-alone client: a reference server started here with --trace (when each
request's first bytes were read, when each chunk was written; CLOCK_MONOTONIC, the clock
time.perf_counter() reads on Linux) pinned to the first CPU, and `python -m pytest suites/test_slo.py
-m slo --glmv-base-url ...` pinned to the other(s), with a spec of the chosen scenarios (rate20:
Poisson at 20 req/s; concurrency1: one request at a time) and --glmv-slo-records, so every request's
start, TTFT, latency and token count come back in the result JSON. Per request, as in
benchmarks/slo_parity.py: TTFT bias = client TTFT - (first chunk written - request arrived), split
into client start -> request arrived ("sent") and first chunk written -> client read it ("read");
TPOT error = |client TPOT - server TPOT| / server TPOT. Each run prints mean, median, p99 and max;
with --repeat, the table at the end gives the median over runs of each (the host is noisy).
Requests are matched to trace rows by arrival order within [start, start + TTFT] and token counts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from slo_clients import loadavg, pin_tree  # noqa: E402

from pytest_glmv.slo import metrics  # noqa: E402

SCENARIOS = {
    "rate20": 'request_rate = 20\n',
    "concurrency1": 'request_rate = "inf"\nmax_concurrency = 1\n',
}


def spec_text(names: list[str], counts: dict[str, int]) -> str:
    out = []
    for name in names:
        out.append(f"[scenarios.{name}]\n{SCENARIOS[name]}num_prompts = {counts[name]}\n[scenarios.{name}.slo]\n"
                   "completed = 1\n")
    return "\n".join(out)


def match(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(record index, trace row) pairs: the earliest unclaimed row that arrived within the request's
    [start, start + TTFT] with its prompt and completion token counts."""
    rows = sorted((t for t in rows if t.get("status") == 200 and len(t["chunks"]) >= 3), key=lambda t: t["arrived"])
    arrived = np.array([t["arrived"] for t in rows])
    used: set[int] = set()
    pairs = []
    for i, (start, ttft, err, n_in, n_out) in enumerate(zip(
            result["start_times"], result["ttfts"], result["errors"], result["input_lens"], result["output_lens"],
            strict=True)):
        if err:
            continue
        lo = int(np.searchsorted(arrived, start))
        for j in range(lo, len(rows)):
            t = rows[j]
            if t["arrived"] > start + ttft:
                break
            if j in used or t["prompt_tokens"] != n_in or t["completion_tokens"] != n_out:
                continue
            used.add(j)
            pairs.append((i, t))
            break
    return pairs


def accuracy(result: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    bias, sent, read, err = [], [], [], []
    pairs = match(result, rows)
    for i, t in pairs:
        start, ttft, lat, n_out = (result["start_times"][i], result["ttfts"][i], result["latencies"][i],
                                   result["output_lens"][i])
        choices = t["chunks"][:-2]  # the last two writes are the usage chunk and [DONE]
        bias.append((ttft - (choices[0] - t["arrived"])) * 1000)
        sent.append((t["arrived"] - start) * 1000)
        read.append((start + ttft - choices[0]) * 1000)
        truth, mine = metrics.tpot(choices[0], choices[-1], n_out), metrics.tpot(ttft, lat, n_out)
        if truth is not None and mine is not None:
            err.append(abs(mine - truth) / truth * 100)

    def s(xs: list[float]) -> dict[str, float]:
        a = np.asarray(xs or [float("nan")])
        return {"mean": float(a.mean()), "median": float(np.median(a)), "p99": float(np.percentile(a, 99)),
                "max": float(a.max())}
    return {"matched": len(pairs), "completed": result["completed"], "bias": s(bias), "sent": s(sent),
            "read": s(read), "tpot_err": s(err), "p99_send_lag_ms": result["p99_send_lag_ms"],
            "client_cpu_s": result.get("client_cpu_s")}


def one_run(a: argparse.Namespace, work: Path, k: int) -> dict[str, dict[str, Any]]:
    from pytest_glmv.reference.launcher import ReferenceServer

    trace = work / f"trace-{k}.jsonl"
    spec = work / "spec.toml"
    spec.write_text(spec_text(a.scenarios, {"rate20": a.n, "concurrency1": a.n_c1}))
    out = work / f"result-{k}.json"
    cpus = sorted(os.sched_getaffinity(0))
    with ReferenceServer(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, trace=trace, log_dir=work) as srv:
        pinned = not a.no_pin and len(cpus) > 1 and srv.pid is not None
        if pinned:
            assert srv.pid is not None
            pin_tree(srv.pid, cpus[0])
        idler = None
        if pinned and a.awake_server:  # a SCHED_IDLE spinner keeps the server's CPU out of idle states
            code = ("import os; os.sched_setaffinity(0, {%d}); os.sched_setscheduler(0, os.SCHED_IDLE, "
                    "os.sched_param(0))\nwhile True: pass" % cpus[0])
            idler = subprocess.Popen([sys.executable, "-c", code])
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                str(ROOT / "suites/test_slo.py"), "-m", "slo", "--glmv-base-url", srv.base_url,
                "--glmv-slo", str(spec), "--glmv-slo-json", str(out), "--glmv-slo-records",
                "--glmv-dataset", a.dataset, *a.pytest_args]
        def child_cpus() -> None:
            if pinned:
                os.sched_setaffinity(0, set(cpus[1:]))
        try:
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, preexec_fn=child_cpus)
        finally:
            if idler is not None:
                idler.kill()
                idler.wait()
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise SystemExit(f"slo_pytest_bias: pytest exited {proc.returncode}:\n{tail}")
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    res = {}
    for name in a.scenarios:
        path = out if len(a.scenarios) == 1 else out.with_name(f"{out.stem}-{name}{out.suffix}")
        res[name] = accuracy(json.loads(path.read_text()), rows)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="rate20,concurrency1", help="comma list of: " + ", ".join(SCENARIOS))
    p.add_argument("--dataset", default="synthetic", help="--glmv-dataset for the run (synthetic: images)")
    p.add_argument("-n", type=int, default=300, help="prompts of the rate20 scenario")
    p.add_argument("--n-c1", type=int, default=40, help="prompts of the concurrency1 scenario")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--tpot-ms", type=float, default=10.0)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--awake-server", action="store_true",
                   help="run a SCHED_IDLE spinner on the server's CPU, so the truth's arrival stamp does not "
                        "include that CPU's wake-up from idle (a server-side cost the client cannot see or avoid)")
    p.add_argument("pytest_args", nargs="*", help="after --: more pytest options (e.g. --glmv-ignore-eos)")
    a = p.parse_args()
    a.scenarios = [s.strip() for s in a.scenario.split(",") if s.strip()]
    bad = [s for s in a.scenarios if s not in SCENARIOS]
    if bad or not a.scenarios:
        p.error(f"--scenario: unknown {bad}; valid: {', '.join(SCENARIOS)}")
    if min(a.n, a.n_c1, a.repeat) < 1:
        p.error("-n, --n-c1 and --repeat must be at least 1")
    work = Path(tempfile.mkdtemp(prefix="glmv-bias-"))
    print(f"work dir {work}; load {loadavg()}; server {a.ttft_ms:g}/{a.tpot_ms:g} ms ttft/tpot; "
          f"dataset {a.dataset}; {a.n} prompts at 20 req/s, {a.n_c1} at concurrency 1; "
          f"extra pytest args {a.pytest_args}", flush=True)
    runs = []
    for k in range(a.repeat):
        r = one_run(a, work, k)
        runs.append(r)
        for name, acc in r.items():
            b, s_, rd, e = acc["bias"], acc["sent"], acc["read"], acc["tpot_err"]
            print(f"run {k} {name}: matched {acc['matched']}/{acc['completed']}; TTFT bias ms mean {b['mean']:.3f} "
                  f"median {b['median']:.3f} p99 {b['p99']:.3f} max {b['max']:.3f} (sent {s_['mean']:.3f}, read "
                  f"{rd['mean']:.3f}); TPOT err % mean {e['mean']:.4f} max {e['max']:.4f}; p99 send lag "
                  f"{acc['p99_send_lag_ms']:.3f} ms; load {loadavg()}", flush=True)
    print(f"median over {a.repeat} run(s):")
    for name in a.scenarios:
        def med(part: str, stat: str, name: str = name) -> float:
            return float(np.median([r[name][part][stat] for r in runs]))
        print(f"  {name:<13} TTFT bias mean {med('bias', 'mean'):.3f} ms (median {med('bias', 'median'):.3f}, "
              f"p99 {med('bias', 'p99'):.3f}; sent {med('sent', 'mean'):.3f} + read {med('read', 'mean'):.3f}); "
              f"TPOT error mean {med('tpot_err', 'mean'):.4f} % (max {med('tpot_err', 'max'):.4f} %)")


if __name__ == "__main__":
    main()
