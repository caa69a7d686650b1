"""One command, one table, four tools: pytest-glmv's SLO harness (through pytest, as users run it),
`vllm bench serve`, GuideLLM and AIPerf against the same server and the same prompts.

    python benchmarks/slo_vs_peers.py [--rates 20,50,100,200] [--sizes 10,40] [--quick] [--max-load 1.5]
    python benchmarks/slo_vs_peers.py --server tiny [GPU options]     # the two-tool vLLM parity rows

--server reference (default): the reference server (--ttft-ms 50 --tpot-ms 10) with its truth trace (when
each request's first bytes arrived, when each chunk was written), pinned to the first CPU, the tools to
the others. Workload, the same for all four: --input-len-token prompts cut by the server's /tokenize
(pytest-glmv's "random" dataset, seeded; the peers read the same texts from files, in the same order),
--output-len tokens per answer (ignore_eos), temperature 0, chat completions, streamed with usage.
Prints, per tool:
- at concurrency 1 (two run sizes): TTFT bias and TPOT error by vLLM's definitions (TTFT to the first chunk
  with choices, which is vLLM's role chunk; TPOT = (latency - TTFT) / (tokens - 1)) and by the tool's own
  (GuideLLM and AIPerf end TTFT at the first chunk with text, reasoning or content; their "ITL" is vLLM's
  TPOT formula from that chunk), against the server's truth; client CPU per 1000 chunks net of start-up
  (the difference of the two sizes) and the start-up CPU (whole process tree, imports included);
- at Poisson rates stepping up: the fraction of its schedule each tool kept ("r": of the configured rate,
  from the server's arrivals, where the tool keeps no usable schedule), its p99 send lag where it keeps a
  schedule, and its TTFT bias, until it breaks: < 97% of the schedule, |mean TTFT bias| > 2 ms (own
  definition) or a failed request; a broken tool runs no higher rate unless --keep-going.
Runs go in ABBA blocks (the tools in one order, then reversed), so a drift of the shared host weighs on all
alike; the load average is printed with every block. --bare-parity adds the bare-client rows (slo_parity.py).

Peers live in their own environments (defaults in the repository root, git-ignored); a missing one is one
line saying how to make it, and the other tools run:
    python -m venv .venv-guidellm && .venv-guidellm/bin/pip install guidellm==0.8.1
    python -m venv .venv-aiperf && .venv-aiperf/bin/pip install aiperf==0.13.0
    scripts/install_vllm_cpu.sh                                  # .venv-vllm (vllm bench serve)
--server tiny: real vLLM serving the tiny random-weight GLM-4.5V (scripts/install_vllm_cpu.sh, or a GPU with
--vllm-python / --gpu-memory-utilization / --serve-arg), pytest-glmv's bare client against vllm bench serve
with vLLM's /metrics as the server's view (vLLM records no per-request truth), as the removed slo_vs_vllm.py printed it.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import slo_parity
import slo_peer_truth as truth
import slo_servers
from slo_clients import ROOT, loadavg, wait_quiet
from slo_peer_tools import AIPERF, GUIDELLM, TOOLS, VLLM, Run, Tools, find_tools

from pytest_glmv.lifecycle.server import ServerError
from pytest_glmv.slo import runner, workload

BODIES = ("request bodies: pytest-glmv and vllm bench serve byte-identical (content a list of one text part, "
          "max_completion_tokens, stream_options.include_usage, ignore_eos, temperature 0); GuideLLM the same "
          "fields plus stream_options.continuous_usage_stats (vLLM then adds usage to every chunk; the reference "
          "server ignores it), messages last; AIPerf sends the content as a plain string")
DEFS = ("definitions: vLLM TTFT = first chunk with choices (the role chunk); vLLM TPOT = GuideLLM ITL = AIPerf "
        "ITL = (latency - TTFT) / (tokens - 1) with each tool's own TTFT end; GuideLLM/AIPerf TTFT end at the "
        "first chunk with text (reasoning or content), ~1 TPOT after the role chunk")


def fmt(x: float | None, spec: str = "+.3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class Table:
    def __init__(self, tools: tuple[str, ...]) -> None:
        self.tools = tools
        self.rows: list[tuple[str, dict[str, str], str]] = []

        self.prefix = ""  # "[server] " when one run judges the tools against several servers

    def add(self, name: str, cells: dict[str, str], note: str = "") -> None:
        self.rows.append((self.prefix + name, cells, note))

    def print(self, skipped: dict[str, str]) -> None:
        w = max(len(r[0]) for r in self.rows)
        print(f"{'measure':<{w}}  " + "  ".join(f"{t:>17}" for t in self.tools) + "  note")
        for name, cells, note in self.rows:
            line = "  ".join(f"{cells.get(t, 'skipped' if t in skipped else ''):>17}" for t in self.tools)
            print(f"{name:<{w}}  {line}  {note}")


def block(tools: Tools, order: list[str], sizes: list[int], rate: float, conc: int | None) -> dict[str, list[Run]]:
    """ABBA: the tools in `order` (first size), then reversed (second size, or the same again)."""
    runs: dict[str, list[Run]] = {t: [] for t in order}
    for half, seq in enumerate((order, order[::-1])):
        for t in seq:
            runs[t].append(tools.run(t, sizes[half], rate, conc))
    return runs


def concurrency_one(tools: Tools, table: Table, order: list[str], a: argparse.Namespace) -> None:
    load = loadavg()
    runs = block(tools, order, list(a.sizes), math.inf, 1)
    acc = {t: truth.pooled(r) for t, r in runs.items()}
    table.add("c=1: requests paired with the trace (unpaired)",
              {t: f"{x['paired']} ({x['unpaired']})" for t, x in acc.items() if x},
              f"sizes {a.sizes[0]} then {a.sizes[1]} (order {' > '.join(order)}, then reversed); load {load}")
    for key, label, note in (
            ("bias_vllm", "c=1: TTFT bias vs vLLM def, mean / p99 ms", "truth: role chunk written - request arrived"),
            ("bias_own", "c=1: TTFT bias vs own def, mean / p99 ms",
             "truth by each tool's TTFT: role chunk (ours, vllm), first text chunk (GuideLLM, AIPerf)")):
        table.add(label, {t: f"{x[key]:+.3f} / {x[key + '_p99']:+.2f}" for t, x in acc.items() if x}, note)
    table.add("c=1: of the vLLM-def bias: sent / read, mean ms",
              {t: f"{x['sent']:+.3f} / {x['bias_vllm'] - x['sent']:+.3f}" for t, x in acc.items()
               if x and not math.isnan(x["sent"])},
              "sent: client start -> server's arrival stamp; read: the rest (role chunk written -> client's stamp)")
    gap = [x["role_to_text_ms"] for x in acc.values() if x]
    table.add("c=1: TPOT (ITL) error vs vLLM TPOT, mean %",
              {t: fmt(x["tpot_vllm"], ".3f") for t, x in acc.items() if x},
              f"server's role chunk -> first text chunk: {sum(gap) / len(gap):.2f} ms" if gap else "")
    table.add("c=1: TPOT (ITL) error vs own def, mean %",
              {t: fmt(x["tpot_own"], ".3f") for t, x in acc.items() if x},
              "|client - truth| / truth per request")
    if a.no_cpu:
        return
    in_run = {t: [r.cpu_in_run for r in rs] for t, rs in runs.items()}
    table.add("client CPU s / 1000 chunks, timed region", {
        t: f"{sum(c) / sum(truth.chunks(r.rows) for r in runs[t]) * 1000:.4f}" for t, c in in_run.items()
        if c and all(x is not None for x in c)},
        "both runs; from the first request's release to the last answer, in-process (pytest-glmv's client_cpu_s, "
        "vllm bench serve's benchmark() to calculate_metrics()): no start-up at all")
    cpu = {t: truth.cpu(r[0], r[1]) for t, r in runs.items()}
    table.add("client CPU s / 1000 chunks, net of start-up", {t: fmt(c and c[0], ".4f") for t, c in cpu.items()},
              "(CPU big - CPU small) / (chunks big - chunks small), whole tree: each tool's per-request work outside "
              "the timed region too (pytest-glmv: /tokenize per prompt, records, plot), and the noise of start-up")
    table.add("start-up CPU s (intercept)", {t: fmt(c and c[1], ".2f") for t, c in cpu.items()},
              "imports, set-up, workload files; pytest-glmv: pytest, the plugin, canary, /tokenize per prompt")
    table.add("wall s of the big run", {t: f"{r[1].wall:.1f}" for t, r in runs.items()}, f"load {loadavg()}")


def sweep(tools: Tools, table: Table, order: list[str], a: argparse.Namespace) -> None:
    """Poisson steps; a tool breaks at < 97% of its schedule (or sending > 1.2x the rate where it keeps no
    schedule), |mean TTFT bias| > 2 ms (own definition) or a failed request; broken, it runs no higher rate
    (--keep-going: it does, and the first break is still the one reported)."""
    alive, best, broke = list(order), {t: 0.0 for t in order}, {t: "" for t in order}
    for i, rate in enumerate(a.rates):
        if not alive:
            break
        n = a.rate_n or min(600, max(100, int(rate * 3)))
        load = loadavg()
        seq = alive if i % 2 == 0 else alive[::-1]
        runs = block(tools, seq, [n, n], rate, None)
        cells_s, cells_b, notes = {}, {}, []
        for t, rs in runs.items():
            kept = [truth.achieved(r) for r in rs]
            frac = sum(k[0] for k in kept) / len(kept)
            by_rate = any(k[1] == "rate" for k in kept)
            lags = [x for x in (truth.lag_p99_ms(r) for r in rs) if x is not None]
            acc = truth.pooled(rs)
            bias = acc["bias_own"] if acc else float("nan")
            failed = sum(r.parsed.failed for r in rs)
            notes += [f"{t} run {k + 1}: {r.parsed.note}" for k, r in enumerate(rs) if r.parsed.note and t != AIPERF]
            cells_s[t] = f"{frac:.3f}{'r' if by_rate else ''} / {fmt(max(lags) if lags else None, '.2f')}"
            cells_b[t] = (f"{bias:+.3f} / {fmt(acc['tpot_own'], '.2f')}" if acc else "n/a") + \
                (f" F{failed}" if failed else "")
            why = [w for w, bad in (("schedule", frac < 0.97 or (by_rate and frac > 1.2)),
                                    ("bias", not abs(bias) <= 2.0), ("failed", failed > 0)) if bad]
            if why and not broke[t]:
                broke[t] = f"{rate:g} req/s ({'+'.join(why)}: kept {frac:.3f}, bias {bias:+.2f} ms, {failed} failed)"
            if why and not a.keep_going:
                alive.remove(t)
            elif not why and not broke[t]:
                best[t] = rate
        table.add(f"@{rate:g} req/s Poisson: schedule kept / p99 send lag ms", cells_s,
                  f"{n} prompts x2 per tool (ABBA); load {load} -> {loadavg()}")
        table.add(f"@{rate:g} req/s Poisson: TTFT bias own def ms / TPOT err %", cells_b,
                  "; ".join(["mean over both runs; F = failed requests", *notes]))
    table.add("highest rate before the first break", {t: f"{best[t]:g} req/s" for t in order},
              "of " + "/".join(f"{r:g}" for r in a.rates) + "; break: < 97% of schedule, |bias| > 2 ms, failures")
    table.add("first break", {t: broke[t].split(" (")[0] or "none" for t in order},
              "; ".join(f"{t}: {b}" for t, b in broke.items() if b))


def traced_server(kind: str, a: argparse.Namespace, work: Path, trace: Path) -> Any:
    """A server that traces every request's arrival and chunk writes: the reference server (arrival = the
    request's first bytes read), or one of slo_servers.py's (arrival = its app or handler called)."""
    if kind == "reference":
        from pytest_glmv.reference.launcher import ReferenceServer

        return ReferenceServer(ttft_ms=a.ttft_ms, tpot_ms=a.tpot_ms, trace=trace, log_dir=work)
    return slo_servers.launch(kind, a.stack_python if kind == "starlette" else sys.executable, a.ttft_ms, a.tpot_ms,
                              trace, work)


ARRIVAL = {"reference": "arrival = request's first bytes read",
           "starlette": "uvicorn + Starlette StreamingResponse (vLLM's HTTP stack), arrival = ASGI app called",
           "aiohttp": "independent aiohttp server, arrival = handler started"}


def on_reference(a: argparse.Namespace, work: Path, exes: dict[str, str], table: Table, kind: str = "reference") -> str:
    work = work / kind  # each server's runs, workload files and trace apart
    work.mkdir(exist_ok=True)
    trace = work / "trace.jsonl"
    with traced_server(kind, a, work, trace) as srv:
        pinned = slo_parity.pin(srv.pid, a.no_pin)
        model = srv.model or ""
        n = max(max(a.sizes), a.rate_n or max([min(600, max(100, int(r * 3))) for r in a.rates] or [1]))
        texts = [r.text for r in workload.random_text(n, a.seed, a.input_len, a.output_len,
                                                        runner.aligner(srv.root_url, model, None))]
        tools = Tools(a, exes, srv.root_url, model, work, texts, trace)
        order = [t for t in TOOLS if t in exes]
        concurrency_one(tools, table, order, a)
        sweep(tools, table, order, a)
    return (f"server {kind} ({ARRIVAL[kind]}), ttft {a.ttft_ms:g} ms, tpot {a.tpot_ms:g} ms; {pinned}")


def revision() -> str:
    """The commit the measured pytest-glmv is at, and whether pytest_glmv/ has changes not committed."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pytest_glmv", "suites"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    if not head:  # a git archive (the GPU machine's copy): the commit it was made from, if the caller says
        return os.environ.get("GLMV_REVISION", "? (no git; set GLMV_REVISION)")
    return f"{head or '?'}{' + uncommitted changes in pytest_glmv/ or suites/' if dirty else ''}"


def print_parity(rows: list[slo_parity.Row]) -> None:
    w = max(len(r[0]) for r in rows)
    print(f"{'measure (bare clients)':<{w}}  {'pytest-glmv':>16}  {'vllm bench serve':>18}  note")
    for name, ours, theirs, note in rows:
        print(f"{name:<{w}}  {ours:>16}  {theirs:>18}  {note}")


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="reference", help="tiny, or a comma list of traced servers: reference, "
                   "starlette (uvicorn + Starlette, vLLM's HTTP stack; --stack-python), aiohttp (slo_servers.py)")
    p.add_argument("--stack-python", default=None, help="python with uvicorn + starlette for --server starlette "
                   "(default: .venv-vllm's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vllm", default=str(ROOT / ".venv-vllm/bin/vllm"))
    p.add_argument("--vllm-python", default=None, help="python that runs vllm bench serve (default: the one beside "
                   "--vllm, else this one if it imports vllm, as on the GPU bundle)")
    p.add_argument("--guidellm-venv", default=str(ROOT / ".venv-guidellm"))
    p.add_argument("--aiperf-venv", default=str(ROOT / ".venv-aiperf"))
    p.add_argument("--skip", action="append", default=[], choices=(VLLM, GUIDELLM, AIPERF), help="leave a peer out")
    p.add_argument("--rates", default="20,50,100,200", help="Poisson rates, req/s, stepped up until a tool breaks")
    p.add_argument("--keep-going", action="store_true", help="run every rate for every tool, broken or not")
    p.add_argument("--rate-n", type=int, default=None, help="prompts per rate run (default 3 s of the rate, 100-600)")
    p.add_argument("--input-len", type=int, default=256), p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--bare-parity", action="store_true", help="also the bare-client rows of slo_parity.py (reference)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="--server tiny on a GPU")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra `vllm serve` argument for --server tiny (repeat; e.g. --serve-arg=--enforce-eager)")
    p.add_argument("--warm-concurrency", type=int, default=4, help="the unmeasured warm pass (--server tiny)")
    p.add_argument("--sizes", default=None, metavar="SMALL,BIG", help="prompts of the two concurrency-1 runs")
    p.add_argument("--no-cpu", action="store_true", help="no CPU rows (--server tiny: no concurrency-1 CPU runs)")
    p.add_argument("--conc1-n", type=int, default=0, help="--server tiny: a concurrency-1 parity block of N prompts")
    p.add_argument("--tokenizer", default=None, help="for the peers; default: the tiny model's (works offline)")
    p.add_argument("--ttft-ms", type=float, default=50.0), p.add_argument("--tpot-ms", type=float, default=10.0)
    p.add_argument("--quick", action="store_true", help="fewer prompts")
    p.add_argument("--max-load", type=float, default=None, help="first wait until the 1-minute load is below this")
    p.add_argument("--wait", type=float, default=600.0, help="longest wait for --max-load, seconds")
    p.add_argument("--parity-rate", type=float, default=None, help="bare parity runs' Poisson rate, req/s")
    p.add_argument("--parity-n", type=int, default=None, help="prompts per bare parity run")
    p.add_argument("--blocks", type=int, default=1, help="bare parity blocks of ours, vllm, vllm, ours")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server to one CPU, the clients to the rest")
    a = p.parse_args()
    a.vllm_venv = str(Path(a.vllm).parent.parent)
    a.servers = [x.strip() for x in a.server.split(",") if x.strip()]
    if a.servers != ["tiny"] and (not a.servers or set(a.servers) - set(ARRIVAL)):
        p.error(f"--server: 'tiny' alone, or a comma list of {', '.join(ARRIVAL)}; got {a.server!r}")
    a.stack_python = a.stack_python or str(ROOT / ".venv-vllm/bin/python")
    if a.vllm_python is None:
        beside = Path(a.vllm).parent / "python"
        a.vllm_python = str(beside) if beside.exists() else (
            sys.executable if importlib.util.find_spec("vllm") is not None else None)
    try:
        a.rates = [float(x) for x in a.rates.split(",") if x.strip()]
        small, big = (int(x) for x in a.sizes.split(",")) if a.sizes else (0, 0)
    except ValueError:
        p.error(f"--rates wants numbers, --sizes SMALL,BIG: got {a.rates!r}, {a.sizes!r}")
    tiny = a.servers == ["tiny"]
    if not a.sizes:
        small, big = (8, 24) if tiny else ((5, 15) if a.quick else (10, 40))
    if not 0 < small < big or any(r <= 0 for r in a.rates):
        p.error("--sizes wants 0 < SMALL < BIG and --rates positive numbers")
    a.sizes = (small, big)
    a.parity_rate = a.parity_rate or (1.0 if tiny else 10.0)
    a.parity_n = a.parity_n or ((20 if a.quick else 40) if tiny else (40 if a.quick else 100))
    if a.tokenizer is None:
        from pytest_glmv.tiny import prepare

        a.tokenizer = str(prepare().path)
    return a


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    a = args()
    signal.signal(signal.SIGTERM, _interrupt)  # a timeout's SIGTERM: stop the server, print what finished
    exes, skipped = find_tools(a)
    if a.servers == ["tiny"] and VLLM not in exes:
        raise SystemExit("slo_vs_peers: --server tiny needs vllm: " + skipped[VLLM].split("; ", 1)[1])
    for line in skipped.values() if a.servers != ["tiny"] else ():  # tiny: only vllm bench serve runs
        print(line, flush=True)
    work = Path(tempfile.mkdtemp(prefix="glmv-peers-"))
    waited = wait_quiet(a.max_load, a.wait) if a.max_load is not None else ""
    load_start, t_start = loadavg(), time.time()
    table, prows = Table(TOOLS), list[slo_parity.Row]()
    head = ""
    try:
        if a.servers == ["tiny"]:
            head = slo_parity.on_tiny(a, work, prows)
        else:
            heads, cpus = [], os.sched_getaffinity(0)
            for kind in a.servers:
                os.sched_setaffinity(0, cpus)  # each server pins itself and the clients afresh
                table.prefix = f"[{kind}] " if len(a.servers) > 1 else ""
                heads.append(on_reference(a, work, exes, table, kind))
            head = (f"pytest-glmv at {revision()}; " + "; ".join(heads) + f"; workload: {a.input_len} prompt tokens "
                    f"(server's tokenizer), {a.output_len} output tokens (ignore_eos), temperature 0")
            if a.bare_parity and VLLM in exes:
                slo_parity.on_reference(a, work, prows)
    except (ServerError, subprocess.CalledProcessError, RuntimeError) as e:
        raise SystemExit(f"slo_vs_peers: {str(e).splitlines()[0]} (logs and results in {work})") from None
    except KeyboardInterrupt:
        head = f"INTERRUPTED after {time.time() - t_start:.0f} s: the rows below are the blocks that finished"
        if not table.rows and not prows:
            raise SystemExit(f"slo_vs_peers: {head.split(':')[0]}, no block finished (work dir {work})") from None
    print(f"{head}; seed {a.seed}; work dir {work}")
    print(f"host load average (1/5/15 min) at start {load_start}, at end {loadavg()}, on {os.cpu_count()} CPUs; "
          f"run took {time.time() - t_start:.0f} s{'; ' + waited if waited else ''}")
    if table.rows:
        print(DEFS)
        print(BODIES + "; AIPerf runs with --no-server-metrics (it scrapes /metrics by default)")
        table.print(skipped)
    if prows:
        print_parity(prows)


if __name__ == "__main__":
    main()
