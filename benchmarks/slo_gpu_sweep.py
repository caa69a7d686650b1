"""The SLO load generator against real vLLM on a GPU, within a device-time budget (issue 26 items 1-3).

    python3 benchmarks/slo_gpu_sweep.py --out DIR --budget-s 520 --vllm-python python3 \
        [--gpu-memory-utilization 0.3] [--rates 50,100,200,400,800,1600] [--phases parity,sweep,scale]

Launches the tiny GLM-4.5V with every recommended flag (TP 1, CUDA graphs: no --enforce-eager), starts
`vllm bench serve` resident meanwhile (slo_vllm_bench.py: one import instead of 20-27 s per run), then, in
priority order, printing each result when it has it and rewriting DIR/results.json and DIR/results.txt:
1. parity at --parity-rate (20) req/s Poisson: pytest-glmv's client and vllm bench serve on byte-identical
   requests, ours / vllm / vllm / ours (slo_parity.parity_rows), the text workload then the image workload,
   each after one unmeasured warm pass; vLLM's /metrics read around every run (net of the server: |mean TTFT
   difference| <= 1 ms, TPOT within 0.5 %, identical counts, identical prompt/generation token totals);
2. the sweep: `pytest -m slo` (--glmv-slo-workers auto, random text, --input-len in, 128 out, ignore_eos,
   temperature 0) and vllm bench serve on the same prompts at each Poisson rate, AB then BA at the next
   rate (ABBA with --abba), --seconds of schedule each; per run: schedule kept, p99 send lag, completed,
   client TTFT/TPOT against vLLM's /metrics for the same run, client CPU per 1000 output tokens (the timed
   region only), workers. A tool breaks by slo_vs_peers.py's rule, less its bias part (< 97 % of its schedule,
   a failed request, or not valid: p99 send lag > 10 ms or past the run's time limit, with the reason) and
   runs no higher rate. The bias part cannot be judged on vLLM: it records no per-request truth, and its
   /metrics TTFT starts after the API server has parsed, templated and tokenized a request, so client minus
   /metrics TTFT also holds the API server's queue, which grows as the server saturates, whatever the
   client; it is printed (and its growth over the same tool's at the first rate, flagged past 2 ms);
3. worker scaling: pytest-glmv alone with --glmv-slo-workers 1,2,4,8 at --scale-rate (default: the highest
   rate both tools kept).
A vLLM that dies ends the run with its cause and keeps what finished; SIGTERM (a timeout) or Ctrl-C prints
what finished. Each phase starts only if the budget left covers its estimate; what did not fit says so.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import slo_parity
from slo_clients import ROOT, Bench, loadavg, scrape, server_means, write_workload
from slo_peer_tools import OURS, VLLM, Tools
from slo_vllm_bench import Resident
from slo_vs_peers import _interrupt, revision

from pytest_glmv.slo import runner, workers, workload

MAX_LAG_MS = 10.0  # --glmv-slo-max-send-lag-ms's default: past it a run measured the client, not the server


class Out:
    """Every line printed at once and kept in DIR/results.txt; the numbers in DIR/results.json."""

    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.txt, self.json = d / "results.txt", d / "results.json"
        self.data: dict[str, Any] = {"parity": {}, "sweep": [], "scale": [], "notes": []}
        self.txt.write_text("")

    def say(self, line: str) -> None:
        print(line, flush=True)
        with open(self.txt, "a") as f:
            f.write(line + "\n")

    def save(self) -> None:
        self.json.write_text(json.dumps(self.data, indent=1, default=str))


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def run_view(tools: Tools, tool: str, n: int, rate: float, url: str, base: dict[str, float]) -> dict[str, Any]:
    """One run of tool with vLLM's /metrics around it: what the sweep prints per run. base: each tool's
    client-minus-server TTFT at the first rate, the API server's own time before the engine sees a request
    (tokenizing, templating: in the client's TTFT, not in vLLM's), which the bias rule nets out."""
    before = scrape(url)
    r = tools.run(tool, n, rate, None)
    srv = server_means(before, scrape(url))
    data = json.loads(r.out.read_text()) if r.out and r.out.exists() else {}
    p = r.parsed
    ttft = [x * 1000 for x in p.ttft]
    tpots = [x * 1000 for x in p.tpot() if x is not None]
    tokens = sum(p.tokens)
    lag = sorted(p.send_lags or [])
    row = {"tool": tool, "rate": rate, "n": n, "completed": p.completed, "failed": p.failed,
           "kept": p.fraction, "p99_send_lag_ms": lag[int(0.99 * (len(lag) - 1))] * 1000 if lag else None,
           "ttft_ms": sum(ttft) / len(ttft) if ttft else math.nan,
           "tpot_ms": sum(tpots) / len(tpots) if tpots else math.nan, "server": srv,
           "cpu_per_1000_tokens": (r.cpu_in_run or math.nan) / tokens * 1000 if tokens else math.nan,
           "workers": data.get("client_workers"), "wall_s": r.wall, "load": loadavg()}
    row["ttft_minus_server_ms"] = row["ttft_ms"] - srv["ttft"]
    row["tpot_minus_server_ms"] = row["tpot_ms"] - srv["tpot"]
    base.setdefault(tool, row["ttft_minus_server_ms"])
    row["bias_growth_ms"] = row["ttft_minus_server_ms"] - base[tool]
    lag99 = row["p99_send_lag_ms"]
    if lag99 is not None and lag99 > MAX_LAG_MS:  # pytest-glmv's validity rule, for both tools
        row["not_valid"] = f"the client fell behind (p99 send lag {lag99:.2f} ms > {MAX_LAG_MS:g} ms)"
    why = [w for w, bad in (("schedule", row["kept"] is not None and row["kept"] < 0.97), ("failed", p.failed > 0),
                            ("not valid", "not_valid" in row)) if bad]
    row["broke"] = "+".join(why)
    row["bias_over_2ms"] = not abs(row["bias_growth_ms"]) <= 2.0
    return row


def fmt_row(r: dict[str, Any]) -> str:
    def f(x: Any, spec: str) -> str:
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
    s = r["server"]
    return (f"  {r['tool']:<17} @{r['rate']:g}/s n={r['n']} done {r['completed']} failed {r['failed']} kept "
            f"{f(r['kept'], '.3f')} p99 lag {f(r['p99_send_lag_ms'], '.2f')} ms | TTFT {f(r['ttft_ms'], '.2f')} "
            f"(vLLM {f(s['ttft'], '.2f')}, diff {f(r['ttft_minus_server_ms'], '+.2f')}, growth "
            f"{f(r['bias_growth_ms'], '+.2f')}{' > 2' if r['bias_over_2ms'] else ''}) TPOT {f(r['tpot_ms'], '.3f')} "
            f"(vLLM {f(s['tpot'], '.3f')}, diff {f(r['tpot_minus_server_ms'], '+.3f')}) ms | CPU/1000 tok "
            f"{f(r['cpu_per_1000_tokens'], '.4f')} s | workers {r['workers'] or '-'} | {r['wall_s']:.0f} s, load "
            f"{r['load']}" + (f" | BROKE: {r['broke']}" if r["broke"] else "")
            + (f" | NOT VALID: {r['not_valid']}" if r.get("not_valid") else ""))


def parity(a: argparse.Namespace, srv: Any, work: Path, out: Out, budget: Budget, resident: Resident) -> None:
    for kind in ("text", "image"):
        need = 4 * (a.parity_n / a.parity_rate + 8) + 20
        if budget.left() < need:
            out.say(f"parity {kind}: not run (budget left {budget.left():.0f} s < ~{need:.0f} s)")
            continue
        d = work / f"parity-{kind}"
        d.mkdir(exist_ok=True)
        align = runner.aligner(srv.root_url, srv.model, None)
        reqs = (workload.random_text(a.parity_n, a.seed, a.input_len, 128, align) if kind == "text"
                else workload.synthetic(a.parity_n, seed=a.seed))
        write_workload(d, reqs, srv.model)
        b = Bench(a, srv.root_url, srv.model, d, metrics_too=True)
        b.resident, b.timeout = resident, a.parity_n / a.parity_rate * 4 + 120
        b.ours(a.parity_n, math.inf, 32)  # unmeasured: prefix and image caches as warm for both tools
        rows = slo_parity.parity_rows(b, a.parity_n, a.parity_rate, 1, lambda x: x["server"])
        out.say(f"parity {kind} ({a.parity_n} prompts, Poisson {a.parity_rate:g} req/s, ours/vllm/vllm/ours; "
                f"load {loadavg()}):")
        for name, ours, theirs, note in rows:
            out.say(f"  {name}: ours {ours} | vllm {theirs} | {note}")
        out.data["parity"][kind] = [list(r) for r in rows]
        out.save()


def sweep(a: argparse.Namespace, tools: Tools, srv: Any, out: Out, budget: Budget) -> float | None:
    """The rates in order; returns the highest rate at which neither tool broke."""
    alive, best, base = [OURS, VLLM], None, {}
    for i, rate in enumerate(a.rates):
        n = max(50, int(rate * a.seconds))
        order = alive if i % 2 == 0 else alive[::-1]
        seq = order + order[::-1] if a.abba else order
        need = len(seq) * (a.seconds * 2 + 10)
        if not alive or budget.left() < need:
            why = "every tool broke" if not alive else f"budget left {budget.left():.0f} s < ~{need:.0f} s"
            out.say(f"sweep @{rate:g} req/s: not run ({why})")
            continue
        tools.timeout = max(10.0, min(a.seconds * 4 + 60, budget.left()))
        rows = []
        for tool in seq:
            try:
                rows.append(run_view(tools, tool, n, rate, srv.root_url, base))
            except TimeoutError as e:
                rows.append({"tool": tool, "rate": rate, "n": n, "not_valid": f"{e}: the server or client could not "
                             "keep this rate within the run's time limit"})
                out.say(f"  {tool} @{rate:g}/s: NOT VALID: {rows[-1]['not_valid']}")
            else:
                out.say(fmt_row(rows[-1]))
            out.data["sweep"].append(rows[-1])
            out.save()
            if not srv.alive():
                raise RuntimeError(f"vLLM died during the {rate:g} req/s run of {tool}: {srv.log_tail(5)}")
        for tool in list(alive):
            mine = [r for r in rows if r["tool"] == tool]
            if any("not_valid" in r or r["broke"] for r in mine):
                alive.remove(tool)
                out.say(f"  {tool} breaks at {rate:g} req/s")
        if alive == [OURS, VLLM]:
            best = rate
    return best


def scale(a: argparse.Namespace, tools: Tools, srv: Any, out: Out, budget: Budget, rate: float) -> None:
    out.say(f"worker scaling at {rate:g} req/s ('auto' would take {workers.auto(rate)} of {workers.cpus()} CPUs):")
    for w in a.scale_workers:
        n = max(50, int(rate * a.seconds))
        if budget.left() < a.seconds * 2 + 15:
            out.say(f"  workers {w}: not run (budget left {budget.left():.0f} s)")
            continue
        tools.workers = str(w)
        try:
            row = run_view(tools, OURS, n, rate, srv.root_url, {})
            out.say(fmt_row(row))
        except TimeoutError as e:
            row = {"tool": OURS, "rate": rate, "workers": w, "not_valid": str(e)}
            out.say(f"  workers {w}: NOT VALID: {e}")
        out.data["scale"].append(row)
        out.save()
    tools.workers = "auto"


def main() -> None:
    a = args()
    signal.signal(signal.SIGTERM, _interrupt)  # a timeout's SIGTERM: stop vLLM, print what finished
    budget, out = Budget(a.budget_s), Out(Path(a.out))
    work = Path(a.work or tempfile.mkdtemp(prefix="glmv-gpu-sweep-"))  # logs, workloads, every tool's output
    work.mkdir(parents=True, exist_ok=True)
    from pytest_glmv.lifecycle.server import VllmServer, free_port
    from pytest_glmv.tiny import prepare, vllm_executable

    exe, tiny = a.vllm or vllm_executable(), prepare()
    if exe is None and not a.attach:
        raise SystemExit("slo_gpu_sweep: no vllm executable (--vllm, GLMV_VLLM_EXECUTABLE or vllm on PATH)")
    a.tokenizer = a.tokenizer or str(tiny.path)
    resident = Resident(a.vllm_python, work / "vllm-bench.log")
    resident.start()  # imports while vLLM starts
    port = free_port()
    over: dict[str, Any] = {"tp": 1}
    if a.gpu_memory_utilization is not None:
        over["gpu_memory_utilization"] = a.gpu_memory_utilization
    argv = tiny.plan(exe or "vllm", port, **over).argv + list(a.serve_arg)
    out.say(f"slo_gpu_sweep at {revision()}; budget {a.budget_s:g} s; {slo_parity.hardware()}; "
            f"{os.cpu_count()} CPUs; load {loadavg()}; work dir {work}; "
            + (f"attached to {a.attach}" if a.attach else f"vllm {' '.join(argv[1:])}"))
    t0 = time.monotonic()
    try:
        with (Attached(a.attach) if a.attach else VllmServer(
                argv, model=tiny.served_name, port=port, env={**os.environ, **tiny.env},
                startup_timeout=max(60.0, budget.left() - 60), log_dir=work)) as srv:
            out.say(f"server {slo_parity.served_version(srv.root_url)} ready in {time.monotonic() - t0:.0f} s")
            if "parity" in a.phases:
                parity(a, srv, work, out, budget, resident)
            best = None
            if "sweep" in a.phases or "scale" in a.phases:
                n = max(50, int(max(a.rates) * a.seconds))
                texts = [r.text for r in workload.random_text(n, a.seed, a.input_len, 128,
                                                              runner.aligner(srv.root_url, srv.model, None))]
                exes = {OURS: sys.executable, VLLM: a.vllm_python}
                tools = Tools(a, exes, srv.root_url, srv.model, work, texts, None)
                tools.resident, tools.workers = resident, "auto"
                tools.pytest_args = ["--glmv-profile", tiny.profile]  # vLLM lists the tiny model by its path
                if "sweep" in a.phases:
                    out.say(f"sweep (load {loadavg()}):")
                    best = sweep(a, tools, srv, out, budget)
                    out.say(f"sweep: highest rate neither tool broke at: {best if best is not None else 'none'}; "
                            f"vllm bench serve's imports took {resident.import_s:.0f} s, once")
                if "scale" in a.phases:
                    scale(a, tools, srv, out, budget, a.scale_rate or best or 200.0)
    except KeyboardInterrupt:
        out.say(f"INTERRUPTED after {time.monotonic() - t0:.0f} s: the results above are what finished")
    except Exception as e:  # noqa: BLE001 - a dead vLLM or a failed tool ends the run with its cause, keeps the rest
        out.say(f"STOPPED: {type(e).__name__}: {str(e).splitlines()[0][:400]}")
    finally:
        resident.close()
        out.data["budget_left_s"] = budget.left()
        out.save()
        out.say(f"done; budget left {budget.left():.0f} s; load {loadavg()}; results in {out.json}")


class Attached:
    """--attach URL: a server already running (the reference server, to try this script without a GPU)."""

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")
        with urllib.request.urlopen(self.root_url + "/v1/models", timeout=10) as resp:
            self.model = json.loads(resp.read())["data"][0]["id"]

    def __enter__(self) -> "Attached":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def alive(self) -> bool:
        return True

    def log_tail(self, n: int) -> str:
        return ""


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results.json and results.txt go here, nothing else")
    p.add_argument("--work", default=None, help="logs and raw outputs (default: a new temp dir)")
    p.add_argument("--budget-s", type=float, default=520.0)
    p.add_argument("--vllm", default=None, help="vllm executable (default: GLMV_VLLM_EXECUTABLE, .venv-vllm, PATH)")
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm/bin/python"), help="python for vllm bench serve")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--attach", default=None, metavar="ROOT_URL", help="use this running server, launch none")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG")
    p.add_argument("--phases", default="parity,sweep,scale")
    p.add_argument("--parity-rate", type=float, default=20.0), p.add_argument("--parity-n", type=int, default=100)
    p.add_argument("--rates", default="50,100,200,400,800,1600"), p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--abba", action="store_true", help="both orders at every rate (default: AB, then BA next rate)")
    p.add_argument("--scale-workers", default="1,2,4,8"), p.add_argument("--scale-rate", type=float, default=None)
    p.add_argument("--input-len", type=int, default=256), p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0), p.add_argument("--tokenizer", default=None)
    a = p.parse_args()
    try:
        a.rates = [float(x) for x in a.rates.split(",")]
        a.scale_workers = [int(x) for x in a.scale_workers.split(",")]
    except ValueError:
        p.error("--rates and --scale-workers want comma lists of numbers")
    a.phases = set(a.phases.split(","))
    if a.phases - {"parity", "sweep", "scale"} or a.output_len != 128:
        p.error("--phases: parity, sweep, scale; --output-len is 128 (the issue's workload)")
    return a


if __name__ == "__main__":
    main()
